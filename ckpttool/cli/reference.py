"""The command reference beyond --help (cli/help_text.py): each command's exit codes and what it
prints with --json (its documents and their fields). One description that the man page and the
generated docs pages (cli/docs.py) are written from, and that tests/test_docs_site.py holds against
what every command really prints and returns, so none of them drifts.

Not imported when a command runs (only the generator and the tests read it).
"""
from __future__ import annotations

from dataclasses import dataclass

# The exit codes every command may end with, for the man page's EXIT STATUS and the docs.
EXIT_STATUS = [
    ("0", "success"),
    ("1", "a negative answer: latest found no checkpoint, verify found damage, diff found differences"),
    ("2", "usage error (bad option or argument)"),
    ("3", "bad input: missing, unreadable, corrupt or unsupported file, unknown variable"),
    ("4", "refused for safety: no --yes when not interactive, destination exists, name collision, "
          "path outside the directory"),
    ("70", "internal error (a bug); rerun with --debug"),
    ("130", "interrupted (Ctrl-C); 143 for SIGTERM and 129 for SIGHUP, handled alike: temps removed, locks "
            "released, nothing half-written left behind"),
]
ENVIRONMENT = [
    ("CKPTTOOL_DEBUG", "set to 1 to show tracebacks, like --debug"),
    ("NO_COLOR", "disable colour, like --no-color"),
]

# What each exit code means for one command (2 usage error, 70 and 130 are the same for all).
EXIT_CODES = {
    "ls": [("0", "listed; problems in DIR are listed, not failures"),
           ("3", "DIR missing or unreadable; with --metric (one DIR), the metric cannot be read")],
    "latest": [("0", "printed"),
               ("1", "no checkpoint (no complete one with --complete, none scored with --best, no step number "
                     "with --step)"),
               ("3", "DIR missing or unreadable; with --best, the metric cannot be read")],
    "inspect": [("0", "listed"),
                ("3", "TARGET resolves to nothing; a corrupt or unsupported file; --name not in it"),
                ("4", "--names model would give two variables one name")],
    "verify": [("0", "no damage (with --manifest: the files or tensors are the manifest's)"),
               ("1", "damage found (all of it listed); with --manifest, a difference (all of them listed)"),
               ("3", "TARGET resolves to nothing or cannot be read at all; the manifest is missing, not JSON, "
                     "not a manifest or of a newer version; --quick with a version-1 manifest (it has no CRC-32C)")],
    "manifest": [("0", "written or printed"),
                 ("3", "TARGET resolves to nothing, cannot be read, or is damaged (a CRC that fails): no manifest "
                       "of it is written"),
                 ("4", "the output exists (see --overwrite) or is a file of TARGET")],
    "prune": [("0", "pruned, or nothing to delete (and every --dry-run but one whose --budget cannot be met)"),
              ("1", "declined at the prompt: nothing deleted; --budget cannot be met (what may go is deleted, "
                    "the shortfall said)"),
              ("3", "DIR missing; its state file unreadable (see --ignore-bad-state); the metric cannot be read: "
                    "nothing deleted. With --recursive or --policy: a run directory skipped (damage, a metric "
                    "that cannot be read, with --policy also a lock another run holds; the others are pruned)"),
              ("4", "not interactive and no --yes; another run holds the lock; DIR changed since the plan: "
                    "nothing deleted")],
    "policy": [("0", "checked: every rule's globs match a directory (run directories no rule governs are listed, "
                     "not an error)"),
               ("2", "the policy file is not valid: an unknown key, a bad value, a glob that matches nothing "
                     "(the message names the file, line and key)"),
               ("3", "the policy file is missing or unreadable; a directory cannot be listed")],
    "repair": [("0", "rewritten, or nothing to change"), ("3", "DIR missing or unreadable"),
               ("4", "the state file changed while planning (a job saving); another run holds the lock")],
    "rename-vars": [("0", "written"),
                    ("3", "SRC unreadable; a --map name it does not hold"),
                    ("4", "DST exists (see --overwrite) or is a file of SRC; two names would become one")],
    "convert": [("0", "written"),
                ("2", "DST's extension names no format convert writes (see --to)"),
                ("3", "SRC unreadable; a dtype DST cannot hold; with --strict, what DST cannot hold; with --like, "
                      "template weights left unfilled (see --partial)"),
                ("4", "DST exists (see --overwrite) or is a file of SRC; two names would become one")],
    "average": [("0", "written"),
                ("3", "a source unreadable; sources that differ in names, dtypes or shapes; the metric of --best "
                      "cannot be read"),
                ("4", "DST exists (see --overwrite) or is a file of a source")],
    "diff": [("0", "identical, or equal within --atol/--rtol"), ("1", "they differ"),
             ("3", "A or B resolves to nothing or cannot be read"),
             ("4", "--names model would give two variables one name")],
    "freeze": [("0", "written (with --check: the same results)"), ("1", "--check: the results differ"),
               ("2", "no --output-nodes and no signature to take them from (likely outputs listed)"),
               ("3", "SRC unreadable; TensorFlow missing; a graph TensorFlow would crash on or a variable "
                     "node with an input"),
               ("4", "the output exists (see --overwrite) or is a file of SRC")],
    "export-json": [("0", "printed or written"), ("3", "SRC holds no graph; TensorFlow missing"),
                    ("4", "the output exists (see --overwrite) or is a file of SRC")],
    "watch": [("0", "every checkpoint handled (--once: all there were; --timeout: until the quiet period ended)"),
              ("1", "a command failed (--on-failure stop, or its retries used up) or a checkpoint was skipped: "
                    "failed under --on-failure skip, damaged under --verify, pruned before its turn, passed "
                    "over incomplete, or named so that the command would take it for an option"),
              ("3", "DIR missing or unreadable; the state file is not a watch state file"),
              ("4", "another watch holds the state file (one consumer per state file); the state file belongs to "
                    "another directory")],
    "completion": [("0", "printed or installed"), ("3", "the file could not be written")],
}


def exit_codes(name: str) -> list[tuple[str, str]]:
    """Every exit code one command may end with, in order: its own meanings, and those the same for
    all commands (2, 70, 130) where it has none of its own."""
    own = dict(EXIT_CODES[name])
    shared = [(code, meaning) for code, meaning in EXIT_STATUS if code in ("2", "70", "130") and code not in own]
    return sorted(list(own.items()) + shared, key=lambda item: int(item[0]))


@dataclass(frozen=True)
class Field:
    name: str
    meaning: str
    when: str | None = None  # present only then: an option (`--metric`) or a condition in words
    items: tuple["Field", ...] = ()  # the fields of each object in the list (or of the object)


@dataclass(frozen=True)
class Document:
    fields: tuple[Field, ...]
    when: str | None = None  # the option that prints this document instead of the first one


# At the top of every document (DESIGN.md).
COMMON = (Field("schema_version", "1; raised only when a field changes meaning or goes away"),
          Field("command", "the command's name"))

# What a failed run prints on stdout under --json (every command).
ERROR = Document((Field("error", "what went wrong", items=(
    Field("code", "the exit code"),
    Field("kind", "a stable snake_case name: not_found, corrupt_checkpoint, usage_error, refused, interrupted ..."),
    Field("message", "the `error:` line"),
    Field("hint", "what to do next, or null"))),))

_PROBLEM = (Field("kind", "a stable name: missing_shards, not_in_state, stale_path, outside, temp_dir, "
                          "stray_shard, bad_state_file, ..."),
            Field("path", "the file or directory concerned"),
            Field("message", "for people"))
_METRIC = Field("metric", "how checkpoints were scored: tag, mode (min or max), mode_given (false: chosen by "
                          "--mode auto), source (the file, event directory or names that answered), "
                          "keras_epochs_aligned, epochs_as_steps, scored and unscored (counts)", when="--metric")
_SCORE = Field("score", "TAG's value at the checkpoint's step; null: no score", when="--metric")
_RENAMED = Field("renamed", "the names that changed", items=(Field("from", "source name"), Field("to", "new name")))

_LS_DIRECTORY = (
    Field("directory", "DIR as given"),
    _METRIC,
    Field("latest", "the latest checkpoint's name; null when there is none"),
    Field("size_bytes", "bytes of the checkpoints listed"),
    Field("leftover_bytes", "bytes of debris (temp files and directories of interrupted saves)"),
    Field("checkpoints", "oldest first (step, then time)", items=(
        Field("name", "the checkpoint's name in DIR (model.ckpt-500, w.03-0.41.weights.h5, checkpoint-200)"),
        Field("prefix", "absolute path (a URL in a bucket)"),
        Field("step", "the step in its name; null when it has none"),
        Field("format", "v2, v1, keras, savedmodel, orbax or hf"),
        Field("size_bytes", "bytes of its files"),
        Field("num_shards", "data shards its index names (from the files' names)"),
        Field("complete", "every file it needs is present"),
        Field("has_meta", "a .meta graph is beside it"),
        Field("in_state", "the state file lists it"),
        Field("is_latest", "it is the directory's latest"),
        Field("mtime", "its files' modification time, ISO-8601 UTC"),
        Field("mtime_epoch", "the same in Unix seconds"),
        Field("timestamp", "its time in the state file, ISO-8601 UTC; null when none"),
        Field("timestamp_epoch", "the same in Unix seconds"),
        _SCORE,
        Field("family", "its series: the name with the numbers taken out", when="series members"),
        Field("keras_epochs", "its name numbers epochs as Keras' {epoch} (from 1)", when="series members"),
        Field("deletable", "prune may delete it (complete, nothing foreign inside)", when="series members"),
        Field("unexpected", "what a directory member holds that its framework does not write",
              when="series members"))),
    Field("problems", "what is wrong in DIR (listed, never a failure)", items=_PROBLEM),
)

_VERIFY_PROBLEM = (Field("name", "the tensor or file"),
                   Field("problem", "missing_shard, checksum, truncated, bad_slices, corrupt, stray_shard, ..."),
                   Field("message", "for people"),
                   Field("tensors", "the tensors left unchecked because of it (those of a missing shard)"))
_VERIFY_CHECKPOINT = (
    Field("checkpoint", "the checkpoint read (a prefix or file)"),
    Field("ok", "no damage found"),
    Field("checked_tensors", "tensors read and checked"),
    Field("checked_bytes", "bytes read and checked"),
    Field("errors", "all damage found, each cause once", items=_VERIFY_PROBLEM),
    Field("warnings", "not damage: files beside the checkpoint it does not use (a stray data shard)",
          items=_VERIFY_PROBLEM),
)

_DIFFERENCE = (Field("name", "the file (relative path) or tensor"),
               Field("change", "missing, extra, changed, renamed (tensors: the same content under another name) or "
                               "unreadable (tensors: damage met reading it)"),
               Field("message", "for people"),
               Field("renamed_to", "its name in TARGET", when="renamed"))

_PRUNE_DIRECTORY = (
    Field("directory", "DIR as given (with --recursive: each run directory found)"),
    Field("dry_run", "nothing was deleted"),
    _METRIC,
    Field("kept", "every checkpoint kept, oldest first", items=(
        Field("name", "the checkpoint's name"), Field("step", "its step, or null"),
        Field("reasons", "every rule that keeps it: latest, keep-last 3, every 24h, best by val_loss, ..."),
        _SCORE)),
    Field("deleted", "what was (with --dry-run: would be) deleted", items=(
        Field("name", "the checkpoint or debris"), Field("step", "its step, or null"),
        Field("size_bytes", "bytes freed"),
        Field("kind", "checkpoint, incomplete, temp, resumed or budget (deleted to fit --budget)"),
        _SCORE)),
    Field("freed_bytes", "bytes freed (or that would be)"),
    Field("problems", "what prune saw and left alone", items=_PROBLEM),
)

_WRITTEN = (
    Field("destination", "DST as given"),
    Field("format", "tf, safetensors, npz or keras"),
    Field("dry_run", "nothing was written"),
    Field("files", "the files written (with --dry-run: that would be)"),
    Field("tensors", "tensors written"),
    Field("total_bytes", "bytes of the tensors written"),
    Field("bytes_written", "bytes written to disk (0 with --dry-run)"),
)
_TRANSFORMS = (
    _RENAMED,
    Field("dropped", "source names left out (--drop, --keep, --drop-optimizer)"),
    Field("skipped", "what DST cannot hold (strings, variants, the object graph), left out",
          items=(Field("name", "the variable"), Field("reason", "why"))),
    Field("transformed", "variables transposed or cast (--layout, --transpose, --dtype)", items=(
        Field("name", "its new name"), Field("source", "its source name"),
        Field("transforms", "what was done, in order: transpose (1, 0), cast float32->bfloat16, ..."))),
    Field("overflowed", "--dtype: variables with finite values that became infinite",
          items=(Field("name", "the variable"), Field("count", "values that overflowed"))),
    Field("warnings", "warnings said on stderr: a --regex, --drop, --keep, --strip-prefix or --ema that "
                      "matched no name (average: and the selection's, e.g. fewer checkpoints than --last)"),
)

# What a command prints under --json when it is not one document (streams: a document per line).
JSON_INTRO = {"watch": "One JSON line per checkpoint on stdout (without `--exec` always, with it under `--json`), "
                       "each a document of its own:"}

# One JSON line per checkpoint (watch streams: each line a document of its own).
_WATCH_LINE = (
    Field("event", "checkpoint (no --exec: the line is the action), done, failed or skipped (--json)"),
    Field("directory", "DIR as given"),
    Field("path", "the checkpoint: its absolute prefix, file or directory (a URL in a bucket)"),
    Field("name", "its name in DIR"),
    Field("step", "its step"),
    Field("series", "the series it belongs to (as ls groups them): ckpt, model.ckpt, w.#.weights.h5, "
                    "savedmodel/, orbax/, checkpoint/ ..."),
    Field("format", "v2, v1, keras, savedmodel, orbax or hf"),
)

# ls -r --summary: one run directory (ops/retention/summary.py).
_SUMMARY_ROW = (
    Field("directory", "the run directory (DIR/...)"),
    Field("checkpoints", "checkpoints found (every series)"),
    Field("complete", "of them complete"),
    Field("damaged", "of them incomplete or cut short"),
    Field("newest_step", "the highest step of a complete checkpoint, or null"),
    Field("newest_time", "the time (the state file's, else the files') of its newest complete checkpoint, "
                         "ISO-8601 UTC, or null"),
    Field("newest_time_epoch", "the same in Unix seconds"),
    Field("best", "the best-scored complete checkpoint's name, or null", when="--metric"),
    Field("best_score", "its score, or null", when="--metric"),
    Field("size_bytes", "the checkpoints' bytes (as ls counts them)"),
    Field("leftover_bytes", "the bytes of debris of interrupted saves"),
    Field("reclaimable_bytes", "what prune with the rules given would free; null when its plan fails",
          when="a rule option"),
    Field("problem", "why reclaimable_bytes is null, else null", when="a rule option"),
)

OUTPUT: dict[str, tuple[Document, ...]] = {
    "ls": (
        Document(_LS_DIRECTORY),
        Document((Field("root", "DIR as given"),
                  Field("runs", "one row per run directory, largest first", items=_SUMMARY_ROW),
                  Field("totals", "the rows summed", items=(
                      Field("runs", "run directories"), Field("checkpoints", "their checkpoints"),
                      Field("complete", "complete ones"), Field("damaged", "incomplete or cut short ones"),
                      Field("size_bytes", "their bytes"), Field("leftover_bytes", "the debris' bytes"),
                      Field("reclaimable_bytes", "what the rules would free (runs whose plan failed count 0)",
                            when="a rule option")))), when="--summary"),
        Document((Field("root", "DIR as given"),
                  Field("num_checkpoints", "checkpoints in every run directory found"),
                  Field("total_bytes", "their bytes"),
                  Field("directories", "one `ls RUN_DIR` document per run directory (without schema_version "
                                       "and command)")), when="--recursive"),
    ),
    "latest": (
        Document((Field("directory", "DIR as given"),
                  Field("latest", "DIR/<name> as tf.train.latest_checkpoint returns it (absolute with "
                                  "--absolute); null when there is none"),
                  Field("step", "its step, or null"),
                  Field("source", "how it was found: state (the state file), relocated (the state file's "
                                  "absolute path found in DIR) or scan (the files on disk)"))),
        Document((Field("directory", "DIR as given"),
                  Field("best", "DIR/<name> of the best-scored complete checkpoint; null when none has a score"),
                  Field("step", "its step, or null"),
                  Field("score", "its score"),
                  Field("metric", "how checkpoints were scored (as in ls --metric)")), when="--best"),
    ),
    "inspect": (
        Document((
            Field("checkpoint", "the checkpoint read (a prefix, file or Orbax directory)"),
            Field("format", "v2, v1, safetensors, npz, keras, keras_h5, pytorch, orbax or graphdef"),
            Field("num_variables", "variables listed"),
            Field("total_elements", "their elements"),
            Field("total_bytes", "their stored bytes"),
            Field("variables", "in the index's order", items=(
                Field("name", "the checkpoint key (--names model: the name through the model)"),
                Field("dtype", "TensorFlow's name: float32, bfloat16, string, ..."),
                Field("shape", "a list of dimensions"),
                Field("num_elements", "elements"),
                Field("size_bytes", "stored bytes"),
                Field("partitioned", "stored as slices (a partitioned variable)"),
                Field("slices", "the stored slices: slice, shape, shard_id", when="--slices"),
                Field("checkpoint_key", "the key it is stored under", when="--names model"),
                Field("object_path", "its path in the TF2 object graph", when="--tree"),
                Field("object_paths", "every object path that reaches it", when="--tree"),
                Field("stats", "count, finite_count, min, max, mean, std, nan_count, inf_count, zero_count",
                      when="--stats"),
                Field("sha256", "its content digest, as `manifest` records it", when="--hash"),
                Field("value", "the tensor as nested lists; null when --limit left it out", when="--values"))),
            Field("values_limit_bytes", "--limit in bytes, or null", when="--values"),
            Field("values_omitted", "values left out by --limit", when="--values"),
            Field("meta", "the graph's summary (inputs, likely outputs, signatures, op counts); null when "
                          "there is no graph", when="--meta"),
            Field("file_metadata", "a safetensors file's __metadata__, a Keras file's version and layers",
                  when="--meta of a .safetensors or Keras file"),
        )),
    ),
    "verify": (
        Document(_VERIFY_CHECKPOINT),
        Document((Field("directory", "TARGET as given"),
                  Field("ok", "no checkpoint is damaged"),
                  Field("num_checkpoints", "checkpoints verified"),
                  Field("damaged", "how many are damaged"),
                  Field("checked_tensors", "tensors read and checked, in all"),
                  Field("checked_bytes", "bytes read and checked, in all"),
                  Field("checkpoints", "one `verify CHECKPOINT` report each, oldest first, directory by "
                                       "directory", items=_VERIFY_CHECKPOINT)), when="--all"),
        Document((Field("checkpoint", "the checkpoint read (a prefix or file)"),
                  Field("manifest", "FILE as given"),
                  Field("ok", "no difference (renamed tensors allowed with --ignore-names)"),
                  Field("mode", "files (TARGET's files are the manifest's: compared file by file) or tensors "
                                "(compared by content digest)"),
                  Field("digest", "what was compared: sha256, or crc32c (--quick)"),
                  Field("checked_files", "files compared"),
                  Field("checked_tensors", "tensors compared (files: those the files hold)"),
                  Field("checked_bytes", "bytes read"),
                  Field("files", "every file missing, extra or changed", items=_DIFFERENCE),
                  Field("tensors", "every tensor missing, extra, changed, renamed or unreadable (in files mode: "
                                   "when a file differs)", items=_DIFFERENCE)), when="--manifest"),
    ),
    "manifest": (
        Document((Field("format", "ckpttool-manifest"),
                  Field("version", "2 (docs/reference/manifest.md; version 1, without crc32c, is still read)"),
                  Field("created_by", "ckpttool and its version"),
                  Field("checkpoint", "path (as resolved) and format (v2, v1, safetensors, npz, keras ...)"),
                  Field("tensor_encoding", "ckpttool-tensor-v1: what each tensor's sha256 is computed over"),
                  Field("piece_bytes", "the size of the pieces of a large file"),
                  Field("files", "every file of the checkpoint", items=(
                      Field("path", "relative to the checkpoint's directory"), Field("size", "bytes"),
                      Field("sha256", "of the file, as sha256sum prints it"),
                      Field("crc32c", "CRC-32C of the file, 8 hex digits"),
                      Field("pieces", "the sha256 of each piece_bytes piece", when="a file larger than piece_bytes"))),
                  Field("tensors", "every tensor (internal entries left out)", items=(
                      Field("name", "the checkpoint key"), Field("dtype", "TensorFlow's name"),
                      Field("shape", "a list of dimensions"),
                      Field("sha256", "of its canonical encoding: the same in every format"),
                      Field("crc32c", "CRC-32C of its elements alone (8 hex digits): the same in every format"))))),
        Document((Field("checkpoint", "the checkpoint read"),
                  Field("output", "the manifest file written"),
                  Field("files", "files listed"),
                  Field("tensors", "tensors listed"),
                  Field("bytes", "the manifest's size")), when="--output"),
    ),
    "diff": (
        Document((
            Field("a", "the checkpoint A resolved to"),
            Field("b", "the checkpoint B resolved to"),
            Field("identical", "no differences (values may differ within --atol/--rtol)"),
            Field("compared", "variables in both, of the same dtype and shape"),
            Field("max_abs_within_tolerance", "the largest difference --atol/--rtol let pass (0: all exact)"),
            Field("differences", "by name", items=(
                Field("name", "the variable"),
                Field("change", "added, removed, dtype, shape or value"),
                Field("a_sha256", "its content digest in A", when="--by-hash"),
                Field("b_sha256", "its content digest in B", when="--by-hash"),
                Field("a_dtype", "its dtype in A, or null"), Field("b_dtype", "its dtype in B, or null"),
                Field("a_shape", "its shape in A, or null"), Field("b_shape", "its shape in B, or null"),
                Field("mismatched", "elements outside the tolerance (value changes)"),
                Field("max_abs_diff", "largest absolute difference (exact for integers)"),
                Field("max_rel_diff", "largest relative difference"))),
        )),
    ),
    "prune": (
        Document(_PRUNE_DIRECTORY),
        Document((Field("root", "DIR as given"),
                  Field("dry_run", "nothing was deleted"),
                  Field("directories", "one document per run directory, as `prune RUN_DIR` prints it (without "
                                       "schema_version and command); a directory that was skipped is "
                                       "{directory, error}"),
                  Field("deleted_count", "checkpoints and debris deleted, in all"),
                  Field("kept_count", "checkpoints kept, in all"),
                  Field("freed_bytes", "bytes freed, in all"),
                  Field("budget", "what --budget did", when="--budget", items=(
                      Field("budget_bytes", "SIZE in bytes"),
                      Field("bytes_before", "checkpoint bytes the rules alone leave"),
                      Field("bytes_after", "checkpoint bytes left once the budget's deletions are done too"),
                      Field("deleted_count", "checkpoints deleted for the budget (kind budget in each directory)"),
                      Field("missed_by_bytes", "bytes over the budget once all that may go is gone (0: met)"))),
                  Field("failed_runs", "what --drop-failed-runs did", when="--drop-failed-runs", items=(
                      Field("age_seconds", "AGE in seconds"),
                      Field("dropped", "run directories removed (with --dry-run: that would be): directory, files "
                                       "(relative), size_bytes, directory_removed, newest_mtime(_epoch)"),
                      Field("kept", "run directories that look failed but are kept: directory, reason"),
                      Field("freed_bytes", "their bytes"),
                      Field("problems", "runs planned but found changed under the lock and left: directory, "
                                        "message")))), when="--recursive"),
        Document((Field("policy", "FILE as given"),
                  Field("dry_run", "nothing was deleted"),
                  Field("directories", "one document per run directory the policy governs, as `prune RUN_DIR` "
                                       "prints it (without schema_version and command) plus `rule` (the rule that "
                                       "applied: index, line, paths); one that failed is {directory, rule, error}"),
                  Field("deleted_count", "checkpoints and debris deleted, in all"),
                  Field("kept_count", "checkpoints kept, in all"),
                  Field("freed_bytes", "bytes freed, in all"),
                  Field("failed_count", "run directories not pruned (each has an `error`)"),
                  Field("problems", "what the globs met and left alone (symlinks, object keys never followed)",
                        items=_PROBLEM)), when="--policy"),
    ),
    "policy": (
        Document((
            Field("policy", "FILE as given"),
            Field("rules", "each rule, in file order", items=(
                Field("index", "its number, from 1"), Field("line", "the line of its [[rule]] header"),
                Field("paths", "its globs, as written"), Field("matched", "the directories its globs match"),
                Field("governs", "how many run directories it governs"))),
            Field("directories", "each run directory found under a matched directory", items=(
                Field("directory", "the run directory"),
                Field("rule", "the rule that governs it: index, line, paths"))),
            Field("ungoverned", "run directories under the parents of the matched directories that no rule "
                                "governs"),
            Field("problems", "what the globs met and left alone (symlinks, object keys never followed)",
                  items=_PROBLEM),
        )),
    ),
    "repair": (
        Document((
            Field("directory", "DIR as given"),
            Field("dry_run", "nothing was written"),
            Field("changed", "the state file needs (or got) a rewrite"),
            Field("summary", "one line for people"),
            Field("changes", "each change, for people"),
            Field("state", "the new state file's text"),
            Field("backup", "DIR/checkpoint.bak when the old file was kept, else null"),
        )),
    ),
    "rename-vars": (
        Document((
            Field("source", "the checkpoint read"),
            Field("destination", "DST's prefix"),
            Field("dry_run", "nothing was written"),
            _RENAMED,
            Field("dropped", "source names left out"),
            Field("unchanged", "how many names stayed as they were"),
            Field("bytes_written", "bytes written (0 with --dry-run; data shards hard-linked with --link "
                                   "are not counted)"),
            Field("warnings", "rules that matched no name (a --regex, --drop, --keep, --strip-prefix or --ema)"),
        )),
    ),
    "convert": (
        Document((
            Field("source", "the checkpoint or file read"),
            Field("source_format", "v2, v1, safetensors, npz, keras, pytorch or graphdef"),
            *_WRITTEN,
            *_TRANSFORMS,
            Field("like", "the template", when="--like"),
            Field("matched", "how each template weight was filled", when="--like", items=(
                Field("from", "the source variable"), Field("to", "the template weight"),
                Field("by", "path (its name after the rename rules) or place (order and shape in its layer)"))),
            Field("unmatched", "template weights no source variable fills", when="--like"),
            Field("unused", "source variables no template weight takes", when="--like"),
        )),
    ),
    "average": (
        Document((
            Field("sources", "the checkpoints averaged, oldest first (the last is the newest)", items=(
                Field("prefix", "the checkpoint"), Field("step", "its step, or null"),
                Field("score", "its score (--best), else null"))),
            Field("selection", "how they were chosen: given, last 3, steps 10,20, best 3 by val_loss (min)"),
            Field("metric_source", "where --best's scores came from, or null"),
            *_WRITTEN,
            Field("averaged", "source names whose mean is written"),
            Field("taken_from_newest", "source names written from the newest as they are (integers, strings)"),
            *_TRANSFORMS,
        )),
    ),
    "freeze": (
        Document((
            Field("source", "SRC as given"),
            Field("output", "the file written"),
            Field("kind", "how SRC was loaded: checkpoint, saved_model_v1 or saved_model_v2"),
            Field("output_nodes", "the graph's outputs"),
            Field("nodes_before", "nodes of the graph read"),
            Field("nodes_after", "nodes of the frozen graph"),
            Field("variables_frozen", "variables turned into constants"),
            Field("bytes_written", "bytes written"),
            Field("text", "written as pbtxt (--text)"),
            Field("check", "null, or with --check: ok, inputs (the shape fed to each input), outputs "
                           "(name, max_abs_diff, equal)"),
            Field("signature", "the SavedModel signature the outputs came from, or null"),
            Field("signature_outputs", "its output names -> the frozen graph's tensors, or null"),
            Field("warnings", "what was said on stderr"),
        )),
    ),
    "export-json": (
        Document((
            Field("source", "the file the graph was read from"),
            Field("kind", "meta_graph, saved_model or graph_def"),
            Field("part", "--part, or null for the whole graph"),
            Field("format", "json or pbtxt"),
            Field("message", "the export: the proto as JSON (field names as in the proto), or pbtxt text"),
        )),
        Document((
            Field("source", "the file the graph was read from"),
            Field("kind", "meta_graph, saved_model or graph_def"),
            Field("part", "--part, or null for the whole graph"),
            Field("format", "json or pbtxt"),
            Field("output", "the file written"),
            Field("bytes", "its size"),
        ), when="--output"),
    ),
    "watch": (
        Document(_WATCH_LINE),
        Document(_WATCH_LINE + (
            Field("exit_status", "the command's exit status (negative: the signal that ended it); null when it "
                                 "did not run (--verify found damage)", when="done or failed"),
            Field("attempt", "1 for the first run, then each retry", when="failed"),
            Field("output_tail", "the command's last output lines (stdout and stderr)", when="failed"),
            Field("reason", "why it was skipped: gone (pruned before its turn), incomplete (passed over), failed, "
                  "option-like ({name} or {series} would begin a word of the command with -)",
                  when="skipped"),
            Field("message", "what happened, for people", when="failed or skipped"),
        ), when="--exec"),
    ),
    "completion": (
        Document((Field("shell", "bash, zsh or fish"), Field("script", "the completion script"))),
        Document((Field("shell", "bash, zsh or fish"), Field("installed", "the file written"),
                  Field("note", "what to do for the shell to load it, or null")), when="--install"),
    ),
}
