"""An interrupt that lands the moment a temp file is created: the writer must know of every temp it
made, so that its cleanup removes them (a SIGINT between os.open and the caller's bookkeeping left
`DST.data-00000-of-00001.tmp…` behind, seen as a flaky interrupt test under load)."""
from __future__ import annotations

import os
import signal

import pytest

from ckpttool.ops.convert import apply_convert, plan_convert
from ckpttool.ops.rename import apply_rename, plan_rename
from ckpttool.ops.rename_rules import RenameRules
from ckpttool.storage import atomic


@pytest.fixture
def interrupt_at_temp_creation(monkeypatch, sigint_reaches_children):
    """SIGINT delivered to this process right after a temp file is created (the worst moment)."""
    real_open = os.open
    fired = []

    def open_then_interrupt(path, flags, *args, **kwargs):
        fd = real_open(path, flags, *args, **kwargs)
        if ".tmp" in os.path.basename(str(path)) and flags & os.O_CREAT and not fired:
            fired.append(path)
            signal.raise_signal(signal.SIGINT)
        return fd

    monkeypatch.setattr(atomic.os, "open", open_then_interrupt)
    return fired


def test_rename_interrupted_as_its_temp_shard_is_created_leaves_nothing(fixtures_dir, tmp_path,
                                                                         interrupt_at_temp_creation):
    out = tmp_path / "out"
    plan = plan_rename(str(fixtures_dir / "saver_run" / "model.ckpt-50"), str(out / "dst"),
                       RenameRules(add_prefix="x/"))
    with pytest.raises(KeyboardInterrupt):
        apply_rename(plan)
    assert interrupt_at_temp_creation
    assert not out.exists() or os.listdir(out) == []


@pytest.mark.parametrize("suffix", [".safetensors", ".npz", ""])
def test_convert_interrupted_as_its_temp_is_created_leaves_nothing(fixtures_dir, tmp_path, suffix,
                                                                     interrupt_at_temp_creation):
    out = tmp_path / "out"
    plan = plan_convert(str(fixtures_dir / "saver_run" / "model.ckpt-50"), str(out / f"dst{suffix}"))
    with pytest.raises(KeyboardInterrupt):
        apply_convert(plan)
    assert interrupt_at_temp_creation
    assert not out.exists() or os.listdir(out) == []
