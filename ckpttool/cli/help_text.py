"""What each command's --help says beyond the Typer app itself: one-line summaries (the top-level
list is never cut) and examples. Plain data, imported at start-up by the app; the generator of the
completions, man page and docs pages (cli/docs.py) reads it too, with the rest of the reference
that --help does not show (cli/reference.py: exit codes, JSON fields)."""
from __future__ import annotations

# One line per command for `ckpttool --help` (Click would cut the docstring's first
# sentence with "..." to fit) and the man page's command list.
SUMMARIES = {
    "ls": "List the checkpoints of a run directory and their problems.",
    "latest": "Print the newest checkpoint, as tf.train.latest_checkpoint.",
    "inspect": "Show a checkpoint's variables, statistics or values.",
    "verify": "Read every tensor and check its CRC; report all damage.",
    "manifest": "Record every file's and tensor's SHA-256 and CRC-32C in a JSON manifest.",
    "prune": "Delete old checkpoints by retention rules.",
    "policy": "Show which rule of a retention policy governs each run directory.",
    "repair": "Rewrite a directory's state file so TensorFlow can use it.",
    "rename-vars": "Write a checkpoint with variables renamed.",
    "convert": "Convert weights: TF checkpoint, safetensors, .npz, Keras 3, PyTorch (in).",
    "average": "Average the weights of several checkpoints.",
    "diff": "Compare the variables of two checkpoints.",
    "freeze": "Freeze a checkpoint or SavedModel into a GraphDef.",
    "export-json": "Print a graph as JSON or pbtxt.",
    "watch": "Act once on each new complete checkpoint, in step order.",
    "completion": "Print or install a shell completion script.",
}

# Examples for each command's --help, the man page and the docs pages. In a copy of the shipped
# examples/ each one runs as written, in order, and ends with exit 0 unless its comment says
# "(exit N)" (tests/test_docs.py).
EXAMPLES = {
    "ls": [("ckpttool ls examples/run", "every checkpoint, from the state file and the disk"),
           ("ckpttool ls -r examples/", "every run directory below examples/, with sizes")],
    "latest": [("ckpttool latest examples/run", "as tf.train.latest_checkpoint"),
               ("ckpttool latest --complete --step examples/run", "the step of the newest complete one")],
    "inspect": [("ckpttool inspect examples/run", "the latest checkpoint's variables"),
                ("ckpttool inspect examples/run/model.ckpt-400 --stats", "min, max, mean, std, NaN counts"),
                ("ckpttool inspect examples/run --name head/bias --values", "one variable's values"),
                ("ckpttool inspect examples/run --hash", "each tensor's content SHA-256")],
    "verify": [("ckpttool verify examples/run/model.ckpt-500", "every CRC of one checkpoint"),
               ("ckpttool verify --all examples/run", "every checkpoint of the directory"),
               ("ckpttool manifest examples/run -o run.manifest.json", "a manifest of the latest checkpoint ..."),
               ("ckpttool verify --manifest run.manifest.json examples/run", "... that it still matches"),
               ("ckpttool verify --quick --manifest run.manifest.json examples/run", "... by CRC-32C, at verify's speed")],
    "manifest": [("ckpttool manifest examples/run -o run.manifest.json", "files and tensors, SHA-256 and CRC-32C"),
                 ("ckpttool convert examples/run run.safetensors", "a copy in another format ..."),
                 ("ckpttool verify --manifest run.manifest.json run.safetensors", "... holds the same tensors")],
    "prune": [("ckpttool prune --dry-run --keep-last 2 examples/run", "what would be deleted, and why"),
              ("ckpttool prune -r --keep-last 3 --min-age 2h --yes examples/", "from cron"),
              ("ckpttool prune --policy examples/retention.toml --dry-run", "every run by its policy rule")],
    "policy": [("ckpttool policy check examples/retention.toml", "which rule governs each run directory")],
    "repair": [("ckpttool repair --dry-run examples/run", "the state file it would write")],
    "rename-vars": [("ckpttool rename-vars --dry-run --regex '^encoder/=enc/' examples/run out/model.ckpt-500",
                     "the new names"),
                    ("ckpttool rename-vars --drop-optimizer examples/run slim/model.ckpt-500",
                     "the weights without the Adam slots")],
    "convert": [("ckpttool convert --drop-optimizer examples/run model.safetensors", "for PyTorch/JAX tools"),
                ("ckpttool convert model.safetensors init/model.ckpt-0", "back to a V2 bundle")],
    "average": [("ckpttool average examples/run --last 3 -o avg.safetensors", "the mean of the newest three"),
                ("ckpttool average examples/run/model.ckpt-400 examples/run/model.ckpt-500 -o avg/model.ckpt-0",
                 "two checkpoints into a TF bundle")],
    "diff": [("ckpttool diff examples/run/model.ckpt-400 examples/run/model.ckpt-500",
              "what changed (exit 1: they differ)"),
             ("ckpttool diff --by-hash examples/run/model.ckpt-400 examples/run",
              "which tensors changed, by their SHA-256 (exit 1)"),
             ("ckpttool diff --atol 0.03 -f '^(encoder|head)/(kernel|bias)$' examples/run/model.ckpt-400 "
              "examples/run", "the weights, equal within a tolerance")],
    "freeze": [("ckpttool freeze examples/run -o frozen.pb --output-nodes prediction", "a GraphDef with constants"),
               ("ckpttool freeze examples/run -o checked.pb --output-nodes prediction --check",
                "and compare both graphs on random inputs")],
    "export-json": [("ckpttool export-json examples/run --part saver", "the SaverDef as JSON"),
                    ("ckpttool export-json examples/run --format pbtxt -o graph.pbtxt", "written atomically")],
    "watch": [("ckpttool watch --once examples/run", "one JSON line per checkpoint, then exit"),
              ("ckpttool watch --once --state eval.json --exec 'echo step {step}: {path}' examples/run",
               "a command per checkpoint")],
    "completion": [("ckpttool completion bash --install", "where bash-completion looks"),
                   ("source <(ckpttool completion bash)", "this shell only")],
}

def epilog(name: str) -> str:
    """The Examples section of a command's --help (`\\b`: Click keeps the lines as they are)."""
    lines = [f"  {command}  # {comment}" for command, comment in EXAMPLES[name]]
    return "Examples:\n\n\b\n" + "\n".join(lines)
