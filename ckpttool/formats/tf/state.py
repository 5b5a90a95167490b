"""The `checkpoint` state file: a text-format CheckpointState (FORMAT.md §1).

Reading never trusts the paths it holds; callers decide what they point at.
The file is read with a cap (STATE_FILE_CAP): TensorFlow's are small (about
100 bytes per checkpoint, so even 100,000 checkpoints with timestamps make
10 MB), and a huge or endless file must not take the tool's memory.
Writing is atomic (storage/atomic.py), so a crash leaves the old file or the new one.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from ckpttool.errors import CorruptCheckpoint
from ckpttool.storage import fs
from ckpttool.storage.fs import read_capped
from ckpttool.formats.tf.proto_errors import text_format_error_text

STATE_FILENAME = "checkpoint"
STATE_FILE_CAP = 64 << 20

_STRING_FIELDS = ("model_checkpoint_path", "all_model_checkpoint_paths")
_NUMBER_FIELDS = ("all_model_checkpoint_timestamps", "last_preserved_timestamp")
# As TensorFlow writes the file: one `field: value` per line, a string without
# escapes or a plain decimal number. Anything else goes to protobuf's parser.
_NUMBER_RE = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|-?inf|nan")


@dataclass(frozen=True)
class CheckpointState:
    model_checkpoint_path: str
    all_model_checkpoint_paths: tuple[str, ...] = ()
    all_model_checkpoint_timestamps: tuple[float, ...] = ()
    last_preserved_timestamp: float = 0.0
    _stamps: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def timestamp_of(self, path: str) -> float | None:
        """The recorded save time of an entry, when the file keeps one per path."""
        if len(self.all_model_checkpoint_timestamps) != len(self.all_model_checkpoint_paths):
            return None
        if not self._stamps and self.all_model_checkpoint_paths:
            # Built once: looking entries up one by one must not be quadratic.
            for entry, stamp in zip(self.all_model_checkpoint_paths, self.all_model_checkpoint_timestamps):
                self._stamps.setdefault(entry, stamp)
        return self._stamps.get(path)


def _parse_plain(text: str) -> CheckpointState | None:
    """The state as TensorFlow writes it, parsed fast; None when the text is
    anything else (escapes, comments, lists ...)."""
    values: dict[str, list] = {name: [] for name in _STRING_FIELDS + _NUMBER_FIELDS}
    number = _NUMBER_RE.fullmatch
    for line in text.split("\n"):
        name, _colon, value = line.partition(":")
        name, value = name.strip(), value.strip()
        if name in _STRING_FIELDS:
            if len(value) < 2 or value[0] != '"' or value[-1] != '"' or '"' in value[1:-1] or "\\" in value:
                return None
            values[name].append(value[1:-1])
        elif name in _NUMBER_FIELDS:
            if not number(value):
                return None
            values[name].append(float(value))
        elif name or _colon or value:
            return None
    return CheckpointState(  # a singular field given twice: the last one, as text_format.Merge does
        (values["model_checkpoint_path"] or [""])[-1],
        tuple(values["all_model_checkpoint_paths"]),
        tuple(values["all_model_checkpoint_timestamps"]),
        (values["last_preserved_timestamp"] or [0.0])[-1],
    )


def parse_state(text: str, source: str = STATE_FILENAME) -> CheckpointState:
    """As tf.train.get_checkpoint_state reads it (text_format.Merge)."""
    plain = _parse_plain(text)
    if plain is not None:
        return plain
    from google.protobuf import text_format

    from ckpttool.formats.tf.protos import checkpoint_pb2

    message = checkpoint_pb2.CheckpointState()
    try:
        text_format.Merge(text, message)
    except text_format.ParseError as exc:
        raise CorruptCheckpoint(f"unparseable state file {source}: {text_format_error_text(exc)}") from None
    return CheckpointState(
        message.model_checkpoint_path,
        tuple(message.all_model_checkpoint_paths),
        tuple(message.all_model_checkpoint_timestamps),
        message.last_preserved_timestamp,
    )


def read_state_file(path: str) -> CheckpointState | None:
    """The state file at `path`, None if there is none; BadInput if unreadable or unparseable, or
    a link to a file outside its directory (never followed)."""
    raw = read_capped(path, STATE_FILE_CAP, "state file", missing_ok=True, inside=True)
    if raw is None:
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise CorruptCheckpoint(f"unparseable state file {path}: not UTF-8 text") from None
    return parse_state(text, path)


def read_state(directory: str) -> CheckpointState | None:
    """The directory's state file, None if there is none; BadInput if unreadable or unparseable."""
    return read_state_file(fs.join(directory, STATE_FILENAME))


def format_state(state: CheckpointState) -> str:
    from google.protobuf import text_format

    from ckpttool.formats.tf.protos import checkpoint_pb2

    message = checkpoint_pb2.CheckpointState(
        model_checkpoint_path=state.model_checkpoint_path,
        all_model_checkpoint_paths=list(state.all_model_checkpoint_paths),
        all_model_checkpoint_timestamps=list(state.all_model_checkpoint_timestamps),
        last_preserved_timestamp=state.last_preserved_timestamp,
    )
    return text_format.MessageToString(message)


def write_state(directory: str, state: CheckpointState) -> None:
    fs.write_atomic(fs.join(directory, STATE_FILENAME), format_state(state).encode("utf-8"))
