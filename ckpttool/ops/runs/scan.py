"""What is in a checkpoint directory: every checkpoint found in the state file
*and* on disk, whether each is complete, and every problem worth reporting.

`ls`, `latest`, `prune` and `repair` all start from `scan_directory`, so they
agree on what a checkpoint is.
"""
from __future__ import annotations

import gc
import threading
import math
import os
import re
import signal
from stat import S_ISREG
from dataclasses import MISSING, dataclass, field, fields, replace
from contextlib import contextmanager
from functools import cached_property
from itertools import repeat
from operator import itemgetter
from typing import Callable, Iterator, TypeVar

from ckpttool.errors import CkptError, NotFound
from ckpttool.storage import fs
from ckpttool.storage.atomic import TEMP_SUFFIX_RE
from ckpttool.formats.tf.shards import (DATA_SUFFIX_LEN, data_shard, missing_shard_ids, shard_count,
                                        shard_count_of_head_and_tail, split_step, split_v1_pattern, v1_pattern,
                                        v1_shard, v1_shard_names)
from ckpttool.formats.tf.state import STATE_FILENAME, CheckpointState, read_state, read_state_file
from ckpttool.formats.tf.table import FOOTER_SIZE, HEAD_BYTES, first_entry_of_file
from ckpttool.text import excerpt

_TEMPSTATE_RE = re.compile(r"\.tempstate\d+$")
_TEMP_DIR_RE = re.compile(r"_temp(_[0-9a-f]{32})?$")
T = TypeVar("T")
_ONE_SHARD = ".data-00000-of-00001"  # the data file of nearly every checkpoint
_NOT_OTHERS = (".index", ".meta", _ONE_SHARD)  # what newest_complete_prefix groups by name alone
_LISTED_SHARDS = 10  # missing shards named in a problem; the rest are counted
TF_FORMATS = ("v2", "v1")
DIRECTORY_FORMATS = ("savedmodel", "orbax", "hf")


@dataclass(frozen=True)
class Problem:
    kind: str
    path: str
    message: str


@dataclass(frozen=True)
class CheckpointInfo:
    name: str  # basename of the prefix, e.g. model.ckpt-50
    prefix: str  # absolute
    family: str  # the prefix stem without its step, e.g. model.ckpt
    step: int | None
    format: str  # "v2" | "v1"; a series member's kind: "keras" | "savedmodel" | "orbax" | "hf" (ops/runs/series.py)
    size_bytes: int
    num_shards: int | None
    complete: bool
    has_meta: bool
    in_state: bool
    is_latest: bool
    mtime: float  # newest modification time of its files
    timestamp: float | None  # save time recorded in the state file
    files: tuple[str, ...]  # absolute paths of every file that belongs to it (a directory member: itself)
    keras_epochs: bool = False  # numbered by Keras epochs from 1 (ModelCheckpoint), not by logged steps
    unexpected: tuple[str, ...] = ()  # a directory member: what it holds that its framework does not write
    cut_short: bool = False  # a series member file whose bytes show it was cut short (an interrupted save)
    too_deep: str | None = None  # a directory member nested deeper than prune removes: how deep (never deleted)

    @property
    def is_directory(self) -> bool:
        """A series member that is a directory (SavedModel version, Orbax or HF step): deleted as a tree."""
        return self.format in DIRECTORY_FORMATS

    @property
    def deletable(self) -> bool:
        """Whether prune may delete it when no rule keeps it: complete, nothing foreign inside, and
        not nested deeper than prune removes."""
        return self.complete and not self.unexpected and not self.too_deep

    @property
    def time(self) -> float:
        """The checkpoint's age reference: state-file timestamp, else file mtime."""
        return self.timestamp if self.timestamp is not None else self.mtime


@dataclass(frozen=True)
class Leftover:
    """Debris of an interrupted save: a `*_temp` directory or a `.tempstate` file, or a series'
    (`series`: "orbax_tmp" for `*.orbax-checkpoint-tmp-*`, "exporter_tmp" for `temp-<n>`)."""

    path: str
    mtime: float
    size_bytes: int
    series: str | None = None


@dataclass(frozen=True)
class DirectoryScan:
    directory: str  # absolute
    checkpoints: tuple[CheckpointInfo, ...]  # oldest first
    problems: tuple[Problem, ...]
    state: CheckpointState | None
    state_error: str | None
    state_latest: str | None  # name of the state file's latest, when it is in this directory
    leftovers: tuple[Leftover, ...] = field(default=())
    # Latest checkpoints named by other state files (Saver(latest_filename=...), e.g.
    # best_checkpoint): name -> that file's name.
    other_latest: dict[str, str] = field(default_factory=dict)
    # What the listing held: name -> "file" | "dir" | "link" | "other", or "both" for a bucket
    # name that is an object and a prefix (prune checks deletions against it, so that a bucket
    # costs no request per file).
    listing: dict[str, str] = field(default_factory=dict)
    # A bucket's state file's version as listed (S3 ETag): prune rewrites it only if still that one.
    state_tag: str | None = None

    @property
    def latest(self) -> CheckpointInfo | None:
        return next((c for c in self.checkpoints if c.is_latest), None)

    @cached_property
    def _by_name(self) -> dict[str, CheckpointInfo]:
        return {c.name: c for c in self.checkpoints}

    def by_name(self, name: str) -> CheckpointInfo | None:
        return self._by_name.get(name)




class _Files:
    """The files of one checkpoint prefix, by name in the directory (a plain class with slots: a
    listing of 100,000 checkpoints makes 100,000, at half a dataclass's cost)."""

    __slots__ = ("index", "meta", "v1", "data", "v1_shards")

    def __init__(self) -> None:
        self.index: str | None = None
        self.meta: str | None = None
        self.v1: str | None = None
        self.data: dict[tuple[int, int], str] = {}  # (shard, of-count) -> name
        self.v1_shards: dict[int, str] = {}  # a sharded V1 save: shard -> file name


def _group(groups: dict[str, _Files], stem: str) -> _Files:
    files = groups.get(stem)
    if files is None:
        files = groups[stem] = _Files()
    return files


def resolve_state_entry(directory: str, entry: str, realpaths: dict[str, str] | None = None,
                        present: set[str] | None = None) -> tuple[str | None, Problem | None]:
    """Name of a state-file entry inside `directory`, or the problem with it.

    Absolute paths (and URLs, which TensorFlow writes for buckets) elsewhere
    whose basename exists here are stale (the directory was moved): they
    count as that name, with a problem reported. Paths that leave the
    directory are never followed. `realpaths` memoizes resolved parents across
    the entries of one state file (they share one); `present`, the names the
    directory holds, saves looking each one up.
    """
    if "\0" in entry:  # no file can have this name (and the OS refuses to look it up)
        return None, Problem("bad_entry", entry, f"state file entry {excerpt(entry)} holds a NUL byte")
    if fs.is_url(entry) or os.path.isabs(entry):
        normalized = fs.absolute(entry) if fs.is_url(entry) else os.path.normpath(entry)
        parent, name = fs.dirname(normalized), fs.basename(normalized)
        if parent == directory or (fs.is_url(parent) == fs.is_url(directory)
                                   and _realpath(parent, realpaths) == _realpath(directory, realpaths)):
            return name, None
        if _found_here(directory, name, present):
            return name, Problem("stale_path", entry, f"state file holds absolute path {excerpt(entry)}; found "
                                 f"{excerpt(name)} in this directory (directory moved?)")
        return None, Problem("outside", entry, f"state file entry {excerpt(entry)} points outside the directory")
    if "/" not in entry and os.sep not in entry and entry not in (".", "..", ""):
        return entry, None  # a plain name, as TensorFlow writes them
    normalized = os.path.normpath(entry)
    if os.sep not in normalized and not normalized.startswith("..") and normalized not in (".", ""):
        return normalized, None  # `./x`, `a/../x`: a plain name in the end
    name = os.path.basename(normalized)
    # Relative to another working directory (TF 0.x wrote `save/model.ckpt` run from save/'s parent):
    # the name found here, with the problem reported, as for a moved directory.
    if name not in (".", "..", "") and _found_here(directory, name, present):
        return name, Problem("stale_path", entry, f"state file holds {excerpt(entry)}, relative to another "
                             f"directory; found {excerpt(name)} in this directory")
    return None, Problem("outside", entry, f"state file entry {excerpt(entry)} leaves the directory")


def _one_stale_problem_per_directory(directory: str, problems: list[Problem]) -> list[Problem]:
    """The stale_path problems of one state file as one per directory its entries point into: a run
    directory copied or moved elsewhere has every entry stale for the one reason, said once, with
    the command that fixes it."""
    stale: dict[str, list[Problem]] = {}
    for problem in problems:
        if problem.kind == "stale_path":
            entry = problem.path
            parent = fs.dirname(fs.absolute(entry) if fs.is_url(entry) else os.path.normpath(entry))
            stale.setdefault(parent, []).append(problem)
    if not stale:
        return problems
    kept = [p for p in problems if p.kind != "stale_path"]
    for parent, group in stale.items():
        count = f"its {len(group)} entries point" if len(group) > 1 else "its entry points"
        kept.append(Problem("stale_path", parent, f"the state file was written in another directory: {count} into "
                            f"{excerpt(parent or '.')} (copied or moved from there?); the checkpoints are found "
                            f"here by name; `ckpttool repair {excerpt(directory)}` rewrites it with relative paths"))
    return kept


def _found_here(directory: str, name: str, present: set[str] | None) -> bool:
    """Whether checkpoint `name` has files in `directory` (`present`: its file names, if listed)."""
    files = [name + ".index"] + v1_shard_names(name)[:1]  # V2 index, V1 file or first shard of a V1 pattern
    if present is not None:
        return any(f in present for f in files)
    return any(fs.is_file(fs.join(directory, f)) for f in files)


def _realpath(path: str, memo: dict[str, str] | None) -> str:
    if memo is None:
        return fs.real(path)
    if path not in memo:
        memo[path] = fs.real(path)
    return memo[path]


@contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic garbage collector paused meanwhile (a decorator too). A scan builds a few objects
    per file and no reference cycles, and what reads one (a listing's JSON rows, prune's plan)
    builds as many again: every collection would walk them all. With it paused, 100,000
    checkpoints scan about a fifth faster, and prune's plan of them (one list each) takes 0.1 s,
    not 0.9 s."""
    paused = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.enable()


def scan_directory(directory: str, entries: list[fs.Entry] | None = None, *, helper: bool = False) -> DirectoryScan:
    """`entries`: the directory's listing when the caller has just made it (watch's one listing
    per poll of a bucket), else it is listed here. `helper`: a local directory of many checkpoints
    may be looked at by two processes (_look_at_in_two: the same scan, sooner when a second
    processor is free); for a caller in no hurry for its answer, or one that writes to a terminal,
    one is enough."""
    with gc_paused():
        return _scan(directory, entries, helper)


@dataclass
class _Listing:
    """One listing of a directory, sorted: the files of TF prefixes grouped by prefix, the rest
    looked at (lstat) as they are met. A local listing takes each entry's type from the directory
    and looks at a prefix's files only when it is described (_look_at): 100,000 checkpoints then
    cost one open and read of each index (its stat from the open file) and one lstat of each
    data shard, and `latest` without a state file looks at the newest prefixes only."""

    groups: dict[str, _Files] = field(default_factory=dict)
    plain_files: dict[str, fs.Entry] = field(default_factory=dict)
    stats: dict[str, fs.Entry] = field(default_factory=dict)  # the files looked at, by name
    leftovers: list[Leftover] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    subdirectories: list[fs.Entry] = field(default_factory=list)
    listing: dict[str, str] = field(default_factory=dict)
    dir_fd: int | None = None  # local: the directory's descriptor, through which _look_at looks
    shard_counts: dict[str, int | None] = field(default_factory=dict)  # index name -> its header's count
    # Prefixes of the common shape looked at by _looked_at_common: name -> (bytes of its files, time).
    quick: dict[str, tuple] = field(default_factory=dict)
    base: str = ""  # the directory with a trailing separator
    state_tag: str | None = None  # a bucket's state file's version (ETag) as listed: prune's If-Match


def _list(directory: str, entries: list[fs.Entry] | None, dir_fd: int | None,
          kinds: list[tuple[str, str]] | None = None) -> _Listing:
    """`entries`: a listing made by the caller (each file's size and time known), else the
    directory open at `dir_fd` is listed by type (`kinds`: those of its names to sort, as
    (name, kind), when the caller has them), or a bucket's `directory` listed."""
    base = fs.join(directory, "")
    found = _Listing(dir_fd=dir_fd if entries is None else None, base=base)
    if entries is None and dir_fd is not None:
        kinds = fs.list_kinds(dir_fd) if kinds is None else kinds
        known: dict[str, fs.Entry] = {}
    else:
        entries = fs.list_dir(directory) if entries is None else entries
        kinds = [(entry.name, entry.kind) for entry in entries]
        known = {entry.name: entry for entry in entries if entry.kind == "file"}
        found.state_tag = next((entry.tag for entry in entries
                                if entry.name == STATE_FILENAME and entry.kind == "file"), None)
    if entries is None:
        found.listing = dict(kinds)  # a local directory holds each name once
    else:
        listing = found.listing
        for name, kind in kinds:
            # A bucket name can be an object and a prefix at once (`run/x.index` beside
            # `run/x.index/notes.txt`): "both", so that prune deletes the object alone.
            seen = listing.get(name)
            listing[name] = "both" if seen is not None and seen != kind else kind
    if entries is not None:
        subdirectories = [entry for entry in entries if entry.kind == "dir"]
    else:
        subdirectories = [e for name, kind in kinds if kind == "dir"
                          and (e := fs.entry_at(dir_fd, name, base + name)) is not None and e.kind == "dir"]
    found.subdirectories = subdirectories
    for entry in subdirectories:
        if _TEMP_DIR_RE.search(entry.name):
            size, mtime = fs.tree_size(entry.path)
            found.leftovers.append(Leftover(entry.path, mtime, size))
            found.problems.append(Problem("temp_dir", entry.path, f"leftover temporary directory {entry.name} "
                                          "from an interrupted save"))
    groups, stats = found.groups, found.stats
    get = groups.get
    # One pass over every name, the common ones (index, one data shard) first: the loop is most
    # of what `latest` without a state file costs.
    for name, kind in kinds:
        if kind != "file":
            continue  # symlinks and specials are never treated as checkpoint files
        if name.endswith(".index"):
            stem = name[:-6]
            files = get(stem)
            if files is None:
                files = groups[stem] = _Files()
            files.index = name
            continue
        if name.endswith(_ONE_SHARD) and len(name) > DATA_SUFFIX_LEN:
            stem = name[:-DATA_SUFFIX_LEN]
            files = get(stem)
            if files is None:
                files = groups[stem] = _Files()
            files.data[(0, 1)] = name
            continue
        if name == STATE_FILENAME or name == STATE_FILENAME + ".bak":
            continue
        if name.endswith(".meta"):
            _group(groups, name[:-5]).meta = name
            continue
        temp = (".tempstate" in name and _TEMPSTATE_RE.search(name)) or (".tmp" in name
                                                                        and TEMP_SUFFIX_RE.search(name))
        shard = None if temp else data_shard(name)
        if shard:
            _group(groups, name[:-DATA_SUFFIX_LEN]).data[shard] = name
            continue
        entry = known.get(name) if entries is not None else fs.entry_at(dir_fd, name, base + name)
        if entry is None or entry.kind != "file":
            continue  # gone or replaced since listed: a writer at work
        stats[name] = entry
        if temp:
            found.leftovers.append(Leftover(entry.path, entry.mtime, entry.size))
            found.problems.append(Problem("temp_file", entry.path, f"leftover temporary file {name}"))
        else:
            found.plain_files[name] = entry
    if entries is not None:
        stats.update(known)
    return found


def _look_at(listed: _Listing, base: str, names, common: bool = True) -> None:
    """The files of the prefixes `names` looked at through the directory's descriptor (a local
    listing's are not yet): each index read (the first bytes that give its shard count and the
    footer that says it is whole) and its size and time taken from the open file, each other file
    lstat'ed. A file gone or no longer a regular file since the listing counts as not listed.
    `common`: the prefixes of the common shape are looked at first, by _looked_at_common."""
    dir_fd, groups, stats = listed.dir_fd, listed.groups, listed.stats
    if dir_fd is None:
        return
    if common:
        commons = _common_prefixes(listed, names)
        _take_common(listed, commons, _looked_at_common(dir_fd, base, groups, commons))
        names = [name for name in names if name not in listed.quick]
    for name in names:
        files = groups[name]
        index = files.index
        if index is not None and index not in stats:
            try:
                read = fs.read_head_and_tail_at(dir_fd, index, base + index, HEAD_BYTES, FOOTER_SIZE)
            except OSError:  # there, but not to be read (permissions): an index that says nothing
                read = None
                if _look_at_file(dir_fd, base, index, stats):
                    listed.shard_counts[index] = None  # a bad_index, as an unreadable one always was
            if read is not None:
                head, tail, size, stats[index] = read
                listed.shard_counts[index] = shard_count_of_head_and_tail(base + index, head, tail, size)
            elif index not in stats:
                files.index = None
        if files.meta is not None and files.meta not in stats and not _look_at_file(dir_fd, base, files.meta, stats):
            files.meta = None
        for key, data in list(files.data.items()):
            if data not in stats and not _look_at_file(dir_fd, base, data, stats):
                del files.data[key]
        if files.index is None and files.meta is None and not files.data and not files.v1 and not files.v1_shards:
            del groups[name]


def _looked_at_common(dir_fd: int, base: str, groups: dict[str, _Files], names: list[str]) -> list[tuple | None]:
    """What nearly every prefix is (an index naming one data shard, the shard, a .meta perhaps),
    looked at in one pass: for each of `names`, the bytes of its files and its time (no Entry per
    file, which 100,000 checkpoints make 200,000 of), or None when it is not all there as regular
    files with a whole index naming one shard (the general path of _look_at then looks again and
    says what it is)."""
    jobs = [(files.index, files.data[(0, 1)]) if files.meta is None else (files.index, files.data[(0, 1)], files.meta)
            for files in map(groups.__getitem__, names)]
    found: list[tuple | None] = []
    append = found.append
    for name, seen in zip(names, fs.read_ends_and_lstat_at(dir_fd, jobs, HEAD_BYTES, FOOTER_SIZE)):
        if seen is None or shard_count_of_head_and_tail(base + name + ".index", seen[0], seen[1], seen[2]) != 1:
            append(None)
        else:
            # The .meta is written after the checkpoint: its time is not the save's.
            index_size, index_mtime, shard_size, shard_mtime = seen[3:7]
            append((index_size + shard_size + (seen[7] if len(seen) > 7 else 0),
                    index_mtime if index_mtime > shard_mtime else shard_mtime))
    return found


def _is_common(files: _Files) -> bool:
    """Whether the prefix's files are named as the common shape's (_looked_at_common)."""
    return (files.index is not None and files.v1 is None and not files.v1_shards and len(files.data) == 1
            and (0, 1) in files.data)


def _common_prefixes(listed: _Listing, names: list[str]) -> list[str]:
    """Those of `names` whose files are named as the common shape's and whose index is not read yet."""
    groups, stats = listed.groups, listed.stats
    return [name for name in names if groups[name].index not in stats and _is_common(groups[name])]


def _take_common(listed: _Listing, names: list[str], found: list[tuple | None]) -> list[str]:
    """_looked_at_common's answers for `names` kept in `listed`; the names it answered None for."""
    groups, quick, shard_counts = listed.groups, listed.quick, listed.shard_counts
    again = []
    for name, seen in zip(names, found):
        if seen is None:
            again.append(name)
        else:
            quick[name] = seen
            shard_counts[groups[name].index] = 1
    return again


def _look_at_in_two(listed: _Listing, base: str, names: list[str]) -> None:
    """_look_at, the common prefixes of the second half looked at by a forked process on another
    processor meanwhile (their files' system calls are most of what a scan of 100,000 costs). It
    sends each one's size and time (or None: looked at here again, as _look_at would); what it
    sends is only numbers this process would have read itself, so nothing decided changes. Nothing
    sent, or not all of it (the helper failed or was stopped): this process looks at them all."""
    if len(names) < HELPER_MIN_PREFIXES or threading.active_count() > 1 or not processor_free():
        return _look_at(listed, base, names)  # threads (no fork), or no processor to run it on
    common = _common_prefixes(listed, names)
    if len(common) < HELPER_MIN_PREFIXES:
        return _look_at(listed, base, names)  # too few to pay for a process
    theirs = common[len(common) // 2:]
    try:
        reading, writing = os.pipe()
    except OSError:  # no descriptors left: nothing to hand the helper's answer through
        return _look_at(listed, base, names)
    try:
        pid = os.fork()
    except OSError:  # no process to be had (a limit on processes or memory): this one looks at them all
        os.close(reading)
        os.close(writing)
        return _look_at(listed, base, names)
    if pid == 0:  # the helper: reads only, sends numbers, never returns into the caller's code
        code = 1
        try:
            os.close(reading)
            _send_common(listed, base, theirs, writing)
            code = 0
        finally:
            os._exit(code)
    os.close(writing)
    sent = None
    try:
        taken = set(theirs)
        _look_at(listed, base, [name for name in names if name not in taken])
        sent = _receive(reading)
    finally:
        os.close(reading)
        if sent is None:  # stopped here (an interrupt) or nothing sent: the helper's work is not wanted
            _stop(pid)
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:  # SIGCHLD ignored (inherited through exec): the system reaped it
            pass
    found = None
    if sent is not None:
        import marshal

        try:
            found = marshal.loads(sent)
        except (EOFError, ValueError, TypeError):
            found = None
    if not _well_formed(found, len(theirs)):
        return _look_at(listed, base, theirs)
    # What the helper answered None for, it looked at as the common shape: the general path's turn.
    _look_at(listed, base, _take_common(listed, theirs, found), common=False)


def _well_formed(found, count: int) -> bool:
    """Whether the helper sent what _looked_at_common gives for `count` prefixes: None or (size,
    mtime) each. Anything else (a helper's bug, bytes that happen to unmarshal) is not trusted: a
    wrong item would fail far from here, in the middle of describing the checkpoints."""
    return isinstance(found, list) and len(found) == count and all(
        seen is None or type(seen) is tuple and len(seen) == 2 and type(seen[0]) is int and type(seen[1]) is float
        for seen in found)


HELPER_MIN_PREFIXES = 20_000  # fewer common prefixes: a second process costs more than it saves


def processor_free() -> bool:
    """Whether another processor is likely idle (the last minute's load average half a processor
    short of their number): without one, a helper process only takes turns with this one, and
    measured 1.0-1.17x the time at load 3 on 2 processors."""
    try:
        usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        return os.getloadavg()[0] < usable - 0.5
    except OSError:  # no load average on this system
        return False


def _stop(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # already gone (reaped below)


def _send_common(listed: _Listing, base: str, names: list[str], writing: int) -> None:
    """In the helper: _looked_at_common of `names`, marshalled to `writing`."""
    import marshal

    found = _looked_at_common(listed.dir_fd, base, listed.groups, names)
    with os.fdopen(writing, "wb") as pipe:
        pipe.write(marshal.dumps(found))


def _receive(reading: int) -> bytes | None:
    """All the helper wrote, None if nothing."""
    chunks = []
    while chunk := os.read(reading, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks) or None


def _look_again(listed: _Listing, base: str) -> None:
    """The prefixes _looked_at_common took that are not of the common shape after all (a V1 file of
    the same name found beside them since): looked at again, file by file, for the general path."""
    if not listed.plain_files:
        return  # no V1 file: nothing changed
    groups = listed.groups
    again = [name for name in listed.quick if groups[name].v1 is not None or groups[name].v1_shards]
    for name in again:
        del listed.quick[name]
        listed.shard_counts.pop(groups[name].index, None)
    _look_at(listed, base, again, common=False)


def _look_at_file(dir_fd: int, base: str, name: str, stats: dict[str, fs.Entry]) -> bool:
    entry = fs.entry_at(dir_fd, name, base + name)
    if entry is None or entry.kind != "file":
        return False
    stats[name] = entry
    return True


def _scan(directory: str, entries: list[fs.Entry] | None = None, helper: bool = False) -> DirectoryScan:
    remote = fs.is_url(directory)
    if not remote and not os.path.isdir(directory):
        raise NotFound(f"no such directory: {directory}")
    directory = fs.absolute(directory)
    dir_fd = None if remote or entries is not None else fs.open_directory(directory)
    try:
        return _scan_listed(directory, entries, dir_fd, helper)
    finally:
        if dir_fd is not None:
            os.close(dir_fd)


def _scan_listed(directory: str, entries: list[fs.Entry] | None, dir_fd: int | None,
                 helper: bool = False) -> DirectoryScan:
    remote = fs.is_url(directory)
    problems: list[Problem] = []
    state, state_error = None, None
    try:
        state = read_state(directory)
    except CkptError as exc:
        state_error = exc.message
        problems.append(Problem("bad_state_file", fs.join(directory, STATE_FILENAME), exc.message))
    listed = _list(directory, entries, dir_fd)
    if remote and not listed.listing and state is None and state_error is None:
        raise NotFound(f"nothing at {directory} (no such bucket or prefix, or it is empty)")
    problems += listed.problems
    groups, plain_files, stats, leftovers = listed.groups, listed.plain_files, listed.stats, listed.leftovers

    state_names: dict[str, float | None] = {}
    state_latest = None
    if state is not None:
        realpaths: dict[str, str] = {}
        present = {name for name, kind in listed.listing.items() if kind == "file" or kind == "both"}
        for path in state.all_model_checkpoint_paths:
            name, problem = resolve_state_entry(directory, path, realpaths, present)
            if problem:
                problems.append(problem)
            if name:
                stamp = state.timestamp_of(path)
                # A save time that is not a number cannot order anything: use the files' time.
                state_names[name] = stamp if stamp is None or math.isfinite(stamp) else None
        if state.model_checkpoint_path:
            name, problem = resolve_state_entry(directory, state.model_checkpoint_path, realpaths, present)
            if problem and problem not in problems:  # once per scan: a linear search is fine
                problems.append(problem)
            if name:
                state_latest = name
                state_names.setdefault(name, None)

    problems = _one_stale_problem_per_directory(directory, problems)
    other_latest = {}
    for name in plain_files:
        if name.endswith(STATE_FILENAME) and stats[name].size < 1 << 20:
            latest = _other_state_latest(directory, name)
            if latest:
                other_latest[latest] = name

    base = listed.base
    (_look_at_in_two if helper and dir_fd is not None else _look_at)(listed, base, list(groups))
    _find_v1_checkpoints(groups, plain_files, state_names, remote)
    _look_again(listed, base)

    checkpoints = []
    for name, files in groups.items():
        # A bucket's indexes are not read one by one (a request each): the data files' names give
        # the shard count, and `verify` checks it against the index.
        info = _describe(base, name, files, stats, state_names, problems, listed.shard_counts,
                         read_headers=not remote, quick=listed.quick)
        if info is not None:
            checkpoints.append(info)
    checkpoints += _series_checkpoints(directory, listed.subdirectories, plain_files, problems, leftovers)
    for name in state_names:
        if name not in groups:
            problems.append(Problem("missing_checkpoint", fs.join(directory, name),
                                    f"state file lists {excerpt(name)}, whose files are gone"))

    latest_name = state_latest if state_latest and any(
        c.name == state_latest and c.complete for c in checkpoints) else None
    if latest_name is None:
        complete = [c for c in checkpoints if c.complete and c.format in TF_FORMATS]
        if complete:
            latest_name = max(complete, key=newest_order).name
    if latest_name is None:
        latest_name = series_latest_name(checkpoints)
    checkpoints = [replace(c, is_latest=True) if c.name == latest_name else c for c in checkpoints]
    # c.time, without a property call per checkpoint
    checkpoints.sort(key=lambda c: (c.step if c.step is not None else -1,
                                    c.mtime if c.timestamp is None else c.timestamp, c.name))
    return DirectoryScan(directory, tuple(checkpoints), tuple(problems), state, state_error,
                         state_latest, tuple(sorted(leftovers, key=lambda l: l.path)), other_latest, listed.listing,
                         listed.state_tag)


def newest_order(c: CheckpointInfo) -> tuple:
    """What "newest" means where no state file says it (none, or its latest is not here or not
    complete), for TF prefixes and series members alike: the highest step, then the newest files,
    then the name (a name without a step comes before every step). Steps first, so that `latest`
    finds the answer looking at the highest steps alone (newest_complete_prefix)."""
    return c.step if c.step is not None else -1, c.mtime, c.name


def series_latest_name(checkpoints) -> str | None:
    """The latest of series without a state file: the complete member with the highest step, then
    the newest (TF prefixes, when there are any, answer first: tf.train.latest_checkpoint's)."""
    complete = [c for c in checkpoints if c.complete and c.format not in TF_FORMATS]
    if not complete:
        return None
    return max(complete, key=newest_order).name


def newest_complete_prefix(directory: str) -> CheckpointInfo | None:
    """The TF prefix a scan of local `directory`, which has no state file, calls latest (its
    complete prefix first in newest_order), looking at the prefixes from the highest step down
    and stopping at the first step that has a complete one: `latest` without a state file reads
    a few indexes, not every one, and groups the files of those alone. Described as the scan
    describes each (the same bytes decide: an index cut short or a data shard missing is not
    complete, and the walk goes on below it). None when no TF prefix is complete (the scan then
    answers, a series' member perhaps)."""
    directory = fs.absolute(directory)
    dir_fd = fs.open_directory(directory)
    try:
        with gc_paused():
            # The listing as one string: the list of 200,000 names is let go at once.
            found_names = _Names(os.listdir(dir_fd))
            # The steps of the prefixes that can be complete: those with an index, and V1 files
            # (among the names no TF V2 file has: the few the scan looks at one by one).
            stems_steps = found_names.index_steps(_LEVELS_LOOKED_AT)
            listed = _list(directory, None, dir_fd, found_names.others())
            _find_v1_checkpoints(listed.groups, listed.plain_files, {}, remote=False)
            v1_stems, v1_steps = [], []
            for name, files in listed.groups.items():
                if files.v1 or files.v1_shards:
                    pattern = split_v1_pattern(name) if files.v1_shards else None
                    v1_stems.append(pattern[0] if pattern else name)
                    v1_steps.append(_step_of_group(name, files))
            levels = sorted(set(stems_steps.levels) | set(v1_steps), reverse=True)
            for level in levels[:_LEVELS_LOOKED_AT]:
                # Every file of a prefix starts with its stem: these names hold the whole of each
                # prefix at this step, grouped as the scan groups them (entry types are checked
                # when the files are looked at: a link or directory there is no checkpoint file).
                prefixes = stems_steps.stems_at(level) + [stem for stem, step in zip(v1_stems, v1_steps)
                                                         if step == level]
                found = _newest_complete(directory, dir_fd, [(name, "file") for name
                                                             in found_names.starting_with(prefixes)], level)
                if found is not None:
                    return found
            if len(levels) <= _LEVELS_LOOKED_AT:
                return None
            # Many steps in a row without a complete prefix (a run of broken saves): one grouping
            # of every name, then step by step.
            listed = _list(directory, None, dir_fd)
            _find_v1_checkpoints(listed.groups, listed.plain_files, {}, remote=False)
            by_step: dict[int, list[str]] = {}
            for name, files in listed.groups.items():
                by_step.setdefault(_step_of_group(name, files), []).append(name)
            for level in sorted(by_step, reverse=True):
                found = _complete_among(listed, by_step[level])
                if found is not None:
                    return found
            return None
    finally:
        os.close(dir_fd)


class _Names:
    """The names of a directory as one string, each after a NUL (no name holds one), so that the
    questions `latest` asks of 200,000 names are answered by str's own searches, not a Python
    step per name: of the listing's time without a state file, the per-name work was two
    thirds, the listing itself (the system's) one third."""

    __slots__ = ("count", "joined")

    def __init__(self, names: list[str]) -> None:
        self.count = len(names)
        # "\0\0" between names: each name is preceded by a NUL even in the pieces split() makes.
        self.joined = "\0" + "\0\0".join(names) + "\0"

    @property
    def names(self) -> list[str]:
        """The names, in listing order (made again: the walk asks for them rarely)."""
        return self.joined[1:-1].split("\0\0") if self.count else []

    def index_steps(self, kept: int) -> _IndexSteps:
        """The `kept` highest steps of the index names (and whether there are more)."""
        return _IndexSteps(self, kept)

    def others(self) -> list[tuple[str, str]]:
        """(name, "file") of the names that are neither an index, a .meta, nor a data shard of a
        named prefix: where V1 files and the rest are (as the scan's listing sorts them). Counted
        first: when every name ends in one of the common endings there are none to look for."""
        joined = self.joined
        common = (joined.count(".index\0") + joined.count(".meta\0") + joined.count(_ONE_SHARD + "\0")
                  - joined.count("\0" + _ONE_SHARD + "\0"))
        if common == self.count:
            return []
        return [(name, "file") for name in self.names if (not name.endswith(_NOT_OTHERS) or name == _ONE_SHARD)
                and (name[-20:-14] != ".data-" or data_shard(name) is None)]

    def starting_with(self, prefixes: list[str]) -> list[str]:
        """The names that start with one of `prefixes`, in listing order: found in the joined
        names (a few prefixes; many, or an empty one, by a pass over the names)."""
        if not prefixes:
            return []
        if len(prefixes) > _PREFIXES_SEARCHED or "" in prefixes:
            starts = tuple(prefixes)
            return [name for name in self.names if name.startswith(starts)]
        joined, positions = self.joined, set()
        for prefix in prefixes:
            needle = "\0" + prefix
            at = joined.find(needle)
            while at >= 0:
                positions.add(at + 1)
                at = joined.find(needle, at + 1)
        return [joined[at:joined.index("\0", at)] for at in sorted(positions)]


_PREFIXES_SEARCHED = 16  # more prefixes at one step than this: one pass over the names finds their files


class _IndexSteps:
    """The highest steps of the index names (`P.index`: P's step as split_step has it, -1 for
    none), and the stems at a step. Only the highest steps are kept (the walk looks at no more):
    the step of each of 100,000 names, kept, would cost more memory than the walk saves."""

    __slots__ = ("names", "levels")

    def __init__(self, names: _Names, kept: int) -> None:
        self.names = names
        pieces = self._pieces()
        # The tails, never all kept at once: str's own methods make them one by one.
        decimal = set(map(int, filter(str.isdecimal, map(itemgetter(2), map(str.rpartition, pieces, repeat("-"))))))
        if not all(map(str.isdecimal, map(itemgetter(2), map(str.rpartition, pieces, repeat("-"))))):
            decimal.add(-1)
        del pieces
        # `kept` + 1: whether there are more steps than the walk looks at by name is what it asks.
        self.levels = sorted(decimal, reverse=True)[:kept + 1]

    def _pieces(self) -> list[str]:
        """The joined names cut after each index name's stem: each piece ends with one (and holds
        the names between it and the index before). What follows its last dash is the stem's step
        if it is all digits; a stem without a dash leaves a NUL in it (each name is preceded by
        one), which no step holds."""
        pieces = self.names.joined.split(".index\0")
        pieces.pop()
        return pieces

    def stems_at(self, level: int) -> list[str]:
        """The stems of the index names at step `level`."""
        joined = self.names.joined
        if level < 0 or not joined.isascii():
            # Not a step, or steps perhaps written in other digits (str.isdecimal's): one by one.
            return [piece[piece.rfind("\0") + 1:] for piece in self._pieces()
                    if (int(tail) if (tail := piece.rpartition("-")[2]).isdecimal() else -1) == level]
        # `-<level>.index`, the step perhaps written with leading zeros, found in the joined names.
        digits = str(level)
        needle = digits + ".index\0"
        stems = []
        at = joined.find(needle)
        while at >= 0:
            start = at
            while joined[start - 1] == "0":
                start -= 1
            if joined[start - 1] == "-":
                stems.append(joined[joined.rindex("\0", 0, start) + 1:at + len(digits)])
            at = joined.find(needle, at + 1)
        return stems


_LEVELS_LOOKED_AT = 8  # steps from the highest looked at by their names alone, before grouping every name


def _step_of_group(name: str, files: _Files) -> int:
    """The step of a prefix (of a V1 pattern `P-?????-of-N`, P's), -1 for none: as newest_order has it."""
    pattern = split_v1_pattern(name) if files.v1_shards else None
    step = split_step(pattern[0] if pattern else name)[1]
    return -1 if step is None else step


def _newest_complete(directory: str, dir_fd: int, kinds: list[tuple[str, str]], level: int) -> CheckpointInfo | None:
    """The newest complete TF prefix at step `level` among the names `kinds`, which hold every file
    of each prefix at that step."""
    listed = _list(directory, None, dir_fd, kinds)
    _find_v1_checkpoints(listed.groups, listed.plain_files, {}, remote=False)
    return _complete_among(listed, [name for name, files in listed.groups.items()
                                    if _step_of_group(name, files) == level])


def _complete_among(listed: _Listing, names: list[str]) -> CheckpointInfo | None:
    """The first in newest_order of the prefixes `names` that are complete TF checkpoints, each
    looked at and described as the scan does."""
    base, groups = listed.base, listed.groups
    _look_at(listed, base, names)
    described = [_describe(base, name, groups[name], listed.stats, {}, [], listed.shard_counts, quick=listed.quick)
                 for name in names if name in groups]
    complete = [c for c in described if c is not None and c.complete and c.format in TF_FORMATS]
    return max(complete, key=newest_order) if complete else None


_KERAS_ENDINGS = (".h5", ".keras", ".hdf5")  # what every Keras checkpoint file's name ends with (ops/runs/series.py)


def _series_checkpoints(directory: str, subdirectories: list[fs.Entry], plain_files: dict[str, fs.Entry],
                        problems: list[Problem], leftovers: list[Leftover]) -> list[CheckpointInfo]:
    """The members of the series besides TF prefixes (ops/runs/series.py) as checkpoints; their debris
    added to `leftovers`, and what keeps a directory member from being deleted to `problems`."""
    # Keras files are among the plain files (not named like a TF checkpoint's); one cheap pass finds
    # the directories: a directory of 100,000 TF checkpoints costs next to nothing more.
    keras_files = [e for e in plain_files.values() if e.name.endswith(_KERAS_ENDINGS)]
    if not keras_files and not subdirectories:
        return []  # a plain TF run directory: the series module is not even imported
    from ckpttool.ops.runs import series

    members, unrecognised = series.keras_members(directory, keras_files)
    directories, debris = series.directory_members(subdirectories)
    found = []
    for m in members + directories:
        found.append(CheckpointInfo(
            name=m.name, prefix=m.path, family=m.family + "/" if m.is_dir else m.family, step=m.step,
            format=m.kind, size_bytes=m.size_bytes, num_shards=None, complete=m.complete, has_meta=False,
            in_state=False, is_latest=False, mtime=m.mtime, timestamp=None, files=(m.path,),
            keras_epochs=m.keras_epochs, unexpected=m.unexpected, cut_short=m.cut_short, too_deep=m.too_deep))
        what = series.KIND_NAMES[m.kind]
        if not m.complete:
            problems.append(Problem("incomplete_member", m.path, f"{m.name}{'/' if m.is_dir else ''} is not a "
                                    f"complete {what}: {m.problem}"))
        if m.unexpected:
            shown = ", ".join(excerpt(u) for u in m.unexpected[:5]) + (", ..." if len(m.unexpected) > 5 else "")
            problems.append(Problem("foreign_files", m.path, f"{m.name}/ holds what its framework does not write "
                                    f"({shown}): never deleted ({what})"))
        if m.too_deep:
            problems.append(Problem("too_deep", m.path, f"{m.name}/: {m.too_deep}: never deleted ({what})"))
    problems += [Problem("unrecognised", path, message) for path, message in unrecognised]
    for d in debris:
        name = fs.basename(d.path)
        if d.problem:
            problems.append(Problem("not_debris", d.path, f"{name}/ is named like an {series.KIND_NAMES[d.kind]} "
                                    f"directory, but {d.problem}: not debris, never deleted"))
            continue
        leftovers.append(Leftover(d.path, d.mtime, d.size_bytes, d.kind))
        problems.append(Problem(d.kind, d.path, f"leftover {series.KIND_NAMES[d.kind]} directory "
                                f"{name} from an interrupted save"))
    return found


def _find_v1_checkpoints(groups: dict[str, _Files], plain_files: dict[str, fs.Entry],
                         state_names: dict[str, float | None], remote: bool) -> None:
    """Add the V1 checkpoints among the plain files: tables whose header is V1's, whole (`model.ckpt`)
    or sharded (`model.ckpt-3-00000-of-00002`, named `model.ckpt-3-?????-of-00002` as TensorFlow
    names it). On disk every plain file gets a cheap look (its last bytes: no .meta or state entry
    need name it, as with TF 0.x files or session bundles); in a bucket, where each look is a
    request, only files something marks (the state file, a .meta beside them)."""
    for name, entry in plain_files.items():
        shard = v1_shard(name)
        checkpoint = v1_pattern(shard[0], shard[2]) if shard else name
        stem = shard[0] if shard else name
        marked = checkpoint in state_names or name in state_names or (stem in groups and groups[stem].index is None)
        if not (marked or not remote and entry.size >= FOOTER_SIZE) or not _is_v1_table(entry.path, entry.size):
            continue
        if shard:
            _group(groups, checkpoint).v1_shards[shard[1]] = name
        else:
            _group(groups, name).v1 = name
    for name, files in list(groups.items()):
        pattern = split_v1_pattern(name) if files.v1_shards else None
        graph = groups.get(pattern[0]) if pattern else None
        if graph is not None and graph.meta and not (graph.index or graph.v1 or graph.data or graph.v1_shards):
            files.meta = graph.meta  # P.meta is the graph of P-?????-of-N
            del groups[pattern[0]]


def _is_v1_table(path: str, size: int) -> bool:
    """A table whose first entry is a V1 header (SavedTensorSlices starts with field 1, 0x0A;
    a V2 bundle header with field 1 as a varint, 0x08)."""
    first = first_entry_of_file(path, "V1 checkpoint", size)
    return first is not None and first[0] == b"" and first[1][:1] == b"\x0a"


def state_file_problems(scan: DirectoryScan) -> tuple[Problem, ...]:
    """What `latest` and `repair` act on and TensorFlow misses: a missing state file
    (tf.train.latest_checkpoint finds nothing), complete checkpoints missing from it
    (CheckpointManager neither restores nor deletes them). Not in `scan.problems`,
    which prune reports: these are not prune's business."""
    state_path = os.path.join(scan.directory, STATE_FILENAME)
    if scan.state is None and scan.state_error is None:
        if not any(c.format in TF_FORMATS for c in scan.checkpoints):  # series have no state file
            return ()
        return (Problem("no_state_file", state_path, "no state file: tf.train.latest_checkpoint finds nothing "
                        "here (`ckpttool repair` writes one)"),)
    if scan.state is None:
        return ()  # unparseable: already a bad_state_file problem
    # Families another state file keeps (Saver(latest_filename="best_checkpoint")) are not orphans.
    elsewhere = {split_step(name)[0] for name in scan.other_latest}
    return tuple(Problem("not_in_state", c.prefix, f"{excerpt(c.name)} is not in the state file "
                         "(TensorFlow does not see it; `ckpttool repair` adds it)")
                 for c in scan.checkpoints if c.complete and not c.in_state and c.family not in elsewhere
                 and c.format in TF_FORMATS)


def _other_state_latest(directory: str, filename: str) -> str | None:
    """The latest named by another state file (`best_checkpoint`), if it parses as one."""
    try:
        state = read_state_file(fs.join(directory, filename))
    except CkptError:
        return None
    if state is None or not state.model_checkpoint_path:
        return None
    name, _problem = resolve_state_entry(directory, state.model_checkpoint_path)
    return name


# The fields without a default (the others are class attributes: a TF prefix leaves them as they are).
_INFO_REQUIRED = frozenset(f.name for f in fields(CheckpointInfo) if f.default is MISSING)
_set_field = object.__setattr__


def _new_info(values: dict) -> CheckpointInfo:
    """CheckpointInfo(**values) at half the cost: its fields set on a new instance one by one, as the
    frozen dataclass's __init__ does, without the call. (Assigning `values` as its __dict__ is faster
    still, but a dict of its own took a scan of 100,000 checkpoints 30 MB more, measured.) The same
    object (there is no __post_init__); the plain way unless exactly the fields without a default
    are given."""
    if values.keys() != _INFO_REQUIRED:
        return CheckpointInfo(**values)
    info = object.__new__(CheckpointInfo)
    for key, value in values.items():
        _set_field(info, key, value)
    return info


class _CommonInfo:
    """A CheckpointInfo being made by _common_info: a plain class, whose attributes the interpreter
    stores at a third of the cost of the frozen dataclass's object.__setattr__ calls (0.14 s against
    0.3 s for 100,000, measured); the instance then becomes a CheckpointInfo (the same layout: an
    instance dict, which the change of class makes, 64 bytes each), equal to the one its __init__
    makes. Its fields in the dataclass's order, as its __init__ sets them."""

    def __init__(self, name, prefix, family, step, size, has_meta, in_state, mtime, timestamp, files) -> None:
        self.name = name
        self.prefix = prefix
        self.family = family
        self.step = step
        self.format = "v2"
        self.size_bytes = size
        self.num_shards = 1
        self.complete = True
        self.has_meta = has_meta
        self.in_state = in_state
        self.is_latest = False
        self.mtime = mtime
        self.timestamp = timestamp
        self.files = files


def _common_info(name, prefix, family, step, size, has_meta, in_state, mtime, timestamp, files,
                 make=_CommonInfo, cls=CheckpointInfo) -> CheckpointInfo:
    """_new_info of a complete V2 prefix with one shard (no dict of values built and walked)."""
    info = make(name, prefix, family, step, size, has_meta, in_state, mtime, timestamp, files)
    info.__class__ = cls
    return info


def _describe(base: str, name: str, files: _Files, stats, state_names, problems, shard_counts: dict[str, int | None],
              read_headers: bool = True, quick: dict[str, tuple] | None = None) -> CheckpointInfo | None:
    """`base`: the directory with a trailing separator; `shard_counts`: the indexes already read
    (_look_at), `quick`: the common prefixes it looked at (_looked_at_common). Without
    `read_headers`, the shard count comes from the data files' names (`-of-N`)."""
    seen = quick.get(name) if quick else None
    data, meta = files.data, files.meta
    if seen is not None:
        size, mtime = seen  # whole and of the common shape (_looked_at_common)
    elif (files.index is not None and len(data) == 1 and (0, 1) in data and files.v1 is None
            and not files.v1_shards and _index_shard_count(base, files, stats, shard_counts, read_headers) == 1):
        # What nearly every checkpoint is: an index and one data shard (a .meta perhaps): the
        # general path below, unrolled (no lists, sorting or shard checks to make).
        index, shard = stats[files.index], stats[data[(0, 1)]]
        size = index.size + shard.size + (0 if meta is None else stats[meta].size)
        mtime = max(index.mtime, shard.mtime)
    else:
        size = None
    if size is not None:
        family, step = split_step(name)
        shard_path, index_path = base + data[(0, 1)], base + files.index
        # Its files sorted, as below: `P.data-...` < `P.index` < `P.meta`.
        return _common_info(name, base + name, family, step, size, meta is not None, name in state_names, mtime,
                            state_names.get(name),
                            (shard_path, index_path) if meta is None else (shard_path, index_path, base + meta))
    if files.index is None and files.v1 is None and not files.data and not files.v1_shards:
        # A lone .meta (a graph without its checkpoint) is not a checkpoint.
        problems.append(Problem("orphan_meta", base + files.meta, f"{files.meta} has no checkpoint"))
        return None
    fmt = "v1" if (files.v1 or files.v1_shards) and not files.index else "v2"
    complete, num_shards = True, 1
    if files.v1_shards and fmt == "v1":
        stem, num_shards = split_v1_pattern(name)
        present = {i for i in files.v1_shards if i < num_shards}
        missing, count = missing_shard_ids(num_shards, present, _LISTED_SHARDS)
        if count:
            complete = False
            problems.append(Problem("missing_shards", base + name, f"{name} is missing V1 shard(s) "
                                    + ", ".join(f"{stem}-{i:05d}-of-{num_shards:05d}" for i in missing)))
    if fmt == "v2":
        if files.index is None:
            complete = False
            num_shards = max(count for _, count in files.data)
            problems.append(Problem("data_without_index", base + name,
                                    f"{name} has data files but no .index (interrupted save?)"))
        else:
            num_shards = _index_shard_count(base, files, stats, shard_counts, read_headers)
            if num_shards is None:
                complete = False
                problems.append(Problem("bad_index", base + files.index, f"{name}.index is incomplete or corrupt"))
            else:
                if len(files.data) != num_shards or any(count != num_shards for _, count in files.data):
                    complete = _report_missing_shards(base + name, name, num_shards, files, problems)
                _report_stray_shards(base, name, num_shards, files, problems)
    names = [n for n in (files.index, files.meta, files.v1) if n]
    names += list(files.data.values()) + list(files.v1_shards.values())
    # The .meta is written after the checkpoint: its time is not the save's unless it is all there is.
    times = [stats[n].mtime for n in names if n != files.meta] or [stats[files.meta].mtime]
    pattern = split_v1_pattern(name) if files.v1_shards else None
    family, step = split_step(pattern[0] if pattern else name)
    return _new_info(dict(
        name=name, prefix=base + name, family=family, step=step, format=fmt,
        size_bytes=sum([stats[n].size for n in names]), num_shards=num_shards,
        complete=complete, has_meta=files.meta is not None, in_state=name in state_names, is_latest=False,
        mtime=max(times), timestamp=state_names.get(name), files=tuple(sorted([base + n for n in names])),
    ))


def _index_shard_count(base: str, files: _Files, stats, shard_counts: dict[str, int | None],
                       read_headers: bool) -> int | None:
    """The shard count of the prefix's index: its header's (read now unless _look_at read it), or
    without `read_headers` the data files' names'."""
    index = files.index
    if index in shard_counts:
        return shard_counts[index]
    return shard_count(base + index, stats[index].size) if read_headers else _shard_count_of_names(files)


def _shard_count_of_names(files: _Files) -> int | None:
    """The `-of-N` the data files agree on (N = 1 when there are none: the shard is then missing)."""
    counts = {count for _shard, count in files.data}
    return counts.pop() if len(counts) == 1 else 1 if not counts else max(counts)


def _report_missing_shards(prefix: str, name: str, num_shards: int, files: _Files, problems) -> bool:
    """Whether every shard the index names is there; a problem naming the first missing ones if not."""
    present = {i for i, count in files.data if count == num_shards}
    missing, count = missing_shard_ids(num_shards, present, _LISTED_SHARDS)
    if count:
        more = f" and {count - len(missing)} more" if count > len(missing) else ""
        problems.append(Problem("missing_shards", prefix, f"{name} is missing data shard{'s' if count > 1 else ''} "
                                + ", ".join(f"{i:05d}-of-{num_shards:05d}" for i in missing) + more))
    return not count


def _report_stray_shards(base: str, name: str, num_shards: int, files: _Files, problems) -> None:
    """A problem for each data file of `name` that its index does not name (a shard of an earlier
    save with another shard count: TensorFlow never reads it; `prune --clean` removes it)."""
    for (shard, count), stray in sorted(files.data.items()):
        if count != num_shards or shard >= num_shards:
            problems.append(Problem("stray_shard", base + stray, f"{stray} belongs to no index ({name}.index "
                                    f"names {num_shards} shard{'s' if num_shards != 1 else ''}): "
                                    "left by an earlier save?"))


def holds_checkpoints(dirs: list[str], files: list[str]) -> bool:
    """Whether a directory holding `dirs` and `files` holds checkpoints, by their names alone: a state
    file, a TF prefix's index, a series' members (HF `checkpoint-<step>/`, numbered Keras files).
    Such a directory is a run of its own: find_checkpoint_dirs lists it, and the metric search of a
    directory above it never takes its event files (ops/retention/metrics.py)."""
    from ckpttool.ops.runs import series

    return (STATE_FILENAME in files or any(name.endswith(".index") for name in files)
            or series.names_a_series(dirs, files))


def find_checkpoint_dirs(root: str, problems: list[Problem] | None = None,
                         listings: dict[str, list[fs.Entry]] | None = None, listed: list | None = None) -> list[str]:
    """Directories under `root` (itself included) that hold checkpoints, without
    following symlinks, entering `*_temp` leftovers or SavedModels' variables.

    A bucket's keys are taken as listed: one with a `.`, `..` or empty segment below
    `root` is never followed (a normalised `root/../../other/run` is another bucket);
    each is added to `problems`. `listings` (a bucket): filled with each directory's entries from
    the tree's one listing, for scan_directory (no second listing per run directory); `listed`:
    a recursive listing of a directory holding `root` (fs.walk_files), made once for several."""
    if not fs.is_url(root) and not os.path.isdir(root):
        raise NotFound(f"no such directory: {root}")
    from ckpttool.ops.runs import series

    found = []
    skipped: list[str] = []
    for current, dirs, files in fs.walk_files(root, skipped, listings, listed):
        dirs[:] = sorted(d for d in dirs if not _TEMP_DIR_RE.search(d))
        if "saved_model.pb" in files or "saved_model.pbtxt" in files:
            dirs[:] = [d for d in dirs if d != "variables"]
        if holds_checkpoints(dirs, files):
            found.append(current)
        elif current != root and series.is_step_directory(fs.basename(current), files):
            parent = fs.dirname(current)  # a SavedModel version or Orbax step: its parent holds a series
            if parent not in found:
                found.append(parent)
    if problems is not None:
        problems.extend(Problem("bad_key", url, f"skipped {excerpt(url)}: an object key with a `.`, `..` or "
                                "empty segment, or one the store would read as another key, is never followed")
                        for url in skipped)
    return found


def moved_out_of_tree(root: str, directory: str) -> str | None:
    """Why `directory`, found under `root` by find_checkpoint_dirs, must no longer be used by its
    path (a component swapped for a symlink since the walk, which followed none), or None."""
    if fs.is_url(root):
        return None  # object keys: no links
    now = os.path.realpath(directory)
    if now != os.path.normpath(os.path.join(os.path.realpath(root), os.path.relpath(directory, root))):
        return f"{directory} now leads to {now} (a symlink was put in its path since it was found); not followed"
    return None


def for_each_directory(function: Callable[[str], T], directories: list[str]) -> list[T]:
    """function(d) for each directory, in order; a bucket's several at a time (each is a listing
    and a few requests, which wait on the network, not the CPU)."""
    if len(directories) > 1 and fs.is_url(directories[0]):
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=8) as pool:
            return list(pool.map(function, directories))
    return [function(d) for d in directories]
