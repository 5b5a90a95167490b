"""Every shell and Python block of the README runs as written, in order (issue 18 item 15),
on a copy of the shipped examples/, with `ckpttool` = `python -m ckpttool` of this tree
(tests/doc_blocks.py; docs/ pages: tests/test_doc_blocks.py).

The two one-line commands (install and try; install and test) are skipped: CI runs them
(.ci/run, tests/test_docs.py). The README's bucket recipe runs against the test suite's S3 and GCS
servers, with examples/run uploaded to `my-bucket/runs/exp1` on each."""
from __future__ import annotations

import pytest

from tests.conftest import ROOT
from tests.doc_blocks import BUCKETS_MARKER, blocks, run_page

ONE_LINERS = ("pip install",)


def test_readme_blocks_run_in_order(tmp_path):
    text = (ROOT / "README.md").read_text()
    assert BUCKETS_MARKER in text
    page_blocks = [b for b in blocks(text) if not b.body.startswith(ONE_LINERS)]
    assert [b.kind for b in page_blocks].count("python") == 1 and len(page_blocks) >= 3
    run_page(text, tmp_path, page_blocks)


def _command(line: str) -> str:
    return line.split("  #")[0].strip()


def test_readme_blocks_not_run_here_run_in_the_docs():
    """A recipe that needs what only a docs page makes (a frozen graph: TensorFlow, seconds) is not
    run here, but each of its lines is, verbatim, on that page."""
    from tests.doc_blocks import commands

    docs = {_command(line) for page in (ROOT / "docs").rglob("*.md")
            for b in blocks(page.read_text()) if b.no_run is None for line in commands(b.body)}
    skipped = [b for b in blocks((ROOT / "README.md").read_text()) if b.no_run is not None]
    assert len(skipped) <= 1
    for block in skipped:
        assert {_command(line) for line in commands(block.body)} <= docs, block.body


def test_readme_api_refusal_names_the_keyword(tmp_path):
    """From the API, an existing destination is refused naming `overwrite=True`, not the CLI's flag."""
    import ckpttool
    from ckpttool.errors import Refused

    out = tmp_path / "model.safetensors"
    ckpttool.convert(ROOT / "examples" / "run", out)
    with pytest.raises(Refused) as raised:
        ckpttool.convert(ROOT / "examples" / "run", out)
    assert "overwrite=True" in str(raised.value) and "--overwrite" not in str(raised.value)
