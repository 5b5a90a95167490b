"""What a Keras checkpoint file is, and whether it is whole, from a few of its bytes: no h5py, no
numpy, a bounded number of small reads. `ls`, `latest` and `prune` look at every file named like
a series member this way (formats/keras/keras3.py and keras_legacy.py read the weights).

HDF5 (`.weights.h5`, legacy `.h5` / `.hdf5`, a legacy model named `.keras`). Whole: the
superblock records the end-of-file address, and HDF5 truncates the file to it when it closes
the file, so a whole file ends exactly there. A shorter one was cut short (HDF5 itself refuses
it, "truncated file"); a longer one was never closed by its writer (a job killed mid-save leaves
the superblock HDF5 wrote on creation, which names its first 2 KiB) or had bytes added since.
Superblock versions 0 and 1 (h5py's default: every file Keras writes) hold the address at byte
40 (44 in version 1, which adds a field); versions 2 and 3 (h5py's libver="latest") at byte 28,
with a checksum (Jenkins' lookup3, as HDF5 computes it) and, in version 3, a flag HDF5 sets
while a writer has the file open. Kind: the rule hdf5_kind applies with h5py (keras3_or_legacy
below), read from the root group's own bytes: its attributes (the object header's attribute
messages) and a lookup of a few names (`layers`, `vars`, `model_weights`) in its links (the
version 1 B-tree of a symbol table, or a version 2 header's link messages). A root whose links
or attributes lie in a fractal heap (libver="latest" and more than 8 of them) is another kind:
Keras writes with h5py's default format, which never stores them so.

zip (`.keras`). Whole: the end-of-central-directory record ends the file (Keras writes no
comment), and the central directory it points to (zip64 records too) ends right where that
record (or the zip64 one) begins, each of its entries a header whose member lies before it. Kind:
a Keras 3 archive holds `model.weights.h5`. One cut short has no such record: it is a Keras
archive only when its first member is the `metadata.json` Keras writes first, stored, naming a
`keras_version`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from ckpttool.errors import BadInput, NotFound
from ckpttool.storage import fs

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
ZIP_MAGIC = b"PK\x03\x04"
KERAS3_ROOT_GROUPS = ("layers", "vars")  # what Keras 3 writes at the root of its weights file
LAYER_NAMES_ATTRIBUTES = ("layer_names", "layer_names0")  # legacy Keras' list (split when long)
LEGACY_MODEL_GROUP = "model_weights"  # model.save's weights, beside the model's config
ARCHIVE_WEIGHTS = "model.weights.h5"
_HEAD_BYTES = 4096  # the superblock and, in a file h5py wrote, the root group's header, B-tree and heap
_MAX_READS = 24  # reads beyond the head before the kind is left undecided
_MAX_READ = 1 << 20  # bytes of one structure read (a heap, a central directory)
_MAX_CONTINUATIONS = 64
_ZIP_TAIL = 22 + 4096  # an end record without comment, and a central directory of a few members
_ZIP_MAX_TAIL = 22 + 0xFFFF  # with the longest comment a zip may have
_UNDEFINED = object()


@dataclass(frozen=True)
class Probe:
    kind: str | None  # "keras3" | "legacy" | "other" (another kind of file) | None: not told (damaged)
    problem: str | None  # why the bytes are not a whole file; None when they are
    cut_short: bool = False  # it ends before the end its own structure records (an interrupted save)
    undecided: str | None = None  # why the kind could not be told (when kind is None)

    @property
    def is_keras(self) -> bool:
        return self.kind in ("keras3", "legacy")


def keras3_or_legacy(root_lists_layers: bool, model_weights_lists_layers: bool, root_is_empty: bool,
                     root_has) -> str:
    """The rule that tells a Keras HDF5 file's kind, for h5py (keras_legacy.hdf5_kind) and for the
    byte reader here alike: "legacy" when the root (or its `model_weights` group) lists
    `layer_names`, "keras3" when its root holds Keras 3's `layers/` or `vars/` or nothing at all,
    else "other". `root_has(name)`: whether the root links `name`."""
    if root_lists_layers or model_weights_lists_layers:
        return "legacy"
    return "keras3" if root_is_empty or any(root_has(name) for name in KERAS3_ROOT_GROUPS) else "other"


class _Undecided(Exception):
    """The kind cannot be told from these bytes (damaged, beyond the bounds, or a layout not read)."""


class _Bytes:
    """A file read at offsets: its first bytes once, then at most _MAX_READS more reads, each kept
    (a zip's tail holds its central directory too)."""

    def __init__(self, path: str, size: int | None):
        self.path = path
        self._input = None
        if fs.is_url(path):
            if size is None:
                found = fs.stat_path(path)
                if found is None:
                    raise NotFound(f"no Keras file at {path}")
                size = found.size
            self.size = size
            self._read = lambda offset, length: fs.read_range(path, offset, length, "Keras file")
        else:  # one descriptor for every read, its size as it is now
            self._input = fs.open_random_access(path, "Keras file")
            self.size = self._input.size
            self._read = self._input.read_at
        self.head = self._read(0, min(_HEAD_BYTES, self.size)) if self.size else b""
        self._blocks = [(0, self.head)]

    def at(self, offset: int, length: int, what: str) -> bytes:
        """Exactly `length` bytes at `offset`, or _Undecided."""
        if offset < 0 or length < 0 or offset + length > self.size:
            raise _Undecided(f"its {what} lies past its end")
        for start, block in self._blocks:
            if start <= offset and offset + length <= start + len(block):
                return block[offset - start:offset - start + length]
        if length > _MAX_READ or len(self._blocks) > _MAX_READS:
            raise _Undecided(f"its {what} is more than a quick look reads")
        data = self._read(offset, length)
        if len(data) != length:
            raise _Undecided(f"its {what} could not be read whole")
        self._blocks.append((offset, data))
        return data

    def close(self) -> None:
        if self._input is not None:
            self._input.close()


def probe_keras_file(path: str, size: int | None = None) -> Probe:
    """What the file at `path` is and whether it is whole (`size`: a bucket object's size as listed).
    Raises BadInput / NotFound when it cannot be read at all."""
    source = _Bytes(path, size)
    try:
        if source.head.startswith(HDF5_MAGIC):
            return _probe_hdf5(source)
        if source.head.startswith(ZIP_MAGIC):
            return _probe_zip(source)
        if source.size < len(HDF5_MAGIC) and (HDF5_MAGIC.startswith(source.head)
                                               or ZIP_MAGIC.startswith(source.head[:4])):
            return Probe(None, f"cut short after {source.size} bytes", True, f"it holds only {source.size} bytes")
        return Probe("other", None)  # neither HDF5 nor zip
    finally:
        source.close()


# -- HDF5 ---------------------------------------------------------------------------------------

_MIX = ((0, 2, 1, 4), (1, 0, 2, 6), (2, 1, 0, 8), (0, 2, 1, 16), (1, 0, 2, 19), (2, 1, 0, 4))
_FINAL = ((2, 1, 14), (0, 2, 11), (1, 0, 25), (2, 1, 16), (0, 2, 4), (1, 0, 14), (2, 1, 24))


def _lookup3(data: bytes) -> int:
    """Bob Jenkins' lookup3 hashlittle with initial value 0: HDF5's metadata checksum. Its mix and
    final steps as tables of (which of a, b, c changes, from which, rotated by how much)."""
    mask = 0xFFFFFFFF

    def rot(x: int, k: int) -> int:
        return ((x << k) | (x >> (32 - k))) & mask

    length = len(data)
    state = [(0xDEADBEEF + length) & mask] * 3
    position = 0
    while length > 0:
        block = data[position:position + 12].ljust(12, b"\0")  # the bytes past the end count as zeros
        state = [(value + int.from_bytes(block[4 * i:4 * i + 4], "little")) & mask for i, value in enumerate(state)]
        if length <= 12:
            for target, source, k in _FINAL:
                state[target] = ((state[target] ^ state[source]) - rot(state[source], k)) & mask
            break
        for target, source, adder, k in _MIX:
            state[target] = ((state[target] - state[source]) & mask) ^ rot(state[source], k)
            state[source] = (state[source] + state[adder]) & mask
        length -= 12
        position += 12
    return state[2]


@dataclass(frozen=True)
class _Superblock:
    offsets: int  # bytes of an address
    lengths: int  # bytes of a length
    base: int
    end_of_file: int
    root_header: int
    open_for_writing: bool


def _uint(data: bytes, offset: int, size: int) -> int:
    return int.from_bytes(data[offset:offset + size], "little")


def _address(data: bytes, offset: int, size: int):
    raw = data[offset:offset + size]
    return _UNDEFINED if raw == b"\xff" * size else int.from_bytes(raw, "little")


def _superblock(source: _Bytes) -> tuple[_Superblock | None, str | None]:
    """The superblock, or (None, why it is unusable); a file that ends inside it is cut short."""
    head, size = source.head, source.size
    if len(head) < 16:  # every superblock version is longer
        return None, "cut short inside its HDF5 superblock"
    version = head[8]
    if version in (0, 1):
        offsets, lengths = head[13], head[14]
        start = 24 if version == 0 else 28  # version 1 adds the indexed storage B-tree's K
        end = start + 4 * offsets + 2 * offsets + 24  # four addresses, then the root's symbol table entry
    elif version in (2, 3):
        offsets, lengths = head[9], head[10]
        start = 12
        end = start + 4 * offsets + 4
    else:
        return None, f"its HDF5 superblock has version {version}, which HDF5 does not write"
    if offsets not in (2, 4, 8) or lengths not in (2, 4, 8):
        return None, "its HDF5 superblock is damaged (sizes of addresses and lengths)"
    if size < end:
        return None, "cut short inside its HDF5 superblock"
    addresses = [_address(head, start + i * offsets, offsets) for i in range(4)]
    if version >= 2:
        if _lookup3(head[:end - 4]) != _uint(head, end - 4, 4):
            return None, "its HDF5 superblock is damaged (checksum mismatch)"
        base, _extension, end_of_file, root = addresses
        writing = version == 3 and bool(head[11] & 0x05)  # file open for writing (or SWMR writing)
    else:
        base, _free_space, end_of_file, _driver = addresses
        entry = start + 4 * offsets
        root = _address(head, entry + offsets, offsets)  # the root's entry: name offset, header address, ...
        writing = False
    if _UNDEFINED in (base, end_of_file, root) or base > end_of_file:
        return None, "its HDF5 superblock is damaged (undefined addresses)"
    return _Superblock(offsets, lengths, base, end_of_file - base, root, writing), None


def _probe_hdf5(source: _Bytes) -> Probe:
    superblock, damage = _superblock(source)
    if superblock is None:
        return Probe(None, damage, damage.startswith("cut short"), damage)
    expected, size = superblock.end_of_file, source.size
    problem, cut = None, False
    if size < expected:
        problem, cut = f"cut short: its HDF5 superblock records {expected} bytes, the file holds {size}", True
    elif size > expected:
        problem = (f"not closed by its writer: its HDF5 superblock records {expected} bytes, the file holds "
                   f"{size} (a save killed or still running, or bytes added since)")
    elif superblock.open_for_writing:
        problem = "not closed by its writer: its HDF5 superblock marks it open for writing"
    try:
        kind = _hdf5_kind(source, superblock)
    except _Undecided as why:
        return Probe(None, problem, cut, f"{why}")
    return Probe(kind, problem, cut)


@dataclass
class _Group:
    attributes: set[str]
    links: dict[str, tuple[int, bool]] | None  # compact links: name -> (address, hard); None: a symbol table
    btree: object = _UNDEFINED
    heap: object = _UNDEFINED
    is_group: bool = False
    dense: bool = False  # links or attributes in a fractal heap (not read)


def _hdf5_kind(source: _Bytes, superblock: _Superblock) -> str:
    root = _object_header(source, superblock, superblock.root_header)
    if not root.is_group:
        raise _Undecided("its root is not a group")
    if root.dense:
        return "other"  # h5py's default format, which Keras writes with, never stores them so
    names = _LinkLookup(source, superblock, root)
    weights = names.find(LEGACY_MODEL_GROUP)
    weights_lists = False
    if weights is not None and weights[1]:
        group = _object_header(source, superblock, weights[0])
        weights_lists = group.is_group and bool(group.attributes & set(LAYER_NAMES_ATTRIBUTES))
    return keras3_or_legacy(bool(root.attributes & set(LAYER_NAMES_ATTRIBUTES)), weights_lists, names.empty(),
                            lambda name: names.find(name) is not None)


_MESSAGE_LINK_INFO, _MESSAGE_LINK, _MESSAGE_ATTRIBUTE = 0x02, 0x06, 0x0C
_MESSAGE_CONTINUATION, _MESSAGE_SYMBOL_TABLE, _MESSAGE_ATTRIBUTE_INFO = 0x10, 0x11, 0x15


def _object_header(source: _Bytes, superblock: _Superblock, address: int) -> _Group:
    """The attributes and links of the object whose header is at `address` (versions 1 and 2)."""
    group = _Group(set(), {})
    o, ln = superblock.offsets, superblock.lengths
    first = source.at(address, 16, "object header")
    if first[:4] == b"OHDR":
        messages = _header_v2_messages(source, address, first, o, ln)
    elif first[0] == 1:
        messages = _header_v1_messages(source, address, first, o, ln)
    else:
        raise _Undecided("an object header is damaged")
    symbol_table = False
    for kind, flags, data in messages:
        if kind == _MESSAGE_ATTRIBUTE:
            if flags & 0x02:
                raise _Undecided("an attribute is shared (not read)")
            group.attributes.add(_attribute_name(data))
        elif kind == _MESSAGE_ATTRIBUTE_INFO:
            heap_at = 2 + (2 if data[1:2] and data[1] & 0x01 else 0)
            group.dense = group.dense or _address(data, heap_at, o) is not _UNDEFINED
        elif kind == _MESSAGE_SYMBOL_TABLE:
            symbol_table = True
            group.btree, group.heap = _address(data, 0, o), _address(data, o, o)
        elif kind == _MESSAGE_LINK:
            name, target = _link(data, o)
            group.links[name] = target
            group.is_group = True
        elif kind == _MESSAGE_LINK_INFO:
            group.is_group = True
            heap_at = 2 + (8 if data[1:2] and data[1] & 0x01 else 0)
            group.dense = group.dense or _address(data, heap_at, o) is not _UNDEFINED
    if symbol_table:
        group.links, group.is_group = None, True
    return group


def _header_v1_messages(source: _Bytes, address: int, first: bytes, o: int, ln: int) -> list[tuple[int, int, bytes]]:
    count, size = _uint(first, 2, 2), _uint(first, 8, 4)
    blocks, messages = [(address + 16, size)], []
    while blocks and len(messages) < count:
        if len(blocks) + len(messages) > _MAX_CONTINUATIONS * 8:
            raise _Undecided("an object header is too long")
        start, length = blocks.pop(0)
        chunk = source.at(start, length, "object header")
        position = 0
        while position + 8 <= length and len(messages) < count:
            kind, data_size, flags = _uint(chunk, position, 2), _uint(chunk, position + 2, 2), chunk[position + 4]
            data = chunk[position + 8:position + 8 + data_size]
            if len(data) != data_size:
                raise _Undecided("an object header is damaged")
            messages.append((kind, flags, data))
            if kind == _MESSAGE_CONTINUATION:
                blocks.append((_uint(data, 0, o), _uint(data, o, ln)))
            position += 8 + data_size
    return messages


def _header_v2_messages(source: _Bytes, address: int, first: bytes, o: int, ln: int) -> list[tuple[int, int, bytes]]:
    if first[4] != 2:
        raise _Undecided("an object header is damaged")
    flags = first[5]
    position = 6 + (16 if flags & 0x20 else 0) + (4 if flags & 0x10 else 0)
    width = 1 << (flags & 0x03)
    fixed = source.at(address, position + width, "object header")
    size = _uint(fixed, position, width)
    start = position + width
    whole = source.at(address, start + size + 4, "object header")
    if _lookup3(whole[:-4]) != _uint(whole, len(whole) - 4, 4):
        raise _Undecided("an object header is damaged (checksum mismatch)")
    ordered = bool(flags & 0x04)
    messages: list[tuple[int, int, bytes]] = []
    chunks = [whole[start:-4]]
    continuations = 0
    while chunks:
        chunk = chunks.pop(0)
        position, header = 0, 6 if ordered else 4
        while position + header <= len(chunk):
            kind, data_size, message_flags = chunk[position], _uint(chunk, position + 1, 2), chunk[position + 3]
            data = chunk[position + header:position + header + data_size]
            if len(data) != data_size:
                raise _Undecided("an object header is damaged")
            messages.append((kind, message_flags, data))
            if kind == _MESSAGE_CONTINUATION:
                continuations += 1
                if continuations > _MAX_CONTINUATIONS:
                    raise _Undecided("an object header is too long")
                block = source.at(_uint(data, 0, o), _uint(data, o, ln), "object header")
                if block[:4] != b"OCHK" or _lookup3(block[:-4]) != _uint(block, len(block) - 4, 4):
                    raise _Undecided("an object header is damaged (continuation block)")
                chunks.append(block[4:-4])
            position += header + data_size
    return messages


def _attribute_name(data: bytes) -> str:
    version = data[0:1]
    if version not in (b"\x01", b"\x02", b"\x03") or len(data) < 8:
        raise _Undecided("an attribute is damaged")
    name_size = _uint(data, 2, 2)
    start = 8 if version != b"\x03" else 9
    name = data[start:start + name_size]
    if len(name) != name_size:
        raise _Undecided("an attribute is damaged")
    return name.rstrip(b"\0").decode("utf-8", "surrogateescape")


def _link(data: bytes, o: int) -> tuple[str, tuple[int, bool]]:
    """(name, (address, hard)) of a link message (a soft or external link has no address here)."""
    if data[:1] != b"\x01" or len(data) < 3:
        raise _Undecided("a link is damaged")
    flags, position = data[1], 2
    link_type = data[position] if flags & 0x08 else 0
    position += (1 if flags & 0x08 else 0) + (8 if flags & 0x04 else 0) + (1 if flags & 0x10 else 0)
    width = 1 << (flags & 0x03)
    name_size = _uint(data, position, width)
    position += width
    name = data[position:position + name_size]
    if len(name) != name_size:
        raise _Undecided("a link is damaged")
    target = _uint(data, position + name_size, o) if link_type == 0 else 0
    return name.decode("utf-8", "surrogateescape"), (target, link_type == 0)


class _LinkLookup:
    """Names a group links, looked up as HDF5 looks them up: a symbol table's B-tree is ordered by
    name, so a lookup reads one node per level, whatever the number of links."""

    def __init__(self, source: _Bytes, superblock: _Superblock, group: _Group):
        self.source, self.superblock, self.group = source, superblock, group
        self._heap: bytes | None = None
        self._nodes: dict[int, tuple[int, list[bytes], list[int]]] = {}
        self._symbols: dict[int, dict[bytes, tuple[int, bool]]] = {}

    def _name_at(self, offset: int) -> bytes:
        if self._heap is None:
            o, ln = self.superblock.offsets, self.superblock.lengths
            if self.group.heap is _UNDEFINED:
                raise _Undecided("its root group has no name heap")
            header = self.source.at(self.group.heap, 8 + 2 * ln + o, "name heap")
            if header[:4] != b"HEAP":
                raise _Undecided("its root group's name heap is damaged")
            self._heap = self.source.at(_uint(header, 8 + 2 * ln, o), _uint(header, 8, ln), "name heap")
        end = self._heap.find(b"\0", offset)
        if offset >= len(self._heap) or end < 0:
            raise _Undecided("its root group's name heap is damaged")
        return self._heap[offset:end]

    def _node(self, address: int) -> tuple[int, list[bytes], list[int]]:
        """(level, keys as names, children) of a group B-tree node."""
        if address not in self._nodes:
            o, ln = self.superblock.offsets, self.superblock.lengths
            head = self.source.at(address, 8 + 2 * o, "B-tree")
            if head[:4] != b"TREE" or head[4] != 0:
                raise _Undecided("its root group's B-tree is damaged")
            level, used = head[5], _uint(head, 6, 2)
            body = self.source.at(address + 8 + 2 * o, used * (ln + o) + ln, "B-tree")
            keys = [self._name_at(_uint(body, i * (ln + o), ln)) for i in range(used + 1)]
            children = [_uint(body, i * (ln + o) + ln, o) for i in range(used)]
            self._nodes[address] = level, keys, children
        return self._nodes[address]

    def empty(self) -> bool:
        if self.group.links is not None:
            return not self.group.links
        return not self._node(self.group.btree)[2]

    def find(self, name: str) -> tuple[int, bool] | None:
        """(header address, hard link) of the link `name`, or None."""
        if self.group.links is not None:
            return self.group.links.get(name)
        wanted = name.encode()
        address = self.group.btree
        for _depth in range(16):
            level, keys, children = self._node(address)
            # Child i holds the names after key i, up to and including key i + 1.
            child = next((children[i] for i in range(len(children)) if keys[i] < wanted <= keys[i + 1]), None)
            if child is None:
                return None
            if level == 0:
                return self._symbol_node(child).get(wanted)
            address = child
        raise _Undecided("its root group's B-tree is too deep")

    def _symbol_node(self, address: int) -> dict[bytes, tuple[int, bool]]:
        if address not in self._symbols:
            o = self.superblock.offsets
            head = self.source.at(address, 8, "symbol table")
            if head[:4] != b"SNOD":
                raise _Undecided("its root group's symbol table is damaged")
            size = 2 * o + 24  # name offset, header address, cache type, reserved, scratch pad
            entries = self.source.at(address + 8, _uint(head, 6, 2) * size, "symbol table")
            # Cache type 2 is a soft link (no header address of its own).
            self._symbols[address] = {
                self._name_at(_uint(entries, at, o)): (_uint(entries, at + o, o), _uint(entries, at + 2 * o, 4) != 2)
                for at in range(0, len(entries), size)}
        return self._symbols[address]


# -- zip ----------------------------------------------------------------------------------------

def _probe_zip(source: _Bytes) -> Probe:
    size = source.size
    try:
        names = _central_directory(source)
    except _Undecided as why:
        return Probe(None, f"{why}", undecided=f"{why}")
    if names is None:
        kind = "keras3" if _starts_like_a_keras_archive(source) else None
        return Probe(kind, f"cut short: no end-of-central-directory record ends its {size} bytes", True,
                     None if kind else "its zip directory is missing and its first member is not Keras' metadata")
    return Probe("keras3" if ARCHIVE_WEIGHTS in names else "other", None)


def _central_directory(source: _Bytes) -> list[str] | None:
    """The member names its central directory lists; None when no end record ends the file (cut
    short); _Undecided when the records there do not agree with each other and the file's size."""
    size = source.size
    record = None
    for tail_size in (_ZIP_TAIL, _ZIP_MAX_TAIL):
        tail_size = min(tail_size, size)
        tail = source.at(size - tail_size, tail_size, "zip end record")
        record = _end_record(tail, size - tail_size, size)
        if record is not None or tail_size == size:
            break
    if record is None:
        return None
    end_at, count, directory_size, directory_at = record
    if end_at >= 20 and source.at(end_at - 20, 4, "zip64 locator") == b"PK\x06\x07":
        end_at, count, directory_size, directory_at = _zip64_record(source, end_at)
    elif 0xFFFF == count or 0xFFFFFFFF in (directory_size, directory_at):
        raise _Undecided("damaged: its zip64 locator is missing")
    if directory_at + directory_size != end_at:
        raise _Undecided("damaged: its zip central directory does not end where its end record begins")
    directory = source.at(directory_at, directory_size, "zip central directory")
    names, position = [], 0
    while position < len(directory):
        if directory[position:position + 4] != b"PK\x01\x02" or position + 46 > len(directory):
            raise _Undecided("damaged: its zip central directory holds something that is no entry")
        packed, unpacked = _uint(directory, position + 20, 4), _uint(directory, position + 24, 4)
        name_size, extra_size, comment_size = (_uint(directory, position + 28 + 2 * i, 2) for i in range(3))
        offset = _uint(directory, position + 42, 4)
        name = directory[position + 46:position + 46 + name_size]
        extra = directory[position + 46 + name_size:position + 46 + name_size + extra_size]
        packed, offset = _zip64_sizes(extra, unpacked, packed, offset)
        if offset + 30 + name_size + packed > directory_at:
            raise _Undecided("damaged: a zip member runs into its central directory")
        names.append(name.decode("utf-8", "surrogateescape"))
        position += 46 + name_size + extra_size + comment_size
    if position != len(directory) or len(names) != count:
        raise _Undecided("damaged: its zip central directory does not hold the entries its end record counts")
    return names


def _end_record(tail: bytes, tail_at: int, size: int) -> tuple[int, int, int, int] | None:
    """(where, entries, directory size, directory offset) of the end record that ends the file."""
    position = tail.rfind(b"PK\x05\x06")
    found = position >= 0
    while position >= 0:
        if position + 22 <= len(tail) and tail_at + position + 22 + _uint(tail, position + 20, 2) == size:
            return (tail_at + position, _uint(tail, position + 10, 2), _uint(tail, position + 12, 4),
                    _uint(tail, position + 16, 4))
        position = tail.rfind(b"PK\x05\x06", 0, position)
    if found:  # an end record that does not end the file: bytes added after it, not a file cut short
        raise _Undecided("damaged: bytes follow its end-of-central-directory record")
    return None


def _zip64_record(source: _Bytes, end_at: int) -> tuple[int, int, int, int]:
    """The zip64 end record the locator before the end record points to (zipfile writes both when a
    count or offset overflows the end record's fields)."""
    locator = source.at(end_at - 20, 20, "zip64 locator")
    record_at = _uint(locator, 8, 8)
    record = source.at(record_at, 56, "zip64 end record")
    if record[:4] != b"PK\x06\x06" or record_at + 12 + _uint(record, 4, 8) != end_at - 20:
        raise _Undecided("damaged: its zip64 end record does not end where its locator begins")
    return record_at, _uint(record, 32, 8), _uint(record, 40, 8), _uint(record, 48, 8)


def _zip64_sizes(extra: bytes, unpacked: int, packed: int, offset: int) -> tuple[int, int]:
    """(compressed size, local header offset), from the zip64 extra field where they overflow."""
    position = 0
    while position + 4 <= len(extra):
        tag, length = _uint(extra, position, 2), _uint(extra, position + 2, 2)
        if tag == 0x0001:  # the overflowing fields, in this order, 8 bytes each
            values = iter([_uint(extra, position + 4 + i, 8) for i in range(0, length - 7, 8)])
            if unpacked == 0xFFFFFFFF:
                next(values, None)
            if packed == 0xFFFFFFFF:
                packed = next(values, packed)
            if offset == 0xFFFFFFFF:
                offset = next(values, offset)
            break
        position += 4 + length
    return packed, offset


def _starts_like_a_keras_archive(source: _Bytes) -> bool:
    """Its first member is the metadata.json Keras writes first (stored), naming a keras_version."""
    head = source.head
    if len(head) < 30 or _uint(head, 8, 2) != 0:
        return False
    name_size, extra_size, packed = _uint(head, 26, 2), _uint(head, 28, 2), _uint(head, 18, 4)
    if head[30:30 + name_size] != b"metadata.json":
        return False
    start = 30 + name_size + extra_size
    try:
        document = json.loads(head[start:start + packed].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return False
    return isinstance(document, dict) and "keras_version" in document


def whole_file_problem(path: str, size: int | None = None) -> str | None:
    """Why an HDF5 or zip file (a Keras file, an HF step's `tf_model.h5`) is not whole, else None."""
    try:
        return probe_keras_file(path, size).problem
    except (BadInput, OSError) as exc:
        return f"cannot be read ({exc})"
