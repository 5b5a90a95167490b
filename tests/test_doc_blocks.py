"""Every shell and Python block of docs/ runs in CI as written (issue 25): each page in a fresh copy
of examples/, its blocks in order (tests/doc_blocks.py says how a page marks a block it cannot run,
or asks for the bucket servers). The generated command pages hold only their command's --help
examples, which tests/test_docs.py runs."""
from __future__ import annotations

import pytest

from tests.conftest import ROOT
from tests.doc_blocks import blocks, commands, run_page

DOCS = ROOT / "docs"
PAGES = sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md"))
HAND_WRITTEN = [p for p in PAGES if not p.startswith("commands/")]
MAX_NOT_RUN = 6  # install commands, benchmarks, the repository's own scripts: keep them rare


@pytest.mark.parametrize("page", HAND_WRITTEN)
def test_page_blocks_run_in_order(page, tmp_path):
    run_page((DOCS / page).read_text(), tmp_path)


def test_blocks_not_run_are_few_and_say_why():
    skipped = [(page, b) for page in PAGES for b in blocks((DOCS / page).read_text()) if b.no_run is not None]
    assert len(skipped) <= MAX_NOT_RUN, [page for page, _b in skipped]
    assert all(b.no_run.strip() for _page, b in skipped)


def test_command_pages_run_only_their_help_examples():
    from ckpttool.cli.help_text import EXAMPLES

    for name, examples in EXAMPLES.items():
        page_blocks = blocks((DOCS / "commands" / f"{name}.md").read_text())
        lines = [line for b in page_blocks if b.no_run is None for line in commands(b.body)]
        assert lines == [f"{command}   # {comment}" for command, comment in examples], name


def test_docs_have_runnable_blocks():
    """Most hand-written pages show what they say with commands that run."""
    runnable = [p for p in HAND_WRITTEN if any(b.no_run is None for b in blocks((DOCS / p).read_text()))]
    assert len(runnable) >= len(HAND_WRITTEN) - 2, sorted(set(HAND_WRITTEN) - set(runnable))
