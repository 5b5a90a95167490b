#!/usr/bin/env python3
"""Write what is generated from the code: the shell completions (bash, zsh, fish), the man page and
the docs site's command pages from the Typer app, and the Python API reference from docstrings.

    python scripts/gen_docs.py          # rewrite completions/, man/, docs/commands/, docs/python-api/reference.md
    python scripts/gen_docs.py --check  # exit 1 if any generated file is stale

The generators live in ckpttool/cli/docs.py (`ckpttool completion` prints the
same scripts), ckpttool/cli/doc_pages.py and scripts/api_reference.py;
tests/test_docs.py runs --check in CI.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def generated() -> dict[Path, str]:
    import typer

    from ckpttool.cli.app import app
    from ckpttool.cli.doc_pages import pages
    from ckpttool.cli.docs import completion_script, man_page

    sys.path.insert(0, str(ROOT / "scripts"))
    from api_reference import reference_page

    group = typer.main.get_command(app)

    return {
        ROOT / "completions" / "ckpttool.bash": completion_script(group, "bash"),
        ROOT / "completions" / "_ckpttool": completion_script(group, "zsh"),
        ROOT / "completions" / "ckpttool.fish": completion_script(group, "fish"),
        ROOT / "man" / "ckpttool.1": man_page(group),
        **{ROOT / "docs" / "commands" / name: text for name, text in pages(group).items()},
        ROOT / "docs" / "python-api" / "reference.md": reference_page(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a generated file is stale")
    args = parser.parse_args()
    stale = []
    for path, text in generated().items():
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path.relative_to(ROOT)))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        print("stale generated files: " + ", ".join(stale) + " (run python scripts/gen_docs.py)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
