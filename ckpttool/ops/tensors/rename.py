"""`rename-vars`: write a new checkpoint with variables renamed; SRC is never modified.

Only the index changes: each entry keeps its bytes, so data shards are copied
(or hard-linked, never written through) and the cost is O(index) plus the
copy. TF2 object-based checkpoints also get a consistent object graph:
attribute checkpoint keys and the children's local names along renamed
object paths, so tf.train.Checkpoint.restore matches the new names.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Callable

from ckpttool.errors import NotFound, Refused, Unsupported, UsageProblem
from ckpttool.storage import fs
from ckpttool.storage.atomic import (commit_replacement, commit_section, create_temp_beside, discard_replacement,
                                     link_temp_beside, prepare_replacement, temp_writer_pid)
from ckpttool.formats.tf.bundle import Bundle, data_file_path, open_bundle
from ckpttool.formats.tf.bundle_writer import (encode_strings, make_entry, remove_checkpoint_files, serialize_index,
                                             write_index)
from ckpttool.formats.dtypes import dtype_from_code
from ckpttool.formats.tf.object_graph import rewrite_object_graph
from ckpttool.formats.tf.ordered_code import encode_slice_key
from ckpttool.formats.tf.protos import checkpoint_pb2 as pb
from ckpttool.formats.variables import OBJECT_GRAPH_KEY
from ckpttool.ops.destination import (update_destination_state, check_parent_creatable, make_parents, refuse_writing_over_source,
                                      remove_empty)
from ckpttool.ops.tensors.rename_rules import RenameRules, compute_mapping
from ckpttool.ops.runs.statefile import older_than_latest
from ckpttool.ops.targets import resolve_target
@dataclass(frozen=True)
class RenamePlan:
    source: str
    destination: str
    mapping: dict[str, str]  # every variable kept: source name -> destination name
    renamed: tuple[tuple[str, str], ...]
    dropped: tuple[str, ...]
    unchanged: int
    object_graph: bool  # a TF2 object graph will be rewritten
    update_state: bool = True  # make DST the latest checkpoint of its directory
    state_warning: str | None = None  # ... though it is older than the latest there
    warnings: tuple[str, ...] = ()  # rules that matched no name


@dataclass(frozen=True)
class RenameResult:
    plan: RenamePlan
    bytes_written: int


def _checkpoint_exists(prefix: str) -> bool:
    return bool(_checkpoint_files(prefix))


def _checkpoint_files(prefix: str) -> list[str]:
    """The index and data shards (`.data-?????-of-?????`) of the checkpoint at `prefix`."""
    name = fs.basename(prefix)
    try:
        entries = fs.list_dir(fs.dirname(prefix))
    except (NotFound, FileNotFoundError, NotADirectoryError):
        return []
    return sorted(e.path for e in entries if e.name == name + ".index" or (
        e.name.startswith(name + ".data-") and _DATA_NAME_RE.fullmatch(e.name[len(name):])))


_FILE_SUFFIX_RE = re.compile(r"\.(index|meta|data-\d{5}-of-\d{5})$")
_DATA_NAME_RE = re.compile(r"\.data-\d{5}-of-\d{5}")


def _refuse_destination_in_source(source: str, source_files: list[str], destination: str) -> None:
    """SRC is never modified: refuse a DST that is SRC, or whose files would be SRC's files."""
    if _FILE_SUFFIX_RE.search(destination):
        raise Refused(f"destination {destination} is a checkpoint file name; give the prefix to write "
                      "(e.g. out/model.ckpt-1, without .index or .data-*)")
    refuse_writing_over_source([source, *source_files],
                               [destination] + [destination + path[len(source):] for path in source_files],
                               "rename-vars")


def plan_rename(source: str, destination: str, rules: RenameRules, overwrite: bool = False,
                link: bool = False, update_state: bool = True) -> RenamePlan:
    target = resolve_target(source)
    if target.format == "v1":
        raise Unsupported("rename-vars writes the V2 format; the source is a V1 checkpoint",
                          hint="restore it with tf.compat.v1.train.Saver and re-save it first")
    if target.format != "v2":  # a weights file (safetensors, PyTorch ...): convert takes the same rules
        raise Unsupported(f"rename-vars renames TF V2 checkpoints; the source is a {target.format} file",
                          hint="`ckpttool convert` takes the same rules (--regex, --map, --drop ...)")
    if link and (fs.is_url(destination) or fs.is_url(target.prefix)):
        raise UsageProblem("--link needs SRC and DST on one local file system; a bucket has no hard links",
                           hint="leave out --link: within one bucket the shards are copied by the server")
    destination = fs.absolute(destination)
    if fs.is_url(destination):
        if fs.is_dir(destination):
            raise Refused(f"destination {destination} is a directory (objects live under it); "
                          "give a checkpoint prefix such as DIR/model.ckpt-1")
    else:
        if os.path.isdir(destination):
            raise Refused(f"destination {destination} is a directory; give a checkpoint prefix such as DIR/model.ckpt-1")
        check_parent_creatable(destination)  # missing directories are made when the checkpoint is written
    with open_bundle(target.prefix) as bundle:
        names = [v.name for v in bundle.variables if not v.internal]
        graph_bytes = bundle.object_graph_bytes()
        source_files = [target.prefix + ".index", target.prefix + ".meta"] + bundle.data_files()
    _refuse_destination_in_source(fs.absolute(target.prefix), [fs.absolute(f) for f in source_files], destination)
    if _checkpoint_exists(destination) and not overwrite:
        raise Refused(f"destination {destination} exists (use --overwrite to replace it)")
    names_given = compute_mapping(names, rules, graph_bytes)
    mapping, dropped = names_given.mapping, names_given.dropped
    renamed = tuple((old, new) for old, new in mapping.items() if old != new)
    if graph_bytes is not None and (renamed or dropped):
        rewrite_object_graph(graph_bytes, mapping, set(dropped))  # refuses here, before anything is written
    return RenamePlan(target.prefix, destination, mapping, renamed, tuple(dropped),
                      sum(1 for old, new in mapping.items() if old == new), graph_bytes is not None,
                      update_state, older_than_latest(destination) if update_state else None, names_given.idle)


def _copy_shard(source: str, dst, length: int | None) -> int:
    """Copy a data shard (its first `length` bytes, or all of it) into the binary file `dst` in the
    kernel, as coreutils' cp does (copy_file_range); bytes written."""
    with fs.open_input(source, "data shard") as src:  # never a FIFO or device
        total = os.fstat(src.fileno()).st_size if length is None else length
        copied = 0
        try:
            while copied < total:
                n = os.copy_file_range(src.fileno(), dst.fileno(), total - copied)
                if n == 0:
                    break
                copied += n
        except OSError:  # no in-kernel copy between these files systems: plain read/write
            src.seek(copied)
            dst.seek(copied)
            while copied < total:
                chunk = src.read(min(total - copied, 16 << 20))
                if not chunk:
                    break
                dst.write(chunk)
                copied += len(chunk)
    return copied


def bytes_to_copy(plan: RenamePlan) -> int:
    """Bytes of the source's data shards, which apply_rename copies (for a progress bar): one
    listing or stat each; 0 when one is missing (apply_rename then says so)."""
    with open_bundle(plan.source) as bundle:
        found = [fs.stat_path(path) for path in bundle.data_files()]
    return 0 if None in found else sum(entry.size for entry in found)


def _copy_object(source: str, destination: str, on_progress: Callable[[int], None] | None = None) -> int:
    """One data shard to `destination`: by the server within one store, else streamed; bytes moved
    (`on_progress` told as they are: chunk by chunk when streamed, at once when the server copies)."""
    if fs.is_url(source) and fs.same_store(source, destination):
        from ckpttool.storage import remote
        found = fs.stat_path(source)
        if found is None:
            raise NotFound(f"missing data shard {source}")
        remote.copy_object(source, destination)
        if on_progress:
            on_progress(found.size)
        return found.size
    copied = 0
    handle = fs.open_random_access(source, "data shard")
    try:
        with fs.atomic_output(destination, sync=False) as out:
            for chunk in handle.iter_range(0, handle.size):
                out.write(chunk)
                copied += len(chunk)
                if on_progress:
                    on_progress(len(chunk))
    finally:
        handle.close()
    return copied


def _apply_rename_with_a_bucket(plan: RenamePlan, on_progress: Callable[[int], None] | None) -> RenameResult:
    """rename-vars when SRC or DST is in a bucket. Shards are copied by the server within one store
    (no download), else streamed; a rewritten object graph gets a shard of its own (an object cannot
    be appended to); the index, written last in one request, makes the checkpoint exist."""
    destination = plan.destination
    if not fs.is_url(destination):
        created_directories = make_parents(destination)
    written: list[str] = []
    try:
        with open_bundle(plan.source) as bundle:
            entries = _new_entries(bundle, plan)
            num_shards = bundle.header.num_shards
            new_graph = None
            if plan.object_graph and (plan.renamed or plan.dropped):
                new_graph = rewrite_object_graph(bundle.object_graph_bytes(), plan.mapping, set(plan.dropped))
            old = _checkpoint_files(destination)  # --overwrite: the old index goes first
            fs.remove_files([p for p in old if p.endswith(".index")] + [p for p in old if not p.endswith(".index")])
            out_shards = num_shards + (1 if new_graph is not None else 0)
            total = 0
            for shard_id, source_path in enumerate(bundle.data_files()):
                final = data_file_path(destination, shard_id, out_shards)
                written.append(final)
                total += _copy_object(source_path, final, on_progress)
            if new_graph is not None:
                data, checksum = encode_strings([new_graph])
                final = data_file_path(destination, num_shards, out_shards)
                written.append(final)
                fs.write_atomic(final, data)
                total += len(data)
                entries[OBJECT_GRAPH_KEY.encode()] = make_entry(dtype_from_code(7), (), num_shards, 0, len(data),
                                                                 checksum)
            index = serialize_index(out_shards, entries)
            with commit_section():  # the index and the state file: an interrupt waits, never a request left running
                written.append(destination + ".index")
                fs.write_atomic(destination + ".index", index)
                total += len(index)
                if plan.update_state:
                    update_destination_state(destination)
                written = []  # complete: an interrupt delivered as the section ends must not undo it
        return RenameResult(plan, total)
    except BaseException:
        fs.remove_files(list(reversed(written)))  # the index (last written) first
        if not fs.is_url(destination):
            remove_empty(created_directories)
        raise


def _new_entries(bundle: Bundle, plan: RenamePlan) -> dict[bytes, pb.BundleEntryProto]:
    """Index entries under their new keys (slices re-keyed too); bytes stay where they are."""
    raw = bundle.raw_entries()
    entries: dict[bytes, pb.BundleEntryProto] = {}
    for var in bundle.variables:
        new = OBJECT_GRAPH_KEY if var.name == OBJECT_GRAPH_KEY else plan.mapping.get(var.name)
        if new is None:
            continue
        new_key = new.encode("utf-8", "surrogateescape")
        old_key = var.name.encode("utf-8", "surrogateescape")
        entries[new_key] = raw[old_key]
        for extents in var.slices:
            entries[encode_slice_key(new_key, extents)] = raw[encode_slice_key(old_key, extents)]
    return entries

_OUR_TEMP_RE = re.compile(r"\.data-\d{5}-of-\d{5}(\.tmp[0-9a-f]{32}|\.tempstate(?P<pid>\d{1,7}))$")
_PID_MAX = 1 << 22  # Linux's largest pid; TensorFlow's own .tempstate suffixes are random 64-bit numbers


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def remove_stale_temp_shards(destination: str) -> list[str]:
    """Delete the temp data shards (`DST.data-*.tmp<32 hex>`, or `.tempstate<pid>` of versions
    before) a killed rename-vars left for this DST (its process is gone); the paths removed."""
    import glob

    removed = []
    for path in glob.glob(glob.escape(destination) + ".data-?????-of-?????.t*"):
        match = _OUR_TEMP_RE.search(path)
        if not match or not os.path.isfile(path) or os.path.islink(path):
            continue
        pid = int(match["pid"]) if match["pid"] else temp_writer_pid(path)
        if pid >= _PID_MAX or (pid != os.getpid() and _process_alive(pid)):
            continue  # not a pid (TensorFlow's), or another rename-vars is writing this DST right now
        try:
            os.unlink(path)
            removed.append(path)
        except FileNotFoundError:
            pass
    return removed


def apply_rename(plan: RenamePlan, link: bool = False,
                 on_progress: Callable[[int], None] | None = None) -> RenameResult:
    """Write what `plan` says; `on_progress(bytes)` as data shards are copied (bytes_to_copy in all)."""
    if fs.is_url(plan.destination) or fs.is_url(plan.source):
        return _apply_rename_with_a_bucket(plan, on_progress)
    destination = plan.destination
    created_directories = make_parents(destination)  # as TensorFlow's BundleWriter makes its directory
    remove_stale_temp_shards(destination)
    written_files: list[str] = []
    temp_files: list[str] = []
    try:
        with open_bundle(plan.source) as bundle:
            entries = _new_entries(bundle, plan)
            num_shards = bundle.header.num_shards
            graph_part = None
            new_graph = None
            if plan.object_graph and (plan.renamed or plan.dropped):
                graph_var = bundle.variable(OBJECT_GRAPH_KEY)
                graph_part = graph_var.parts[0]
                new_graph = rewrite_object_graph(bundle.object_graph_bytes(), plan.mapping, set(plan.dropped))
            if _checkpoint_exists(destination):
                remove_checkpoint_files(destination)  # --overwrite: the old index goes first
            total = 0
            out_shards = num_shards + (1 if link and new_graph is not None else 0)
            for shard_id, source_path in enumerate(bundle.data_files()):
                if not os.path.exists(source_path):
                    raise NotFound(f"missing data shard {source_path}")
                final = data_file_path(destination, shard_id, out_shards)
                if link:
                    link_temp_beside(source_path, final, into=temp_files)
                    continue
                fd, _tmp = create_temp_beside(final, into=temp_files)  # a random name: never a planted file
                with os.fdopen(fd, "wb") as out:
                    graph_here = new_graph is not None and graph_part.shard_id == shard_id
                    graph_at_end = graph_here and graph_part.offset + graph_part.size == os.path.getsize(source_path)
                    total += _copy_shard(source_path, out, graph_part.offset if graph_at_end else None)
                    if on_progress:
                        on_progress(os.path.getsize(source_path))
                    if graph_here:
                        data, checksum = encode_strings([new_graph])
                        offset = out.seek(0, os.SEEK_END)  # past what copy_file_range wrote through the fd
                        out.write(data)
                        total += len(data)
                        entries[OBJECT_GRAPH_KEY.encode()] = make_entry(dtype_from_code(7), (), shard_id, offset,
                                                                         len(data), checksum)
            if link and new_graph is not None:
                # Linked shards are never written through: the new graph gets a shard of its own.
                data, checksum = encode_strings([new_graph])
                final = data_file_path(destination, num_shards, out_shards)
                prepare_replacement(final, data, into=temp_files)
                total += len(data)
                entries[OBJECT_GRAPH_KEY.encode()] = make_entry(dtype_from_code(7), (), num_shards, 0, len(data),
                                                                 checksum)
            with commit_section():  # an interrupt here waits: never a half-committed DST
                for shard_id, tmp in enumerate(temp_files):
                    final = data_file_path(destination, shard_id, out_shards)
                    written_files.append(final)
                    commit_replacement(tmp, final)
                temp_files = []
                written_files.append(destination + ".index")
                total += write_index(destination, out_shards, entries)
                if plan.update_state:
                    update_destination_state(destination)
                written_files = []  # complete: an interrupt delivered as the section ends must not undo it
                created_directories = []
        return RenameResult(plan, total)
    except BaseException:
        # Nothing half-written may stay: the index is written last, so without
        # it TensorFlow never picks the destination up; remove what we made.
        for tmp in temp_files:
            discard_replacement(tmp)
        for path in written_files:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        remove_empty(created_directories)
        raise
