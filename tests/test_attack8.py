"""Attack round 8: writers and their destinations, code a file brings, `watch --exec`. Each test
failed on main before its fix; TensorFlow (or the other format's own library) says what the files
hold afterwards."""
from __future__ import annotations

import os
import shutil
import sys

import numpy as np
import pytest

from tests.conftest import assert_one_line_error, run_cli
from tests.test_keras_like import like_dir  # noqa: F401 - Keras 3 files written by Keras
from tests.test_rename_diff import assert_same_tensors


# -- a path through a symlink and `..`: the system's parent, not the text's -----------------------

def _run_behind_a_link(fixtures_dir, tmp_path):
    """tmp/deep/model.ckpt-50 (a copy of the Saver run) and tmp/link -> deep/sub: to the system,
    tmp/link/../model.ckpt-50 is deep/model.ckpt-50; to os.path.abspath it is tmp/model.ckpt-50."""
    deep = tmp_path / "deep"
    shutil.copytree(fixtures_dir / "saver_run", deep)
    (deep / "sub").mkdir()
    (tmp_path / "link").symlink_to("deep/sub")
    return deep, tmp_path / "link" / ".." / "model.ckpt-50"


@pytest.mark.parametrize("command", [["rename-vars", "--add-prefix", "x/"], ["convert", "--to", "tf"]])
def test_a_source_named_through_a_link_and_dotdot_is_never_written_over(fixtures_dir, tmp_path, tf, command):
    """SRC given as `link/../model.ckpt-50` is read where the system finds it (deep/), but was
    compared with DST by its text (tmp/model.ckpt-50, nothing): DST deep/model.ckpt-50 with
    --overwrite passed, and rename-vars deleted the source's index and data before copying them
    (exit 3, the checkpoint gone); convert replaced it. Refused now (exit 4), SRC intact."""
    deep, through_link = _run_behind_a_link(fixtures_dir, tmp_path)
    result = run_cli(*command, "--overwrite", "--no-update-state", str(through_link), deep / "model.ckpt-50")
    assert_one_line_error(result, 4)
    assert "never modifies SRC" in result.stderr
    assert_same_tensors(tf, fixtures_dir / "saver_run" / "model.ckpt-50", deep / "model.ckpt-50")


def test_a_destination_through_a_link_and_dotdot_is_written_where_the_system_puts_it(fixtures_dir, tmp_path, tf):
    """DST `link/../out` is deep/out to the system (as TensorFlow's own writer would place it),
    not tmp/out as the text alone says."""
    deep, through_link = _run_behind_a_link(fixtures_dir, tmp_path)
    out = tmp_path / "link" / ".." / "out"
    result = run_cli("rename-vars", "--add-prefix", "x/", deep / "model.ckpt-50", str(out))
    assert result.exit_code == 0, result.stderr
    assert not (tmp_path / "out.index").exists()
    reader = tf.train.load_checkpoint(str(deep / "out"))
    source = tf.train.load_checkpoint(str(deep / "model.ckpt-50"))
    names = set(source.get_variable_to_shape_map())
    assert set(reader.get_variable_to_shape_map()) == {"x/" + n for n in names}
    for name in names:
        np.testing.assert_array_equal(reader.get_tensor("x/" + name), source.get_tensor(name))
    assert tf.train.latest_checkpoint(str(deep)) == str(deep / "out")


# -- watch --shell: a placeholder inside quotes ------------------------------------------------------

def _run_named_to_run_a_command(copy_fixture, marker):
    """The Saver run with its checkpoints renamed `m$(touch MARKER).ckpt-N`: a name anyone who may
    write into the run directory can give a save (no slash needed: the marker is in the cwd)."""
    run = copy_fixture("saver_run")
    for path in list(run.iterdir()):
        if path.name.startswith("model.ckpt-"):
            path.rename(run / path.name.replace("model", f"m$(touch {marker})"))
    (run / "checkpoint").unlink()
    return run


@pytest.mark.parametrize("template", ['echo "got {name}"', "echo 'got {name}'", "cat <<EOF\n{path}\nEOF"])
def test_a_checkpoint_name_never_runs_through_a_quoted_placeholder(copy_fixture, tmp_path, tf, template,
                                                                  monkeypatch):
    """--shell quotes each value with shlex.quote, which holds only where the placeholder stands
    bare: in `"{name}"` its single quotes are plain characters, in `'{name}'` they close and reopen
    the template's own, and a here-document expands $(...) whatever the quotes. The name's
    `$(touch pwned)` ran as root's command. Such a template is refused (exit 2) before anything runs;
    bare placeholders still work (the name reaches the command as one literal word)."""
    monkeypatch.chdir(tmp_path)
    run = _run_named_to_run_a_command(copy_fixture, "pwned")
    assert tf.train.load_checkpoint(str(run / "m$(touch pwned).ckpt-50")).get_variable_to_shape_map()
    result = run_cli("watch", run, "--once", "--state", tmp_path / "s.json", "--shell", "--exec", template)
    assert_one_line_error(result, 2)
    assert not (tmp_path / "pwned").exists()
    bare = run_cli("watch", run, "--once", "--state", tmp_path / "t.json", "--shell", "--exec", "echo got {name}")
    assert bare.exit_code == 0, bare.stderr
    assert "got m$(touch pwned).ckpt-50" in bare.stdout.splitlines()
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("shell", [False, True])
def test_a_checkpoint_named_like_an_option_never_reaches_the_command(copy_fixture, tmp_path, tf, shell):
    """A checkpoint someone named `--output=x.ckpt-N` (TensorFlow saves and reads it as any other):
    `{name}` beginning a word made it an option of the command (`ls -d {name}` failed with
    `unrecognized option`; to GNU tar or rsync it is an instruction). Such a checkpoint is skipped
    with a warning (exit 1, the command never sees it); the others run; `x{name}` or `{path}` is
    never an option."""
    run = copy_fixture("saver_run")
    for path in list(run.iterdir()):
        if path.name.startswith("model.ckpt-50."):
            path.rename(run / path.name.replace("model", "--output=x"))
    (run / "checkpoint").unlink()
    assert tf.train.load_checkpoint(str(run / "--output=x.ckpt-50")).get_variable_to_shape_map()
    seen = tmp_path / "seen"
    record = f"{sys.executable} -c \"import sys; open(sys.argv[1], 'a').write(repr(sys.argv[2:]) + chr(10))\" {seen}"
    extra = ["--shell"] if shell else []
    result = run_cli("watch", run, "--once", "--state", tmp_path / "s.json", *extra, "--exec", record + " {name}")
    assert result.exit_code == 1, result.stderr
    assert "--output=x" not in seen.read_text()
    assert any(line.startswith("warning: --output=x.ckpt-50: its {name}") for line in result.stderr.splitlines())
    called = [eval(line)[0] for line in seen.read_text().splitlines()]
    others = sorted({p.name.split(".data")[0].split(".index")[0] for p in run.glob("model.ckpt-*.index")})
    assert sorted(called) == others and others
    prefixed = run_cli("watch", run, "--once", "--state", tmp_path / "t.json", *extra, "--exec",
                       record + " x{name} {path}")
    assert prefixed.exit_code == 0, prefixed.stderr
    assert "'x--output=x.ckpt-50', " + repr(str(run / "--output=x.ckpt-50")) in seen.read_text()


# -- convert --like: the temp beside DST reopened by its name ---------------------------------------

def test_like_never_writes_through_a_link_planted_in_its_temps_place(like_dir, tmp_path, monkeypatch):
    """convert --like NAME.weights.h5 made its temp beside DST with O_EXCL|O_NOFOLLOW, copied the
    template into it, then reopened the temp *by its name* (h5py, r+) to fill the weights. Whoever
    may write in DST's directory sees the temp's name there: replaced in that window by a symlink to
    another user's weights file of the same architecture, that file was filled with the source's
    weights in place (and DST became the link). The weights are now written through the descriptor
    the temp was made with, and a temp whose name names another file by the commit is refused
    (exit 4, no DST): the victim's file holds what it held (h5py, the format's library, reads it)."""
    from ckpttool.formats.keras import writer

    shared, victim = tmp_path / "shared", tmp_path / "victim.weights.h5"
    shared.mkdir()
    shutil.copy(like_dir / "template.weights.h5", victim)
    before = _h5_datasets(victim)
    copy = writer.copy_template_weights

    def copy_then_swap(template, out, scratch):
        copy(template, out, scratch)
        (temp,) = [p for p in shared.iterdir() if ".tmp" in p.name]  # what another user lists
        temp.unlink()
        temp.symlink_to(victim)

    monkeypatch.setattr(writer, "copy_template_weights", copy_then_swap)
    out = shared / "out.weights.h5"
    result = run_cli("convert", like_dir / "trained.weights.h5", out, "--like", like_dir / "template.weights.h5")
    assert _h5_datasets(victim) == before
    assert_one_line_error(result, 4)
    assert not os.path.lexists(out)
    monkeypatch.setattr(writer, "copy_template_weights", copy)  # nobody in the way: DST is the source's weights
    assert run_cli("convert", like_dir / "trained.weights.h5", out, "--like", like_dir / "template.weights.h5",
                   ).exit_code == 0
    trained, written = _h5_datasets(like_dir / "trained.weights.h5"), _h5_datasets(out)
    assert written.keys() == before.keys() and all(written[k] == trained[k] for k in written)
    assert any(written[k] != before[k] for k in written)


def _h5_datasets(path) -> dict[str, bytes]:
    """Every dataset of an HDF5 file (h5py reads it) under its path inside the file, as bytes."""
    import h5py

    found: dict[str, bytes] = {}
    with h5py.File(path, "r") as h5:
        h5.visititems(lambda name, obj: found.__setitem__(name, np.asarray(obj[()]).tobytes())
                      if isinstance(obj, h5py.Dataset) else None)
    return found


# -- watch: its state file in a directory others write in -----------------------------------------

def test_a_watch_state_planted_by_another_user_is_not_resumed(copy_fixture, tmp_path, tf):
    """watch keeps its state in DIR/.ckpttool-watch.json. In a shared run directory (sticky, anyone
    may add a file) another user planted one before root's first watch, marking the series done up
    to step 10^9: root's watch then ran its command on none of the checkpoints TensorFlow lists, and
    said nothing. A state file of neither this user nor the directory's owner is refused (exit 3,
    nothing run), as a planted prune journal is; one of ours is resumed as before."""
    import json

    from ckpttool.ops.runs.watch import SeriesMark, WatchState, state_document

    run = copy_fixture("saver_run")
    os.chmod(run, 0o1777)
    listed = tf.train.get_checkpoint_state(str(run)).all_model_checkpoint_paths
    assert listed
    planted = run / ".ckpttool-watch.json"
    mark = {"model.ckpt": SeriesMark(10**9, "model.ckpt-1000000000")}
    planted.write_text(json.dumps(state_document(WatchState(os.path.realpath(run), mark))))
    os.chown(planted, 4242, 4242)
    calls = tmp_path / "calls"
    command = f"sh -c 'echo $0 >> {calls}' {{path}}"
    result = run_cli("watch", run, "--once", "--exec", command)
    assert_one_line_error(result, 3)
    assert "uid 4242" in result.stderr and not calls.exists()
    planted.unlink()
    done = run_cli("watch", run, "--once", "--exec", command)
    assert done.exit_code == 0, done.stderr
    assert calls.read_text().split() == [os.path.join(str(run), os.path.basename(p)) for p in listed]


# -- average: the state file that chose its sources ---------------------------------------------------

def test_average_of_a_run_directory_never_replaces_its_state_file(fixtures_dir, tmp_path, tf):
    """`average RUN --last 2 -o RUN/checkpoint --to safetensors --overwrite` replaced the run's
    state file (which picked the two) with a safetensors file: TensorFlow no longer found the
    run's latest checkpoint. convert refuses this (test_source_safety); average now does too."""
    run = tmp_path / "run"
    shutil.copytree(fixtures_dir / "saver_run", run)
    before = (run / "checkpoint").read_bytes()
    result = run_cli("average", run, "--last", "2", "-o", run / "checkpoint", "--to", "safetensors", "--overwrite")
    assert_one_line_error(result, 4)
    assert (run / "checkpoint").read_bytes() == before
    assert tf.train.latest_checkpoint(str(run)).endswith("model.ckpt-50")


# -- a symlink in DST's place lends nothing --------------------------------------------------------

def test_a_link_in_the_destinations_place_lends_neither_owner_nor_mode(fixtures_dir, tmp_path, tf):
    """`convert --overwrite` onto DST, where another user planted a symlink to their own file: the
    link is replaced (never written through), and the new file was given the link target's owner
    and mode (as root: a file of uid 4242, 0o4755 asked for). A replaced regular file keeps its
    own, as before; a replaced link gives the new file ours and the umask's."""
    victim = tmp_path / "theirs.safetensors"
    victim.write_bytes(b"theirs")
    os.chmod(victim, 0o4755)
    if os.geteuid() == 0:
        os.chown(victim, 4242, 4242)
    dst = tmp_path / "out.safetensors"
    dst.symlink_to(victim)
    result = run_cli("convert", fixtures_dir / "saver_run" / "model.ckpt-50", dst, "--overwrite")
    assert result.exit_code == 0, result.stderr
    assert victim.read_bytes() == b"theirs" and not dst.is_symlink()
    made = dst.stat()
    assert (made.st_uid, made.st_gid) == (os.geteuid(), os.getegid())
    umask = os.umask(0)
    os.umask(umask)
    assert made.st_mode & 0o7777 == 0o666 & ~umask
    from safetensors.numpy import load_file

    reader = tf.train.load_checkpoint(str(fixtures_dir / "saver_run" / "model.ckpt-50"))
    loaded = load_file(str(dst))
    assert set(loaded) <= set(reader.get_variable_to_shape_map()) and loaded
    for name, value in loaded.items():
        np.testing.assert_array_equal(value, reader.get_tensor(name))
