"""TensorBoard event files (`events.out.tfevents.*`), read for their scalars without TensorFlow.

A file is an event file when its name holds `tfevents`, as TensorBoard decides
(tensorboard/backend/event_processing/io_wrapper.py, IsTensorFlowEventsFile): TensorFlow names its
files `events.out.tfevents.<time>.<host>...`, CatBoost names its one `events.out.tfevents`.

An event file is a TFRecord stream (as tensorflow/core/lib/io/record_writer.cc writes it):

    uint64 length (LE) | uint32 masked CRC-32C of those 8 bytes | data | uint32 masked CRC-32C of data

and each record's data is a serialized `tensorflow.Event` (tensorflow/core/util/event.proto):
wall_time (1, double), step (2, int64), summary (5, Summary); a Summary holds repeated Value (1):
tag (1), simple_value (2, float: TF1 `tf.compat.v1.summary.scalar`), tensor (8, TensorProto: TF2
`tf.summary.scalar` and Keras' TensorBoard callback) and metadata (9, SummaryMetadata: plugin_data (1)
→ plugin_name (1)). TensorFlow writes a tag's metadata with its first value only (TensorBoard's
data_compat relies on the same), so a file's plugin names are remembered per tag.

What is read, and what is not:
- scalars: `simple_value`, and rank-0 numeric tensors of the "scalars" plugin (or of no plugin);
  other values (images, histograms, audio, text, tensors of other plugins) are skipped undecoded;
- in bounded memory: a record is read whole only up to `_WHOLE_RECORD` and parsed with protobuf
  (our mirror of those messages, formats/tf/protos/events.proto); a larger one (a merged TF1
  summary holding images) is streamed, framed by hand, its CRC computed piece by piece and only
  its small Summary.Values parsed;
- a record cut short at the end of the file ends the file quietly, its offset noted (`cut_at`):
  whether that is a writer still at work or a lost record, the caller decides (ops/retention/metrics: only
  the newest file of a run has a live end);
- a record whose data fails its CRC (or whose bytes are no Event) is skipped, and a length that
  fails its CRC ends the file (nothing after it can be framed): both are damage, reported once per
  file with the byte offset of the first such record (`damage`, `warnings`).
"""
from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from typing import BinaryIO, Callable, Iterator, NamedTuple

import google_crc32c

from ckpttool.errors import BadInput
from ckpttool.formats.damage import Damage
from ckpttool.formats.tf import crc32c as crc
from ckpttool.storage import fs

_HEADER = struct.Struct("<QI")
_DOUBLE = struct.Struct("<d")
_FOOTER = struct.Struct("<I")
_WHOLE_RECORD = 1 << 20  # records up to this size are read at once; larger ones are streamed
_VALUE_CAP = 64 << 10  # a Summary.Value larger than this holds no scalar: skipped unread
_STREAM_PIECE = 1 << 20
_READ_PIECE = 4 << 20
_MAX_RECORD = 1 << 40  # a length beyond this is not a record (a damaged or foreign file)

# tensorflow DataType codes of the numeric dtypes a scalar summary may hold
_DT_FLOAT, _DT_DOUBLE, _DT_INT32, _DT_UINT8, _DT_INT16, _DT_INT8 = 1, 2, 3, 4, 5, 6
_DT_INT64, _DT_BOOL, _DT_BFLOAT16, _DT_UINT16, _DT_HALF, _DT_UINT32, _DT_UINT64 = 9, 10, 14, 17, 19, 22, 23
_CONTENT_FORMATS = {_DT_FLOAT: "<f", _DT_DOUBLE: "<d", _DT_INT32: "<i", _DT_UINT8: "<B", _DT_INT16: "<h",
                    _DT_INT8: "<b", _DT_INT64: "<q", _DT_BOOL: "<?", _DT_UINT16: "<H", _DT_HALF: "<e",
                    _DT_UINT32: "<I", _DT_UINT64: "<Q"}
_SCALARS_PLUGIN = b"scalars"


class Scalar(NamedTuple):  # a tuple: a long log makes millions of them
    tag: str
    step: int
    value: float
    wall_time: float


@dataclass
class EventFileReport:
    """What reading one file met besides scalars (filled while its scalars are iterated); offsets are
    those of a record's first byte (its length)."""
    path: str
    records: int = 0
    damaged_records: int = 0  # records skipped: their data failed its CRC, or was no Event
    first_damaged: int | None = None
    unframed_at: int | None = None  # a length failed its CRC here: the rest of the file was not read
    cut_at: int | None = None  # the file ends inside the record starting here
    max_step: int | None = None  # the highest step of a record read whole and undamaged (any event, not only scalars)

    @property
    def unframed_tail(self) -> bool:
        return self.unframed_at is not None

    @property
    def cut_short(self) -> bool:
        return self.cut_at is not None

    @property
    def damage(self) -> list[Damage]:
        """Records skipped and a tail that cannot be framed (a cut last record is not judged here)."""
        found = []
        if self.damaged_records:
            count = self.damaged_records
            found.append(Damage(self.path, self.first_damaged, f"{count} damaged record{'s' if count != 1 else ''} "
                                f"(failing {'its' if count == 1 else 'their'} CRC, or no event) skipped"
                                + ("; the first at this offset" if count != 1 else "")))
        if self.unframed_at is not None:
            found.append(Damage(self.path, self.unframed_at, f"a record's length fails its checksum after "
                                f"{self.records} records: the rest of the file cannot be read"))
        return found

    @property
    def warnings(self) -> list[str]:
        return [d.message for d in self.damage]


def is_event_file(name: str) -> bool:
    """TensorBoard's test: `tfevents` anywhere in the file's name."""
    return "tfevents" in name


class _Malformed(Exception):
    """A record whose bytes pass their CRC but do not parse as an Event: skipped."""


def _pb():
    from ckpttool.formats.tf.protos import events_pb2

    return events_pb2


def _decode_errors() -> tuple[type[BaseException], ...]:
    from google.protobuf.message import DecodeError

    return DecodeError, RecursionError, _Malformed


def _tensor_scalar(tensor) -> float | None:
    """The value of a rank-0 numeric TensorProto, None for anything else."""
    dtype = tensor.dtype
    if tensor.HasField("tensor_shape") and (tensor.tensor_shape.dim or tensor.tensor_shape.unknown_rank):
        return None
    content = tensor.tensor_content
    if content:
        if dtype == _DT_BFLOAT16:
            return struct.unpack("<f", b"\0\0" + content)[0] if len(content) == 2 else None
        fmt = _CONTENT_FORMATS.get(dtype)
        return float(struct.unpack(fmt, content)[0]) if fmt and len(content) == struct.calcsize(fmt) else None
    if dtype in (_DT_FLOAT,):
        listed = tensor.float_val
    elif dtype == _DT_DOUBLE:
        listed = tensor.double_val
    elif dtype in (_DT_INT32, _DT_UINT8, _DT_INT16, _DT_INT8, _DT_UINT16):
        listed = tensor.int_val
    elif dtype == _DT_INT64:
        listed = tensor.int64_val
    elif dtype == _DT_BOOL:
        listed = tensor.bool_val
    elif dtype == _DT_UINT32:
        listed = tensor.uint32_val
    elif dtype == _DT_UINT64:
        listed = tensor.uint64_val
    elif dtype in (_DT_HALF, _DT_BFLOAT16):  # half_val holds the 16 bits in an int
        if not tensor.half_val:
            return None
        bits = tensor.half_val[-1] & 0xFFFF
        return (struct.unpack("<e", bits.to_bytes(2, "little"))[0] if dtype == _DT_HALF
                else struct.unpack("<f", (bits << 16).to_bytes(4, "little"))[0])
    else:
        return None
    return float(listed[-1]) if listed else None  # TensorProto repeats the last value to fill a shape


class _Reader:
    """The scalars of parsed Summary.Values, with the per-file memory of tags' plugin names and of
    which tags are wanted (asked once per tag)."""

    def __init__(self, wanted: Callable[[str], bool] | None):
        events = _pb()
        self.tag_of, self.parse_value = events.ValueTag.FromString, events.Summary.Value.FromString
        self.plugins: dict[bytes, bytes] = {}
        self.names: dict[bytes, str | None] = {}  # tag bytes -> text, None when not wanted
        self.wanted = wanted

    def _name(self, tag: bytes) -> str | None:
        name = self.names.get(tag, False)
        if name is False:
            text = tag.decode("utf-8", "replace")
            name = self.names[tag] = text if self.wanted is None or self.wanted(text) else None
        return name

    def value_of_bytes(self, data: bytes) -> tuple[str, float] | None:
        """The scalar of a serialized Summary.Value, parsed only when its tag is wanted."""
        tag = self.tag_of(data).tag
        if self.names.get(tag, False) is None:
            return None  # a tag not wanted: nothing more to parse
        return self.value(self.parse_value(data))

    def value(self, value) -> tuple[str, float] | None:
        # Each attribute of a parsed message costs a wrapper object: look at as few as the answer needs.
        tag = value.tag
        plugin = self.plugins.get(tag)
        if plugin is None and value.HasField("metadata"):
            plugin = self.plugins[tag] = value.metadata.plugin_data.plugin_name
        name = self.names.get(tag, False)
        if name is False:
            name = self._name(tag)
        if name is None:
            return None
        kind = value.WhichOneof("value")
        if kind == "simple_value":
            return name, float(value.simple_value)
        if kind != "tensor" or plugin not in (None, b"", _SCALARS_PLUGIN):
            return None  # images, histograms, text ... keep their own plugin's tags
        number = _tensor_scalar(value.tensor)
        return None if number is None else (name, number)


class _Buffered:
    """Reads of a few bytes served from large reads of the file (three per record otherwise)."""

    def __init__(self, raw: BinaryIO):
        self.raw, self.buffer, self.pos = raw, b"", 0

    def read(self, count: int) -> bytes:
        end = self.pos + count
        if end <= len(self.buffer):
            data = self.buffer[self.pos:end]
            self.pos = end
            return data
        rest = self.buffer[self.pos:]
        if count - len(rest) >= _READ_PIECE:
            self.buffer, self.pos = b"", 0
            return rest + self.raw.read(count - len(rest))
        self.buffer = rest + self.raw.read(_READ_PIECE)
        data = self.buffer[:count]
        self.pos = len(data)
        return data


class _StreamedRecord:
    """A record too large to hold, read in pieces: keeps a running CRC and hands out only what the
    parser asks to keep (an Event's small fields and its small Summary.Values)."""

    def __init__(self, stream: BinaryIO, length: int):
        self.stream, self.left, self.crc = stream, length, 0
        self.buffer = b""

    def _fill(self, want: int) -> bool:
        while len(self.buffer) < want and self.left:
            piece = self.stream.read(min(_STREAM_PIECE, self.left))
            if not piece:
                raise EOFError
            self.left -= len(piece)
            self.crc = crc.extend(self.crc, piece)
            self.buffer += piece
        return len(self.buffer) >= want

    def take(self, count: int) -> bytes:
        if not self._fill(count):
            raise _Malformed
        data, self.buffer = self.buffer[:count], self.buffer[count:]
        return data

    def varint(self) -> int:
        result = shift = 0
        while True:
            byte = self.take(1)[0]
            result |= (byte & 0x7F) << shift
            if byte < 0x80:
                return result
            shift += 7
            if shift >= 64:
                raise _Malformed

    def skip(self, count: int) -> None:
        if count <= len(self.buffer):
            self.buffer = self.buffer[count:]
            return
        count -= len(self.buffer)
        self.buffer = b""
        if count > self.left:
            raise _Malformed
        while count:
            piece = self.stream.read(min(_STREAM_PIECE, count))
            if not piece:
                raise EOFError
            count -= len(piece)
            self.left -= len(piece)
            self.crc = crc.extend(self.crc, piece)

    def drain(self) -> int:
        """Reads what the parser left; the whole record's CRC."""
        self.skip(len(self.buffer) + self.left)
        return self.crc

    @property
    def position_left(self) -> int:
        return len(self.buffer) + self.left


def _streamed_event(record: _StreamedRecord, reader: _Reader) -> tuple[float, int, list[tuple[str, float]]]:
    wall_time, step, found = 0.0, 0, []
    while record.position_left:
        key = record.varint()
        number, wire_type = key >> 3, key & 7
        if number == 1 and wire_type == 1:
            wall_time = struct.unpack("<d", record.take(8))[0]
        elif number == 2 and wire_type == 0:
            step = record.varint()
            step = step - (1 << 64) if step >= 1 << 63 else step
        elif number == 5 and wire_type == 2:
            left = record.varint()
            while left > 0:
                before = record.position_left
                inner_key = record.varint()
                if inner_key & 7 != 2:
                    raise _Malformed
                length = record.varint()
                if inner_key >> 3 == 1 and length <= _VALUE_CAP:
                    value = reader.value_of_bytes(record.take(length))
                    if value is not None:
                        found.append(value)
                else:
                    record.skip(length)
                left -= before - record.position_left
            if left < 0:
                raise _Malformed
        elif wire_type == 2:
            record.skip(record.varint())
        elif wire_type == 0:
            record.varint()
        elif wire_type in (1, 5):
            record.skip(8 if wire_type == 1 else 4)
        else:
            raise _Malformed
    return wall_time, step, found


def iter_scalars(path: str, report: EventFileReport | None = None,
                 wanted: Callable[[str], bool] | None = None) -> Iterator[Scalar]:
    """Every scalar in one event file, in file order (only those of tags `wanted` says yes to)."""
    report = report if report is not None else EventFileReport(path)
    reader = _Reader(wanted)
    events = _pb()
    parse_event, parse_summary = events.EventFrame.FromString, events.SummaryFrame.FromString
    decode_errors = _decode_errors()
    raw = fs.open_input(path, "event file")
    stream = _Buffered(raw)
    checksum, masked, unpack_header, unpack_footer = google_crc32c.value, crc.mask, _HEADER.unpack, _FOOTER.unpack
    position = 0  # of the next record

    def damaged(start: int) -> None:
        report.damaged_records += 1
        if report.first_damaged is None:
            report.first_damaged = start

    try:
        while True:
            start = position
            head = stream.read(_HEADER.size)
            if not head:
                return
            if len(head) < _HEADER.size:
                report.cut_at = start
                return
            length, length_crc = unpack_header(head)
            if masked(checksum(head[:8])) != length_crc or length > _MAX_RECORD:
                report.unframed_at = start
                return
            report.records += 1
            position = start + _HEADER.size + length + _FOOTER.size
            try:
                if length <= _WHOLE_RECORD:
                    data = stream.read(length)
                    footer = stream.read(_FOOTER.size)
                    if len(data) < length or len(footer) < _FOOTER.size:
                        report.cut_at = start
                        return
                    if masked(checksum(data)) != unpack_footer(footer)[0]:
                        damaged(start)
                        continue
                    try:
                        event = parse_event(data)
                        wall_time, step, summary = event.wall_time, event.step, event.summary
                        found = [v for value in parse_summary(summary).value
                                 if (v := reader.value_of_bytes(value)) is not None] if summary else []
                    except decode_errors:
                        damaged(start)
                        continue
                else:
                    record = _StreamedRecord(stream, length)
                    try:
                        wall_time, step, found = _streamed_event(record, reader)
                    except (struct.error, *decode_errors):
                        found = None
                    record_crc = record.drain()
                    footer = stream.read(_FOOTER.size)
                    if len(footer) < _FOOTER.size:
                        report.cut_at = start
                        return
                    if found is None or crc.mask(record_crc) != _FOOTER.unpack(footer)[0]:
                        damaged(start)
                        continue
            except EOFError:
                report.cut_at = start
                return
            if report.max_step is None or step > report.max_step:
                report.max_step = step
            for tag, value in found:
                yield Scalar(tag, step, value, wall_time)
    finally:
        raw.close()


_FILE_ORDER_RE = re.compile(r"tfevents\.(\d+)")


def event_file_order(name: str) -> tuple[int, str]:
    """Files of one run in the order they were written: by the creation time in their name."""
    match = _FILE_ORDER_RE.search(name)
    return (int(match[1]) if match else 0, name)


def find_event_files(root: str, max_depth: int = 4,
                     another_run: Callable[[str, list[fs.Entry]], bool] | None = None,
                     skipped: list[str] | None = None) -> dict[str, list[str]]:
    """Event files under root, by run: the directory that holds them, relative to root ("" for root
    itself, `train`, `validation`, `eval` ...), each run's files in writing order. Symlinked
    directories are not followed; depth is bounded (a run keeps its events a level or two down).
    A directory below root that `another_run(path, its entries)` says is not root's (it holds
    checkpoints of its own) is not entered: its path goes to `skipped`."""
    runs: dict[str, list[str]] = {}

    def visit(directory: str, relative: str, depth: int) -> None:
        try:
            entries = fs.list_dir(directory)
        except (BadInput, OSError):
            return
        if relative and another_run is not None and another_run(directory, entries):
            if skipped is not None:
                skipped.append(directory)
            return
        for entry in sorted(entries, key=lambda e: e.name):
            if entry.name in ("", ".", "..") or "/" in entry.name:
                continue  # an object key that would lead elsewhere: never followed
            if entry.kind == "file" and is_event_file(entry.name):
                runs.setdefault(relative, []).append(fs.join(directory, entry.name))
            elif entry.kind == "dir" and depth < max_depth:
                visit(fs.join(directory, entry.name), f"{relative}/{entry.name}" if relative else entry.name,
                      depth + 1)
    visit(root, "", 0)
    for files in runs.values():
        files.sort(key=lambda p: event_file_order(fs.basename(p)))
    return runs
