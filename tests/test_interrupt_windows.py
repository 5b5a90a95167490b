"""An interrupt that lands the moment a temp file is created: the writer must know of every temp it
made, so that its cleanup removes them (a SIGINT between os.open and the caller's bookkeeping left
`DST.data-00000-of-00001.tmp…` behind, seen as a flaky interrupt test under load). And one that lands
during the final commit of a temp (its fsync, its rename): a SIGTERM there left the full-size temp of
a `convert --like` Keras file beside DST."""
from __future__ import annotations

import os
import signal

import pytest

from ckpttool.errors import Terminated
from ckpttool.ops.tensors.convert import apply_convert, plan_convert
from ckpttool.ops.tensors.rename import apply_rename, plan_rename
from ckpttool.ops.tensors.rename_rules import RenameRules
from ckpttool.storage import atomic
from tests.test_keras_like import like_dir  # noqa: F401 - a fixture


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


@pytest.fixture
def sigterm_unwinds():
    """SIGTERM raises Terminated here, as the CLI's handler makes it (cli/entry.py)."""
    def unwind(signum, frame):
        raise Terminated(signum, signal.Signals(signum).name)

    previous = signal.signal(signal.SIGTERM, unwind)
    yield
    signal.signal(signal.SIGTERM, previous)


@pytest.mark.parametrize("moment", ["fsync", "replace"])
@pytest.mark.parametrize("suffix", [".weights.h5", ".keras"])
def test_convert_like_terminated_during_its_final_commit_leaves_nothing(like_dir, tmp_path, monkeypatch, moment,
                                                                          suffix, sigterm_unwinds):
    """SIGTERM delivered as the finished Keras file is synced, or just before it is renamed to DST:
    neither DST nor its temp is left."""
    out = tmp_path / "out"
    out.mkdir()
    plan = plan_convert(str(like_dir / "trained.weights.h5"), str(out / f"dst{suffix}"),
                        like=str(like_dir / f"template{suffix}"))
    fired = []

    def commits_dst(args) -> bool:  # the fsync of DST's temp, or the rename onto DST
        if moment == "replace":
            return os.fspath(args[1]) == plan.destination
        temps = [out / name for name in os.listdir(out) if atomic.TEMP_SUFFIX_RE.search(name)]
        return any(os.path.samestat(os.fstat(args[0]), os.stat(temp)) for temp in temps)

    def signal_first(real):
        def call(*args, **kwargs):
            if not fired and commits_dst(args):
                fired.append(args)
                signal.raise_signal(signal.SIGTERM)
            return real(*args, **kwargs)
        return call

    monkeypatch.setattr(atomic.os, moment, signal_first(getattr(os, moment)))
    with pytest.raises(Terminated):
        apply_convert(plan)
    assert fired
    assert os.listdir(out) == []


def test_interrupt_inside_fdopen_is_an_interrupt_not_a_bad_descriptor(fixtures_dir, monkeypatch,
                                                                     sigint_reaches_children):
    """SIGINT landing in os.fdopen just after the file object took the descriptor: the object, dropped
    as the interrupt unwinds, closes it, and a second close of ours failed with EBADF, so Ctrl-C during
    `rename-vars` exited 3 with `error: Bad file descriptor` (seen once in a full run)."""
    from ckpttool.storage import fs

    real_fdopen = os.fdopen
    opened = []

    def fdopen_then_interrupt(fd, *args, **kwargs):
        opened.append(fd)
        # the new object sits on the stack, not in a local, as in os.fdopen: the unwinding drops it
        return (real_fdopen(fd, *args, **kwargs), signal.raise_signal(signal.SIGINT))[0]

    monkeypatch.setattr(fs.os, "fdopen", fdopen_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        fs.open_input(str(fixtures_dir / "saver_run" / "model.ckpt-50.index"))
    assert opened
    with pytest.raises(OSError):
        os.fstat(opened[0])  # closed, once
