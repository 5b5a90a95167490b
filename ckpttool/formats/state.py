"""The `checkpoint` state file: a text-format CheckpointState (FORMAT.md §1).

Reading never trusts the paths it holds; callers decide what they point at.
Writing is atomic (formats/atomic.py), so a crash leaves the old file or the new one.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from ckpttool.errors import CorruptCheckpoint, NotFound
from ckpttool.formats.atomic import write_bytes_atomic

STATE_FILENAME = "checkpoint"


@dataclass(frozen=True)
class CheckpointState:
    model_checkpoint_path: str
    all_model_checkpoint_paths: tuple[str, ...] = ()
    all_model_checkpoint_timestamps: tuple[float, ...] = ()
    last_preserved_timestamp: float = 0.0

    def timestamp_of(self, path: str) -> float | None:
        """The recorded save time of an entry, when the file keeps one per path."""
        if len(self.all_model_checkpoint_timestamps) != len(self.all_model_checkpoint_paths):
            return None
        for entry, stamp in zip(self.all_model_checkpoint_paths, self.all_model_checkpoint_timestamps):
            if entry == path:
                return stamp
        return None


def parse_state(text: str, source: str = STATE_FILENAME) -> CheckpointState:
    from google.protobuf import text_format

    from ckpttool.formats.protos import checkpoint_pb2

    message = checkpoint_pb2.CheckpointState()
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as exc:
        raise CorruptCheckpoint(f"unparseable state file {source}: {exc}") from None
    return CheckpointState(
        message.model_checkpoint_path,
        tuple(message.all_model_checkpoint_paths),
        tuple(message.all_model_checkpoint_timestamps),
        message.last_preserved_timestamp,
    )


def read_state(directory: str) -> CheckpointState | None:
    """The directory's state file, None if there is none; CorruptCheckpoint if unparseable."""
    path = os.path.join(directory, STATE_FILENAME)
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise CorruptCheckpoint(f"state file {path} is a directory") from None
    except OSError as exc:
        raise NotFound(f"cannot read state file {path}: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise CorruptCheckpoint(f"unparseable state file {path}: not UTF-8 text") from None
    return parse_state(text, path)


def format_state(state: CheckpointState) -> str:
    from google.protobuf import text_format

    from ckpttool.formats.protos import checkpoint_pb2

    message = checkpoint_pb2.CheckpointState(
        model_checkpoint_path=state.model_checkpoint_path,
        all_model_checkpoint_paths=list(state.all_model_checkpoint_paths),
        all_model_checkpoint_timestamps=list(state.all_model_checkpoint_timestamps),
        last_preserved_timestamp=state.last_preserved_timestamp,
    )
    return text_format.MessageToString(message)


def write_state(directory: str, state: CheckpointState) -> None:
    write_bytes_atomic(os.path.join(directory, STATE_FILENAME), format_state(state).encode("utf-8"))
