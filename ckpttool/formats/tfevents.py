"""TensorBoard event files (`events.out.tfevents.*`), read for their scalars without TensorFlow.

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
- the decoding is by hand over the few fields above (no protobuf import), in bounded memory: a
  record is read whole only up to `_WHOLE_RECORD`; a larger one (a merged TF1 summary holding
  images) is streamed, its CRC computed piece by piece and only its small values kept;
- a record cut short at the end of the file (a writer still running) ends the file quietly;
- a record whose data fails its CRC is skipped, and a length that fails its CRC ends the file
  (nothing after it can be framed): both are reported once per file through `warnings`.
"""
from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from typing import BinaryIO, Iterator

from ckpttool.errors import BadInput
from ckpttool.formats.tf import crc32c as crc
from ckpttool.storage import fs

EVENT_FILE_RE = re.compile(r"(^|\.)tfevents\.")
_HEADER = struct.Struct("<QI")
_FOOTER = struct.Struct("<I")
_WHOLE_RECORD = 1 << 20  # records up to this size are read at once; larger ones are streamed
_VALUE_CAP = 1 << 20  # a Summary.Value larger than this holds no scalar: skipped unread
_STREAM_PIECE = 1 << 20
_MAX_RECORD = 1 << 40  # a length beyond this is not a record (a damaged or foreign file)

# tensorflow DataType codes of the numeric dtypes a scalar summary may hold
_DT_FLOAT, _DT_DOUBLE, _DT_INT32, _DT_UINT8, _DT_INT16, _DT_INT8 = 1, 2, 3, 4, 5, 6
_DT_INT64, _DT_BOOL, _DT_BFLOAT16, _DT_UINT16, _DT_HALF, _DT_UINT32, _DT_UINT64 = 9, 10, 14, 17, 19, 22, 23
_CONTENT_FORMATS = {_DT_FLOAT: "<f", _DT_DOUBLE: "<d", _DT_INT32: "<i", _DT_UINT8: "<B", _DT_INT16: "<h",
                    _DT_INT8: "<b", _DT_INT64: "<q", _DT_BOOL: "<?", _DT_UINT16: "<H", _DT_HALF: "<e",
                    _DT_UINT32: "<I", _DT_UINT64: "<Q"}
_SCALARS_PLUGIN = "scalars"


@dataclass(frozen=True)
class Scalar:
    tag: str
    step: int
    value: float
    wall_time: float


@dataclass
class EventFileReport:
    """What reading one file met besides scalars (filled while its scalars are iterated)."""
    path: str
    records: int = 0
    damaged_records: int = 0
    unframed_tail: bool = False  # a length failed its CRC: the rest of the file was not read
    cut_short: bool = False  # the last record is incomplete (a live writer)
    warnings: list[str] = field(default_factory=list)


def is_event_file(name: str) -> bool:
    return EVENT_FILE_RE.search(name) is not None


class _Malformed(Exception):
    """A record whose bytes pass their CRC but do not parse as an Event: skipped."""


def _varint(buf, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end or shift >= 64:
            raise _Malformed
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _skip(buf, pos: int, end: int, wire_type: int) -> int:
    if wire_type == 0:
        return _varint(buf, pos, end)[1]
    if wire_type == 1:
        pos += 8
    elif wire_type == 2:
        length, pos = _varint(buf, pos, end)
        pos += length
    elif wire_type == 5:
        pos += 4
    else:
        raise _Malformed
    if pos > end:
        raise _Malformed
    return pos


def _fields(buf, pos: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """(field number, wire type, start, end) of each field in buf[pos:end]; for varints and fixed
    fields start..end is the encoded value, for length-delimited ones the payload."""
    while pos < end:
        key, pos = _varint(buf, pos, end)
        number, wire_type = key >> 3, key & 7
        if wire_type == 2:
            length, start = _varint(buf, pos, end)
            pos = start + length
            if pos > end:
                raise _Malformed
            yield number, wire_type, start, pos
        else:
            start = pos
            pos = _skip(buf, pos, end, wire_type)
            yield number, wire_type, start, pos


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _plugin_name(buf, start: int, end: int) -> str | None:
    for number, wire_type, a, b in _fields(buf, start, end):
        if number == 1 and wire_type == 2:  # SummaryMetadata.plugin_data
            for n2, w2, c, d in _fields(buf, a, b):
                if n2 == 1 and w2 == 2:  # PluginData.plugin_name
                    return bytes(buf[c:d]).decode("utf-8", "replace")
            return ""
    return None


def _tensor_scalar(buf, start: int, end: int) -> float | None:
    """The value of a rank-0 numeric TensorProto, None for anything else."""
    dtype = 0
    rank = 0
    content = None
    listed: list[float] = []
    for number, wire_type, a, b in _fields(buf, start, end):
        if number == 1 and wire_type == 0:
            dtype = _varint(buf, a, b)[0]
        elif number == 2 and wire_type == 2:  # tensor_shape: count its dims (a scalar has none)
            for n2, w2, _c, _d in _fields(buf, a, b):
                if n2 == 2 and w2 == 2:
                    rank += 1
                elif n2 == 3 and w2 == 0 and _varint(buf, _c, _d)[0]:  # unknown_rank
                    return None
        elif number == 4 and wire_type == 2:
            content = bytes(buf[a:b])
        elif number in (5, 6, 7, 10, 11, 13, 16, 17):
            listed.extend(_listed_values(buf, number, wire_type, a, b, dtype))
    if rank or dtype not in _CONTENT_FORMATS and dtype != _DT_BFLOAT16:
        return None
    if content is not None:
        if dtype == _DT_BFLOAT16:
            return struct.unpack("<f", b"\0\0" + content)[0] if len(content) == 2 else None
        fmt = _CONTENT_FORMATS[dtype]
        return float(struct.unpack(fmt, content)[0]) if len(content) == struct.calcsize(fmt) else None
    if dtype in (_DT_HALF, _DT_BFLOAT16) and listed:  # half_val holds the 16 bits in an int
        bits = int(listed[-1]) & 0xFFFF
        return (struct.unpack("<e", bits.to_bytes(2, "little"))[0] if dtype == _DT_HALF
                else struct.unpack("<f", (bits << 16).to_bytes(4, "little"))[0])
    return float(listed[-1]) if listed else None


def _listed_values(buf, number: int, wire_type: int, a: int, b: int, dtype: int) -> list[float]:
    """The *_val fields of a TensorProto: float_val (5), double_val (6), int_val (7, also the 8/16-bit
    and bool types), int64_val (10), bool_val (11), half_val (13), uint32_val (16), uint64_val (17)."""
    if number == 5:
        fmt, size = "<f", 4
    elif number == 6:
        fmt, size = "<d", 8
    else:
        fmt, size = None, 0
    if fmt is not None:
        if wire_type == 2:  # packed
            count = (b - a) // size
            return list(struct.unpack_from(f"<{count}{fmt[1]}", buf, a)) if count else []
        return [struct.unpack_from(fmt, buf, a)[0]] if wire_type in (1, 5) else []
    values = []
    if wire_type == 2:
        pos = a
        while pos < b:
            value, pos = _varint(buf, pos, b)
            values.append(value)
    elif wire_type == 0:
        values.append(_varint(buf, a, b)[0])
    if number in (7, 10):
        bits = 64 if number == 10 else 32
        values = [v - (1 << 64) if v >= 1 << 63 else v for v in values]
        if bits == 32:
            values = [((v + (1 << 31)) % (1 << 32)) - (1 << 31) for v in values]
    return [float(v) for v in values]


class _Reader:
    """The scalars of one record's Event, with the per-file memory of tags' plugin names."""

    def __init__(self, plugins: dict[str, str | None]):
        self.plugins = plugins

    def value(self, buf, start: int, end: int) -> tuple[str, float] | None:
        tag = None
        simple = None
        tensor = None
        plugin = None
        for number, wire_type, a, b in _fields(buf, start, end):
            if number == 1 and wire_type == 2:
                tag = bytes(buf[a:b]).decode("utf-8", "replace")
            elif number == 2 and wire_type == 5:
                simple = struct.unpack_from("<f", buf, a)[0]
            elif number == 8 and wire_type == 2:
                tensor = (a, b)
            elif number == 9 and wire_type == 2:
                plugin = _plugin_name(buf, a, b)
        if tag is None:
            return None
        if plugin is not None:
            self.plugins.setdefault(tag, plugin)
        if simple is not None:
            return tag, float(simple)
        if tensor is None:
            return None
        known = self.plugins.get(tag)
        if known not in (None, "", _SCALARS_PLUGIN):
            return None  # images, histograms, text ... keep their own tags
        number = _tensor_scalar(buf, *tensor)
        return None if number is None else (tag, number)


def _event_head(buf, end: int) -> tuple[float, int, list[tuple[int, int]]]:
    """(wall_time, step, [summary spans]) of an Event held whole in buf[:end]."""
    wall_time, step, summaries = 0.0, 0, []
    for number, wire_type, a, b in _fields(buf, 0, end):
        if number == 1 and wire_type == 1:
            wall_time = struct.unpack_from("<d", buf, a)[0]
        elif number == 2 and wire_type == 0:
            step = _signed64(_varint(buf, a, b)[0])
        elif number == 5 and wire_type == 2:
            summaries.append((a, b))
    return wall_time, step, summaries


def _values_of_summary(buf, start: int, end: int) -> Iterator[tuple[int, int]]:
    for number, wire_type, a, b in _fields(buf, start, end):
        if number == 1 and wire_type == 2 and b - a <= _VALUE_CAP:
            yield a, b


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
            step = _signed64(record.varint())
        elif number == 5 and wire_type == 2:
            left = record.varint()
            while left > 0:
                before = record.position_left
                inner_key = record.varint()
                if inner_key & 7 != 2:
                    raise _Malformed
                length = record.varint()
                if inner_key >> 3 == 1 and length <= _VALUE_CAP:
                    data = record.take(length)
                    value = reader.value(data, 0, length)
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


def iter_scalars(path: str, report: EventFileReport | None = None) -> Iterator[Scalar]:
    """Every scalar in one event file, in file order."""
    report = report if report is not None else EventFileReport(path)
    reader = _Reader({})
    stream = fs.open_input(path, "event file")
    try:
        while True:
            head = stream.read(_HEADER.size)
            if not head:
                return
            if len(head) < _HEADER.size:
                report.cut_short = True
                return
            length, length_crc = _HEADER.unpack(head)
            if crc.mask(crc.crc32c(head[:8])) != length_crc or length > _MAX_RECORD:
                report.unframed_tail = True
                report.warnings.append(f"{path}: a record's length fails its checksum after {report.records} "
                                       "records; the rest of the file is not read")
                return
            report.records += 1
            try:
                if length <= _WHOLE_RECORD:
                    data = stream.read(length)
                    footer = stream.read(_FOOTER.size)
                    if len(data) < length or len(footer) < _FOOTER.size:
                        report.cut_short = True
                        return
                    if crc.mask(crc.crc32c(data)) != _FOOTER.unpack(footer)[0]:
                        report.damaged_records += 1
                        continue
                    try:
                        wall_time, step, summaries = _event_head(data, length)
                        found = [v for s in summaries for a, b in _values_of_summary(data, *s)
                                 if (v := reader.value(data, a, b)) is not None]
                    except (_Malformed, struct.error):
                        report.damaged_records += 1
                        continue
                else:
                    record = _StreamedRecord(stream, length)
                    try:
                        wall_time, step, found = _streamed_event(record, reader)
                    except (_Malformed, struct.error):
                        found = None
                    record_crc = record.drain()
                    footer = stream.read(_FOOTER.size)
                    if len(footer) < _FOOTER.size:
                        report.cut_short = True
                        return
                    if found is None or crc.mask(record_crc) != _FOOTER.unpack(footer)[0]:
                        report.damaged_records += 1
                        continue
            except EOFError:
                report.cut_short = True
                return
            for tag, value in found:
                yield Scalar(tag, step, value, wall_time)
    finally:
        stream.close()
        if report.damaged_records:
            report.warnings.append(f"{path}: {report.damaged_records} damaged record"
                                   f"{'s' if report.damaged_records != 1 else ''} skipped")


_FILE_ORDER_RE = re.compile(r"tfevents\.(\d+)")


def event_file_order(name: str) -> tuple[int, str]:
    """Files of one run in the order they were written: by the creation time in their name."""
    match = _FILE_ORDER_RE.search(name)
    return (int(match[1]) if match else 0, name)


def find_event_files(root: str, max_depth: int = 4) -> dict[str, list[str]]:
    """Event files under root, by run: the directory that holds them, relative to root ("" for root
    itself, `train`, `validation`, `eval` ...), each run's files in writing order. Symlinked
    directories are not followed; depth is bounded (a run keeps its events a level or two down)."""
    runs: dict[str, list[str]] = {}

    def visit(directory: str, relative: str, depth: int) -> None:
        try:
            entries = fs.list_dir(directory)
        except (BadInput, OSError):
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
