"""Issue 24, item 7: no file's bytes leak through a symlink or a message.

Someone who may write into a run directory that root's cron (or another user) reads replaces
the state file `checkpoint` by a symlink to a secret file: `ls`, `ls --json`, `latest`,
`prune --dry-run` and `repair --dry-run` printed some of its bytes (the parse error quoted the
first word; a secret that parses printed its "entries"), and `repair` copied it into
`checkpoint.bak`. A data shard symlinked outside the directory was read by the API's partial
reads, which check no CRC, so its bytes came back as tensor values. A state file or shard that
leaves its directory is never followed (as a safetensors index's shards already were not): it is
a problem naming the path only. And no parse error quotes what it failed to parse."""
from __future__ import annotations

import os

import numpy as np
import pytest

import ckpttool
from ckpttool.errors import CkptError
from tests.conftest import assert_one_line_error, run_cli
from tests.test_prune_repair import _many_checkpoint_dir, assert_tf_restores_latest

TOKEN = "SECRETTOKEN42"
SECRETS = {
    "not_a_state_file": f"{TOKEN}:$6$saltsalt$hash:19000:0:99999:7:::\nbin:*:19000\n",
    "parses_as_one": f'model_checkpoint_path: "{TOKEN}"\nall_model_checkpoint_paths: "{TOKEN}-2"\n',
}
COMMANDS = [("ls",), ("ls", "--json"), ("latest",), ("prune", "--keep-last", "1", "--dry-run"),
            ("repair", "--dry-run")]


def _run_with_linked_state(fixtures_dir, tmp_path, secret: str):
    run = tmp_path / "run"
    _many_checkpoint_dir(fixtures_dir, run, 3)
    (tmp_path / "shadow").write_text(secret)
    (run / "checkpoint").unlink()
    os.symlink(tmp_path / "shadow", run / "checkpoint")
    return run


@pytest.mark.parametrize("secret", sorted(SECRETS))
@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_a_state_file_linked_outside_is_never_read(fixtures_dir, tmp_path, secret, command):
    run = _run_with_linked_state(fixtures_dir, tmp_path, SECRETS[secret])
    result = run_cli(*command, run)
    assert TOKEN not in result.stdout + result.stderr
    assert "outside" in result.stdout + result.stderr and str(run / "checkpoint") in result.stdout + result.stderr
    if command[0] == "prune":  # its latest is unknown: refused, as for any unreadable state file
        assert_one_line_error(result, 3)
    else:
        assert result.exit_code == 0, result.stderr
    if command == ("ls", "--json"):
        problems = [p for p in result.json()["problems"] if p["path"] == str(run / "checkpoint")]
        assert [p["kind"] for p in problems] == ["bad_state_file"]
    if command == ("latest",):
        assert result.stdout.strip() == str(run / "ckpt-3")  # the newest on disk, with a warning


def test_repair_replaces_the_link_and_copies_nothing_through_it(fixtures_dir, tmp_path, tf):
    run = _run_with_linked_state(fixtures_dir, tmp_path, SECRETS["parses_as_one"])
    result = run_cli("repair", run)
    assert result.exit_code == 0, result.stderr
    assert TOKEN not in result.stdout + result.stderr
    assert (tmp_path / "shadow").read_text() == SECRETS["parses_as_one"]  # the link was replaced, not written through
    assert not os.path.islink(run / "checkpoint")
    assert not (run / "checkpoint.bak").exists() or TOKEN not in (run / "checkpoint.bak").read_text()
    assert_tf_restores_latest(tf, run, "ckpt-3")


@pytest.mark.parametrize("content", [f"{TOKEN} {{\n", f"{TOKEN}: 1\n", f'model_checkpoint_path: {TOKEN}\n',
                                     f'model_checkpoint_path: "x"\nall_model_checkpoint_timestamps: {TOKEN}\n'])
def test_no_message_quotes_an_unparseable_state_file(fixtures_dir, tmp_path, content, tf):
    """A state file in the directory that does not parse (TensorFlow cannot read it either) is
    reported with its line, never with the text found there."""
    run = tmp_path / "run"
    _many_checkpoint_dir(fixtures_dir, run, 2)
    (run / "checkpoint").write_text(content)
    assert tf.train.get_checkpoint_state(str(run)) is None
    for command in COMMANDS:
        result = run_cli(*command, run)
        output = result.stdout + result.stderr
        assert TOKEN not in output and "unparseable state file" in output and "line " in output, command


# -- data shards linked outside the checkpoint's directory --------------------------------------

def _checkpoint(tf, directory):
    rows = np.arange(64 * 8, dtype=np.float32).reshape(64, 8)
    prefix = tf.train.Checkpoint(v=tf.Variable(rows)).save(str(directory / "ckpt"))
    return prefix, "v/.ATTRIBUTES/VARIABLE_VALUE"


def test_a_data_shard_linked_outside_is_never_read(tmp_path, tf):
    """The partial read returned the secret's bytes as float32 rows (no CRC check covers part of
    a tensor); every read refuses the shard now, naming it, and so do inspect and verify."""
    run = tmp_path / "run"
    run.mkdir()
    prefix, name = _checkpoint(tf, run)
    shard = f"{prefix}.data-00000-of-00001"
    secret = tmp_path / "shadow"
    secret.write_bytes((TOKEN.encode() * 1000)[:os.path.getsize(shard)])
    os.unlink(shard)
    os.symlink(secret, shard)
    with ckpttool.open(prefix) as ckpt:
        with pytest.raises(CkptError, match="outside") as caught:
            ckpt.read(name, index=np.s_[0:2])
        with pytest.raises(CkptError, match="outside"):
            ckpt.read(name)
    assert TOKEN not in str(caught.value) and os.path.basename(shard) in str(caught.value)
    for command in (("inspect", "--values"), ("verify",)):
        result = run_cli(*command, prefix)
        assert "outside" in result.stderr + result.stdout and TOKEN not in result.stdout + result.stderr
        assert result.exit_code in (1, 3), result.stderr


def test_a_data_shard_linked_inside_its_directory_is_read(tmp_path, tf):
    """A link that stays in the directory is followed, as TensorFlow follows it."""
    prefix, name = _checkpoint(tf, tmp_path)
    shard = f"{prefix}.data-00000-of-00001"
    os.rename(shard, tmp_path / "kept.data")
    os.symlink("kept.data", shard)
    want = tf.train.load_checkpoint(prefix).get_tensor(name)
    with ckpttool.open(prefix) as ckpt:
        np.testing.assert_array_equal(ckpt.read(name, index=np.s_[3:5]), want[3:5])
        np.testing.assert_array_equal(ckpt.read(name), want)


def test_the_rule_is_checked_on_the_open_file(fixtures_dir, tmp_path, tf, monkeypatch):
    """A link swapped in between a look at the name and its open (the look here always says
    "no link") is caught all the same: where the opened file really is decides."""
    from ckpttool.storage import fs

    monkeypatch.setattr(fs, "leaves_its_directory", lambda path: False)
    run = _run_with_linked_state(fixtures_dir, tmp_path, SECRETS["parses_as_one"])
    listing = run_cli("ls", "--json", run)
    assert TOKEN not in listing.stdout + listing.stderr and "outside" in listing.stdout
    (tmp_path / "other").mkdir()
    prefix, name = _checkpoint(tf, tmp_path / "other")
    shard = f"{prefix}.data-00000-of-00001"
    os.rename(shard, tmp_path / "elsewhere.data")
    os.symlink(tmp_path / "elsewhere.data", shard)
    with ckpttool.open(prefix) as ckpt, pytest.raises(CkptError, match="outside"):
        ckpt.read(name, index=np.s_[0:2])
