"""The TF-free TensorBoard event reader and the metric sources of retention by quality, with
TensorFlow (summary_iterator, make_ndarray) and Keras (its own logs and ModelCheckpoint names) as
the oracles; damaged, cut and hostile event files."""
from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import pytest

from ckpttool.errors import BadInput, UsageProblem
from ckpttool.formats import tfevents
from ckpttool.formats.tf import crc32c
from ckpttool.ops.retention import metrics


def _tf_scalars(tf, path) -> list[tuple[str, int, float]]:
    """What TensorBoard's scalars are, read by TensorFlow: simple_value, or a rank-0 tensor whose tag's
    first metadata names the scalars plugin (or none)."""
    found, plugins = [], {}
    for event in tf.compat.v1.train.summary_iterator(str(path)):
        for value in event.summary.value:
            if value.metadata.plugin_data.plugin_name:
                plugins.setdefault(value.tag, value.metadata.plugin_data.plugin_name)
            if value.HasField("simple_value"):
                found.append((value.tag, event.step, value.simple_value))
            elif value.HasField("tensor") and plugins.get(value.tag, "scalars") == "scalars":
                array = tf.make_ndarray(value.tensor)
                if array.ndim == 0:
                    found.append((value.tag, event.step, float(array)))
    return found


def _ours(path) -> list[tuple[str, int, float]]:
    return [(s.tag, s.step, s.value) for s in tfevents.iter_scalars(str(path))]


def test_every_scalar_tensorflow_reads(series_dir, tf):
    # (fleet/ holds run directories for tests/test_fleet.py, some of whose event files log no scalar)
    files = sorted(p for p in series_dir.rglob("events.out.tfevents.*") if "fleet" not in p.relative_to(series_dir).parts)
    assert len(files) == 6
    for path in files:
        theirs = _tf_scalars(tf, path)
        assert theirs, path
        assert _ours(path) == theirs, path


def test_large_merged_records_are_streamed_and_their_scalars_kept(series_dir, tf):
    path = next((series_dir / "tf1").glob("events.out.tfevents.*"))
    sizes, data, pos = [], path.read_bytes(), 0
    while pos < len(data):
        length = struct.unpack_from("<Q", data, pos)[0]
        sizes.append(length)
        pos += 16 + length
    assert max(sizes) > tfevents._WHOLE_RECORD  # the image records take the streamed path
    tags = {tag for tag, _, _ in _ours(path)}
    assert {"merged_loss", "merged_twice", "val_loss"} <= tags
    assert "big" not in tags


def test_images_histograms_and_text_are_not_scalars(series_dir):
    tags = {tag for tag, _, _ in _ours(next((series_dir / "tf2").glob("events.out.tfevents.*")))}
    assert tags == {"loss", "acc"}


def test_keras_logs_align_with_modelcheckpoint_epochs(series_dir):
    """Keras itself says how its epochs line up: ModelCheckpoint names the file for {epoch}=k with the
    logs of epoch k-1, which TensorBoard and CSVLogger record as epoch k-1."""
    history = json.loads((series_dir / "keras" / "history.json").read_text())
    from_events = metrics.read_metric(str(series_dir / "keras"), "val_loss", events_dir=str(series_dir / "keras" / "logs"))
    from_csv = metrics.read_metrics_file(str(series_dir / "keras" / "log.csv"), "val_loss")
    for series in (from_events, from_csv):
        assert series.zero_based_epochs
        assert [series.values[e] for e in range(4)] == pytest.approx(history["val_loss"], rel=1e-6)
    assert "validation" in from_events.source and "epoch_loss" in from_events.source
    pattern = metrics.NamePattern.parse("w.{epoch:02d}-{val_loss:.2f}.weights.h5")
    files = sorted((series_dir / "keras" / "ckpt").iterdir())
    assert len(files) == 4
    for path in files:
        fields = pattern.match(path.name)
        epoch = int(fields["epoch"])
        assert round(from_events.score_at(epoch, keras_epoch=True), 2) == fields["val_loss"]
        assert round(from_csv.score_at(epoch, keras_epoch=True), 2) == pattern.score(path.name, "val_loss")
    train_loss = metrics.read_events(str(series_dir / "keras" / "logs"), "loss")
    assert [train_loss.values[e] for e in range(4)] == pytest.approx(history["loss"], rel=1e-6)


def test_tags_name_runs_and_ambiguity_is_refused(series_dir):
    logs = str(series_dir / "keras" / "logs")
    assert metrics.read_events(logs, "validation/epoch_accuracy").values
    with pytest.raises(UsageProblem, match="train/epoch_loss, validation/epoch_loss"):
        metrics.read_events(logs, "epoch_loss")
    with pytest.raises(BadInput, match="validation/epoch_loss"):  # names the tags that exist
        metrics.read_events(logs, "val_f1")


def test_restarted_run_last_written_value_wins(series_dir, tf):
    series = metrics.read_events(str(series_dir / "restart"), "loss")
    assert series.values == {s: (100.0 + s if s >= 5 else float(s)) for s in range(10)}


def _records(path: Path) -> list[tuple[int, int]]:
    """(offset, length) of each record."""
    data, pos, out = path.read_bytes(), 0, []
    while pos < len(data):
        length = struct.unpack_from("<Q", data, pos)[0]
        out.append((pos, length))
        pos += 16 + length
    return out


@pytest.fixture
def tf2_events(series_dir, tmp_path) -> Path:
    source = next((series_dir / "tf2").glob("events.out.tfevents.*"))
    copy = tmp_path / source.name
    copy.write_bytes(source.read_bytes())
    return copy


def test_a_record_cut_short_ends_the_file_quietly(tf2_events, tf):
    full = _ours(tf2_events)
    offset, length = _records(tf2_events)[-1]
    data = tf2_events.read_bytes()
    tf2_events.write_bytes(data[:offset + 12 + length // 2])  # a writer still at work
    report = tfevents.EventFileReport(str(tf2_events))
    cut = [(s.tag, s.step, s.value) for s in tfevents.iter_scalars(str(tf2_events), report)]
    assert report.cut_short and report.cut_at == offset and not report.warnings and not report.damage
    assert cut == full[:len(cut)] and len(cut) >= len(full) - 2


def test_a_record_failing_its_crc_is_skipped_with_one_warning(tf2_events, tf):
    records = _records(tf2_events)
    data = bytearray(tf2_events.read_bytes())
    damaged = [records[3], records[7]]
    for offset, length in damaged:
        data[offset + 12 + length - 1] ^= 0xFF
    tf2_events.write_bytes(bytes(data))
    report = tfevents.EventFileReport(str(tf2_events))
    ours = [(s.tag, s.step, s.value) for s in tfevents.iter_scalars(str(tf2_events), report)]
    assert report.damaged_records == 2 and report.first_damaged == records[3][0]
    assert [(d.path, d.offset) for d in report.damage] == [(str(tf2_events), records[3][0])]
    assert len(report.warnings) == 1 and "2 damaged records" in report.warnings[0]
    with pytest.raises(tf.errors.DataLossError):  # TensorFlow gives up at the first one
        _tf_scalars(tf, tf2_events)
    # the rest equals TensorFlow's reading of the file without the damaged records
    clean = tf2_events.parent / "clean.tfevents.1"
    clean.write_bytes(b"".join(bytes(data[o:o + 16 + n]) for o, n in records if (o, n) not in damaged))
    assert ours == _tf_scalars(tf, clean)


def test_a_length_failing_its_crc_ends_the_file_with_a_warning(tf2_events):
    offset, _ = _records(tf2_events)[5]
    data = bytearray(tf2_events.read_bytes())
    data[offset] ^= 0x40
    tf2_events.write_bytes(bytes(data))
    report = tfevents.EventFileReport(str(tf2_events))
    list(tfevents.iter_scalars(str(tf2_events), report))
    assert report.unframed_tail and report.records == 5 and len(report.warnings) == 1
    assert [(d.path, d.offset) for d in report.damage] == [(str(tf2_events), offset)]


def _record(payload: bytes, length: int | None = None) -> bytes:
    head = struct.pack("<Q", len(payload) if length is None else length)
    return (head + struct.pack("<I", crc32c.mask(crc32c.crc32c(head))) + payload
            + struct.pack("<I", crc32c.mask(crc32c.crc32c(payload))))


def test_hostile_event_files_are_bounded(tmp_path):
    huge = tmp_path / "events.out.tfevents.1.huge"
    huge.write_bytes(_record(b"\x10\x01", length=1 << 39)[:20])  # claims 512 GiB, holds 4 bytes
    report = tfevents.EventFileReport(str(huge))
    assert list(tfevents.iter_scalars(str(huge), report)) == [] and report.cut_short
    garbage = tmp_path / "events.out.tfevents.2.garbage"
    garbage.write_bytes(b"\xff" * 4096)
    report = tfevents.EventFileReport(str(garbage))
    assert list(tfevents.iter_scalars(str(garbage), report)) == [] and report.unframed_tail
    # records whose CRCs hold but whose bytes are no Event: skipped, counted
    nonsense = tmp_path / "events.out.tfevents.3.nonsense"
    nonsense.write_bytes(_record(b"\x2a\xff\xff\xff\xff\x0f") + _record(b"\x0f" * 40)
                         + _record(b"\x2a\x03\x0a\x01"))
    report = tfevents.EventFileReport(str(nonsense))
    assert list(tfevents.iter_scalars(str(nonsense), report)) == [] and report.damaged_records == 3


def test_non_finite_scores_are_no_scores(tmp_path, tf):
    writer = tf.summary.create_file_writer(str(tmp_path))
    with writer.as_default():
        for step, value in enumerate([0.5, math.nan, math.inf, 0.25]):
            tf.summary.scalar("val_loss", value, step=step)
    writer.close()
    series = metrics.read_events(str(tmp_path), "val_loss")
    assert series.values == {0: 0.5, 3: 0.25}
    assert any("not finite" in w for w in series.warnings)


def test_metrics_files(tmp_path):
    jsonl = tmp_path / "m.jsonl"
    jsonl.write_text('{"step": 100, "eval/acc": 0.5}\n{"step": 200, "eval/acc": 0.75}\n{"step": 300, "ev')
    series = metrics.read_metrics_file(str(jsonl), "eval/acc")
    assert series.values == {100: 0.5, 200: 0.75} and not series.zero_based_epochs
    # a line that cannot be read is damage (its byte offset named), the others still score
    for text, offset, message, values in (
            (b'{"step": 1, "a": 1}\nnot json\n{"step": 2, "a": 2}\n', 20, "line 2: not a JSON object", {1: 1, 2: 2}),
            (b'{"step": 1, "a": 1}\n{"step": "x", "a": 5}\n', 20, "line 2: step is not a number", {1: 1}),
            (b'{"step": 1, "a": 1}\n[1, 2]\n{"step": 3, "a": 9}\n', 20, "line 2: not a JSON object", {1: 1, 3: 9}),
            (b"step,a\n1,2\n2\n3,4\n", 11, "line 3: wrong number of columns", {1: 2, 3: 4}),
            (b'{"step": 1, "a": 1}\n{"step": 2, "a": 1\xe9}\n', 20, "line 2: not a JSON object", {1: 1})):
        damaged = tmp_path / "damaged.txt"
        damaged.write_bytes(text)
        series = metrics.read_metrics_file(str(damaged), "a")
        assert series.values == values
        assert [(d.path, d.offset) for d in series.damage] == [(str(damaged), offset)]
        assert message in series.damage[0].message and "byte" in series.damage[0].message
    # nothing readable at all, or not a metrics file: BadInput
    for text, message in (('{"step": "x", "a": 1}\n', "not a number"),
                          ('{"step": 1.5, "a": 1}\n', "whole number"),
                          ('{"a": 1}\n', "no step or epoch"),
                          ("a,b\n1,2\n", "step or epoch column"),
                          ('{"step": 1, "b": 1}\n', "has no 'a' \\(it has b\\)"),
                          ("[" * 100000, "step or epoch column"),
                          ("{" * 100000 + "\n", "line 1")):
        bad = tmp_path / "bad.txt"
        bad.write_text(text)
        with pytest.raises(BadInput, match=message):
            metrics.read_metrics_file(str(bad), "a")
    (tmp_path / "binary").write_bytes(b"\xff\xfe")
    with pytest.raises(BadInput, match="UTF-8"):
        metrics.read_metrics_file(str(tmp_path / "binary"), "a")
    # a CSV's last line without its newline is still being written (its last value may be cut): not read
    live = tmp_path / "live.csv"
    live.write_text("step,a\n1,0.5\n2,0.2")
    series = metrics.read_metrics_file(str(live), "a")
    assert series.values == {1: 0.5} and not series.damage and any("line 3" in w for w in series.warnings)


def test_trainer_state_of_the_newest_checkpoint(tmp_path):
    for step in (500, 1000):
        directory = tmp_path / f"checkpoint-{step}"
        directory.mkdir()
        history = [{"step": s, "eval_loss": 1.0 / s, "epoch": s / 500} for s in range(500, step + 1, 500)]
        (directory / "trainer_state.json").write_text(json.dumps({"log_history": history, "global_step": step}))
    assert metrics.find_trainer_state(str(tmp_path)).endswith("checkpoint-1000/trainer_state.json")
    series = metrics.read_metric(str(tmp_path), "eval_loss")
    assert series.values == {500: 1 / 500, 1000: 1 / 1000}


def test_mode_auto_as_keras():
    assert metrics.infer_mode("val_accuracy") == "max"
    assert metrics.infer_mode("validation/epoch_loss") == "min"
    assert metrics.infer_mode("eval_auc") == "max"
    assert metrics.infer_mode("acc", "min") == "min"
    with pytest.raises(UsageProblem, match="--mode"):
        metrics.infer_mode("val_widgets")


def test_name_patterns():
    pattern = metrics.NamePattern.parse("weights.{epoch:02d}-{val_loss:.2f}.weights.h5")
    assert pattern.match("weights.07-0.35.weights.h5") == {"epoch": 7.0, "val_loss": 0.35}
    assert pattern.match("weights.07-0.35.weights.h5.tmp") is None
    assert pattern.score("weights.03-nan.weights.h5", "val_loss") is None
    with pytest.raises(UsageProblem):
        pattern.score("weights.07-0.35.weights.h5", "val_acc")
    with pytest.raises(UsageProblem):
        metrics.NamePattern.parse("no-fields.weights.h5")


def test_an_event_file_named_exactly_events_out_tfevents_is_read(tmp_path, tf):
    """CatBoost names its event file `events.out.tfevents`, nothing after it; TensorBoard reads any
    file whose name holds `tfevents` (io_wrapper.IsTensorFlowEventsFile), so the metric readers do
    too: its scalars are those TensorFlow's summary_iterator reads."""
    written = tmp_path / "written"
    writer = tf.summary.create_file_writer(str(written))
    with writer.as_default():
        for step, value in enumerate([0.75, 0.5, 0.625]):
            tf.summary.scalar("val_loss", value, step=step)
    writer.close()
    run = tmp_path / "catboost_info"
    run.mkdir()
    (run / "events.out.tfevents").write_bytes(next(written.iterdir()).read_bytes())
    expected = {step: value for tag, step, value in _tf_scalars(tf, run / "events.out.tfevents")
                if tag == "val_loss"}
    assert len(expected) == 3
    assert tfevents.find_event_files(str(run)) == {"": [str(run / "events.out.tfevents")]}
    series = metrics.read_events(str(run), "val_loss")
    assert series is not None and series.values == expected
