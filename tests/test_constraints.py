"""The test dependencies are pinned: the README's test command installs with constraints.txt, which
holds every package the project and its `test` extra need (their dependencies too) at the version
installed here, so the oracles a fresh machine computes with are the ones the suite passed with."""
from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from gen_constraints import closure, pins, project_requirements, read_pins  # noqa: E402


def test_every_test_dependency_is_pinned_at_its_installed_version():
    pinned = read_pins(ROOT / "constraints.txt")
    installed = pins(closure(project_requirements(ROOT / "pyproject.toml")))
    assert {"tensorflow-cpu", "numpy", "ml-dtypes", "safetensors", "h5py", "hypothesis"} <= set(installed)
    missing = sorted(set(installed) - set(pinned))
    assert not missing, f"not in constraints.txt (run scripts/gen_constraints.py): {missing}"
    moved = {name: (pinned[name], version) for name, version in installed.items() if pinned[name] != version}
    assert not moved, f"installed versions differ from constraints.txt (pinned, installed): {moved}"


def test_the_readme_test_command_installs_with_the_constraints():
    readme = (ROOT / "README.md").read_text()
    (command,) = [b for b in re.findall(r"```sh\n(.*?)\n```", readme, re.S) if "pytest" in b]
    assert command.startswith("pip install -e '.[test]' -c constraints.txt && ")
    assert (ROOT / ".ci" / "run").read_text().rstrip().splitlines()[-1] == command  # run verbatim, last
