"""`convert`: move weights between TensorFlow checkpoints, safetensors and .npz
(out of Keras 3 and legacy Keras HDF5 files; into Keras 3 files after a template
of the model, `--like`), without TensorFlow.

plan_convert decides everything (names through the rename rules, what each
format can hold, the files to write) and changes nothing; apply_convert then
streams tensor by tensor, moving the stored bytes (bit-exact, dtypes kept),
so memory stays bounded whatever the checkpoint size. Every file is written
under a temporary name and moved into place only when all of them are
complete (a sharded set's index last), so an interrupted convert leaves no
destination behind.
"""
from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass, field
from typing import Callable, Iterator

from ckpttool.errors import BadInput, CkptError, NotFound, Refused, Unsupported, UsageProblem
from ckpttool.storage import fs
from ckpttool.storage.atomic import StagedFile, atomic_output
from ckpttool.formats.dtypes import STRING, VARIANT, dtype_from_name
from ckpttool.formats.reader import open_checkpoint, weights_file_format
from ckpttool.formats.variables import OBJECT_GRAPH_KEY, Variable
from ckpttool.ops.destination import check_parent_creatable, make_parents, refuse_writing_over_source, remove_empty
from ckpttool.formats.tf.object_graph import rewrite_object_graph
from ckpttool.ops.rename_rules import RenameRules, compute_mapping
from ckpttool.ops.targets import resolve_target

FORMATS = ("tf", "safetensors", "npz")
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$", re.I)
_SIZE_UNITS = {"": 1, "b": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
               "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}


@dataclass(frozen=True)
class ConvertItem:
    source: str  # name in SRC
    name: str  # name in DST
    dtype: str
    shape: tuple[int, ...]
    size_bytes: int
    match: str = ""  # --like: how it was matched to the template's weight, "name" or "order"


@dataclass(frozen=True)
class Skipped:
    name: str
    reason: str


@dataclass(frozen=True)
class ConvertPlan:
    source: str  # the checkpoint prefix or file read
    source_format: str  # "v2" | "v1" | "safetensors" | "npz" | "keras"
    destination: str
    to: str  # "tf" | "safetensors" | "npz"
    items: tuple[ConvertItem, ...]
    dropped: tuple[str, ...]
    skipped: tuple[Skipped, ...]
    files: tuple[str, ...]  # written, in commit order (a sharded set's index last)
    shards: tuple[tuple[int, ...], ...] = ()  # safetensors: indexes into items, per data file
    metadata: dict[str, str] = field(default_factory=dict)  # safetensors __metadata__
    object_graph: bytes | None = None  # TF destination: the TF2 object graph carried over
    overwrite: bool = False
    template: str | None = None  # Keras destination (--like): the file giving its layout
    unmatched: tuple[str, ...] = ()  # --like --partial: template weights kept as the template has them
    unused: tuple[str, ...] = ()  # --like: source variables no template weight takes

    @property
    def renamed(self) -> tuple[tuple[str, str], ...]:
        return tuple((i.source, i.name) for i in self.items if i.source != i.name)

    @property
    def total_bytes(self) -> int:
        return sum(i.size_bytes for i in self.items)


@dataclass(frozen=True)
class ConvertResult:
    plan: ConvertPlan
    files: tuple[str, ...]
    bytes_written: int


def parse_size(text: str) -> int:
    """Bytes in `5GB` (10^9, as Hugging Face counts), `500MiB` (2^20), `1e6`-free plain numbers."""
    match = _SIZE_RE.match(text)
    unit = (match[2] or "").lower().rstrip("b") if match else ""
    if not match or unit not in _SIZE_UNITS or float(match[1]) <= 0:
        raise UsageProblem(f"bad size {text!r}: use a number with KB, MB, GB (or KiB, MiB, GiB), e.g. 5GB")
    return max(1, int(float(match[1]) * _SIZE_UNITS[unit]))


def destination_format(destination: str, to: str | None, like: str | None = None) -> str:
    by_name = weights_file_format(destination)
    if like is not None:
        if not destination.endswith((".weights.h5", ".keras")) or to not in (None, "keras"):
            raise UsageProblem("--like writes a Keras 3 file: name DST NAME.weights.h5 or NAME.keras")
        return "keras"
    if by_name == "keras":
        raise UsageProblem("Keras files are written only after a template of the model: add --like TEMPLATE "
                           "(its .keras or .weights.h5), or convert to a TF checkpoint, .safetensors or .npz")
    if to is None:
        return by_name or "tf"
    if to not in FORMATS:
        raise UsageProblem(f"--to must be one of {', '.join(FORMATS)}, not {to!r}")
    if by_name is not None and by_name != to:
        raise UsageProblem(f"--to {to} but {destination} is named like a {by_name} file")
    return to


def _cannot_hold(var: Variable, to: str) -> str | None:
    """Why `to` has no place for this kind of tensor (it is then skipped), or None."""
    if var.dtype.code == VARIANT:
        return "variant tensors (e.g. tf.data iterator state) are not weights; no format here rewrites them"
    if to != "tf" and var.dtype.code == STRING:
        return f"{to} has no string dtype"
    return None


def _check_dtype(var: Variable, to: str) -> None:
    """A fixed-width dtype the destination cannot hold exactly: refused, naming the variable."""
    from ckpttool.formats.safetensors import safetensors_dtype

    def numpy_storage(dtype):
        from ckpttool.formats.npz import numpy_storage  # and numpy with it: only when it is needed

        return numpy_storage(dtype)

    if to == "safetensors" and safetensors_dtype(var.dtype) is None:
        other = "npz" if numpy_storage(var.dtype) is not None else "a TF checkpoint"
        raise Unsupported(f"{var.name!r} is {var.dtype.name}, which safetensors cannot hold",
                          hint=f"leave it out with --drop, or convert to {other}")
    if to == "npz" and numpy_storage(var.dtype) is None:
        other = "safetensors" if safetensors_dtype(var.dtype) is not None else "a TF checkpoint"
        raise Unsupported(f"{var.name!r} is {var.dtype.name}, which numpy (.npz) cannot hold",
                          hint=f"leave it out with --drop, or convert to {other}")


def _check_shape(var: Variable, to: str) -> None:
    """A shape no numpy array or TensorFlow tensor can have (a header may claim [0, 10**30]):
    the converted file would be one that numpy, safetensors and TensorFlow refuse to load."""
    from ckpttool.formats.dtypes import array_shape_problem

    problem = array_shape_problem(var.shape, var.dtype.itemsize)
    if problem:
        raise Unsupported(f"{var.name!r} has a shape with {problem}, which {to} readers cannot load",
                          hint="leave it out with --drop")


def _is_text(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_name(name: str, to: str) -> None:
    if to == "tf":
        if name.startswith("\x00"):
            raise Unsupported(f"{name!r} cannot be a TF checkpoint key (a leading NUL marks slice entries)",
                              hint="rename it with --map or --regex")
        return
    if not _is_text(name):
        raise Unsupported(f"{name!r} is not valid UTF-8, which {to} names must be",
                          hint="rename it with --map or --regex")
    if to == "npz" and (len(name.encode("utf-8")) + len(".npy") > 0xFFFF or "\x00" in name):
        # a zip member name is at most 65535 bytes, and zipfile (numpy) cuts a name at a NUL
        raise Unsupported(f"{name[:100]!r}{'...' if len(name) > 100 else ''} cannot be an .npz member name "
                          "(at most 65531 UTF-8 bytes, no NUL)", hint="rename it with --map or --regex")
    if to == "safetensors" and name == "__metadata__":
        raise Unsupported("a tensor named '__metadata__' cannot be stored in safetensors (the name is reserved)",
                          hint="rename it with --map")


def _safetensors_layout(destination: str, sizes: list[int], shard_size: int | None
                        ) -> tuple[tuple[str, ...], tuple[tuple[int, ...], ...]]:
    """Data files (and the index, last) and the items of each file, filled greedily in order."""
    from ckpttool.formats.safetensors import INDEX_SUFFIX

    groups: list[list[int]] = [[]]
    filled = 0
    for i, size in enumerate(sizes):
        if shard_size and groups[-1] and filled + size > shard_size:
            groups.append([])
            filled = 0
        groups[-1].append(i)
        filled += size
    sharded = destination.endswith(INDEX_SUFFIX)
    if len(groups) == 1 and not sharded:
        return (destination,), (tuple(groups[0]),)
    stem = destination[: -len(INDEX_SUFFIX)] if sharded else re.sub(r"\.safetensors$", "", destination)
    count = len(groups)
    files = tuple(f"{stem}-{i + 1:05d}-of-{count:05d}.safetensors" for i in range(count))
    return files + (stem + INDEX_SUFFIX,), tuple(tuple(g) for g in groups)


def _destination_exists(plan_files: tuple[str, ...], to: str, destination: str) -> bool:
    if to == "tf":
        if fs.is_url(destination):
            prefix = fs.basename(destination)
            return any(e.name == prefix + ".index" or e.name.startswith(prefix + ".data-")
                       for e in _listing(fs.dirname(destination)))
        return os.path.exists(destination + ".index") or bool(glob.glob(glob.escape(destination) + ".data-*"))
    if fs.is_url(destination):
        names = {e.name for e in _listing(fs.dirname(destination))}
        return any(fs.basename(f) in names for f in plan_files)
    return any(os.path.lexists(f) for f in plan_files)


def _listing(directory: str) -> list[fs.Entry]:
    try:
        return fs.list_dir(directory)
    except NotFound:
        return []  # nothing under that prefix yet


def _metadata(reader, target, overrides: dict[str, str]) -> dict[str, str]:
    from ckpttool import __version__
    from ckpttool.ops.scan import split_step

    metadata = dict(getattr(reader, "metadata", {}) or {})
    if target.format in ("v1", "v2", "keras", "keras_h5"):
        metadata["format"] = "tf"  # TensorFlow names and layouts, as Hugging Face labels them
    metadata["source"] = fs.absolute(target.prefix)
    metadata["source_format"] = target.format
    step = split_step(fs.basename(target.prefix))[1] if target.format in ("v1", "v2") else None
    if step is not None:
        metadata["step"] = str(step)
    metadata["converted_by"] = f"ckpttool {__version__}"
    metadata.update(overrides)
    return metadata


def _object_graph(reader, to: str, mapping: dict[str, str], left_out: set[str]) -> tuple[bytes | None, str | None]:
    """(graph to write, why it is skipped): carried into a TF destination, consistent with the new names."""
    if to != "tf":
        return None, f"the TF2 object graph: {to} holds tensors only"
    graph = reader.object_graph_bytes()
    if graph is None or (not left_out and all(old == new for old, new in mapping.items())):
        return graph, None
    try:
        return rewrite_object_graph(graph, mapping, left_out), None
    except CkptError as exc:
        return None, f"the TF2 object graph cannot follow these names ({exc.message}); the tensors keep them"


def _destination_path(destination: str) -> str:
    """DST made absolute; Refused if it is a directory, BadInput if its parents cannot be made."""
    destination = fs.absolute(destination)
    if fs.is_dir(destination):
        raise Refused(f"destination {destination} is a directory; give a file name or a checkpoint prefix")
    if not fs.is_url(destination):
        check_parent_creatable(destination)
    return destination


def plan_convert(source: str, destination: str, *, to: str | None = None, rules: RenameRules = RenameRules(),
                 strict: bool = False, shard_size: int | None = None, metadata: dict[str, str] | None = None,
                 overwrite: bool = False, like: str | None = None, partial: bool = False) -> ConvertPlan:
    """What `convert` would write. Raises Unsupported for a dtype the destination cannot hold,
    Refused for an existing destination (unless overwrite) or a name collision. `like`: a Keras 3
    file of the target model, whose layout a Keras destination takes (see ops/keras_like.py)."""
    if partial and like is None:
        raise UsageProblem("--partial applies with --like only")
    to = destination_format(destination, to, like)
    if to == "keras":
        if shard_size is not None or metadata:
            raise UsageProblem("--shard-size and --metadata apply to safetensors destinations only")
        return _plan_like(source, destination, like, rules, partial, overwrite)
    if shard_size is not None and (to != "safetensors" or shard_size <= 0):
        raise UsageProblem("--shard-size applies to safetensors destinations only, and must be positive")
    if metadata and to != "safetensors":
        raise UsageProblem("--metadata applies to safetensors destinations only")
    for key, value in (metadata or {}).items():
        if not (isinstance(key, str) and isinstance(value, str) and _is_text(key) and _is_text(value)):
            raise UsageProblem(f"metadata {key!r}: keys and values must be UTF-8 strings "
                               "(safetensors refuses a header holding anything else)")
    destination = _destination_path(destination)
    target = resolve_target(source)
    with open_checkpoint(target.prefix, target.format) as reader:
        variables = [v for v in reader.variables if not v.internal]
        graph_bytes = reader.object_graph_bytes() if reader.variable(OBJECT_GRAPH_KEY) is not None else None
        mapping, dropped = compute_mapping([v.name for v in variables], rules, graph_bytes)
        items, skipped = [], []
        for var in variables:
            if var.name not in mapping:
                continue
            reason = _cannot_hold(var, to)
            if reason:
                skipped.append(Skipped(var.name, reason))
                continue
            if var.dtype.fixed_width:
                from ckpttool.formats.raw import check_stored_readable

                check_stored_readable(reader, var)
                _check_dtype(var, to)
            _check_name(mapping[var.name], to)
            _check_shape(var, to)
            items.append(ConvertItem(var.name, mapping[var.name], var.dtype.name, var.shape, var.size_bytes))
        graph = None
        if reader.variable(OBJECT_GRAPH_KEY) is not None and reader.object_graph_bytes() is not None:
            from ckpttool.ops.patterns import compile_pattern

            if any(compile_pattern(p, "--drop").search(OBJECT_GRAPH_KEY) for p in rules.drop):
                dropped.append(OBJECT_GRAPH_KEY)
            else:
                kept = {i.source: i.name for i in items}
                graph, reason = _object_graph(reader, to, kept, set(mapping) - set(kept) | set(dropped))
                if reason:
                    skipped.append(Skipped(OBJECT_GRAPH_KEY, reason))
        if strict and skipped:
            raise Unsupported(f"--strict: {len(skipped)} entr{'y' if len(skipped) == 1 else 'ies'} cannot be "
                              f"converted to {to}: " + ", ".join(repr(s.name) for s in skipped[:10])
                              + (" ..." if len(skipped) > 10 else ""),
                              hint="leave them out explicitly with --drop REGEX, or drop --strict")
        if not items:
            raise BadInput(f"nothing to convert: every variable of {target.prefix} was dropped or skipped")
        files: tuple[str, ...] = (destination,)
        shards: tuple[tuple[int, ...], ...] = ()
        st_metadata: dict[str, str] = {}
        if to == "tf":
            items.sort(key=lambda i: i.name.encode("utf-8", "surrogateescape"))
        elif to == "safetensors":
            files, shards = _safetensors_layout(destination, [i.size_bytes for i in items], shard_size)
            st_metadata = _metadata(reader, target, dict(metadata or {}))
        sources = [fs.absolute(target.prefix), *(fs.absolute(f) for f in reader.data_files())]
    refuse_writing_over_source(sources, [destination, *files], "convert")
    if _destination_exists(files, to, destination) and not overwrite:
        raise Refused(f"destination {destination} exists (use --overwrite to replace it)")
    return ConvertPlan(target.prefix, target.format, destination, to, tuple(items), tuple(dropped), tuple(skipped),
                       files, shards, st_metadata, graph, overwrite)


def _plan_like(source: str, destination: str, like: str, rules: RenameRules, partial: bool,
               overwrite: bool) -> ConvertPlan:
    """A Keras 3 destination laid out as the template `like`: every template weight matched to a
    source variable (ops/keras_like.py) and checked (shape, dtype) before anything is written."""
    from ckpttool.formats.keras import KerasWeights
    from ckpttool.formats.raw import check_stored_readable
    from ckpttool.ops.keras_like import match_template

    destination = _destination_path(destination)
    template_target = resolve_target(like)
    if template_target.format != "keras":
        raise BadInput(f"--like {like}: a template is a Keras 3 .keras or .weights.h5 file, not "
                       f"{template_target.format}")
    with KerasWeights(template_target.prefix) as template:
        weights = list(template.variables)
    target = resolve_target(source)
    with open_checkpoint(target.prefix, target.format) as reader:
        variables = [v for v in reader.variables if not v.internal]
        graph_bytes = reader.object_graph_bytes() if reader.variable(OBJECT_GRAPH_KEY) is not None else None
        mapping, dropped = compute_mapping([v.name for v in variables], rules, graph_bytes)
        found = match_template(variables, mapping, weights)
        if found.mismatched:
            raise BadInput(f"{len(found.mismatched)} source variable(s) named as template weights have other shapes: "
                           + ", ".join(f"{s!r} {list(a)} for {t!r} {list(b)}" for s, t, a, b in found.mismatched[:10]))
        if found.unmatched and not partial:
            raise BadInput(f"{len(found.unmatched)} weight(s) of the template match no source variable: "
                           + ", ".join(repr(n) for n in found.unmatched[:20])
                           + (" ..." if len(found.unmatched) > 20 else ""),
                           hint="rename the source's variables with --map/--regex, or keep the template's "
                                "values for these with --partial")
        by_path = {w.name: w for w in weights}
        items = []
        for match in found.matches:
            var, weight = reader.variable(match.source), by_path[match.target]
            if var.dtype.code == STRING:
                raise Unsupported(f"{var.name!r} holds strings, which convert does not write into Keras files",
                                  hint="leave it out with --drop and keep the template's value with --partial")
            if var.dtype.name != weight.dtype.name:
                raise Unsupported(f"{var.name!r} is {var.dtype.name} but the template's {weight.name!r} is "
                                  f"{weight.dtype.name}; convert writes values as they are",
                                  hint="give a source (or a template) with that dtype")
            check_stored_readable(reader, var)
            items.append(ConvertItem(var.name, weight.name, var.dtype.name, var.shape, var.size_bytes, match.by))
        sources = [fs.absolute(target.prefix), *(fs.absolute(f) for f in reader.data_files())]
    refuse_writing_over_source(sources + [fs.absolute(template_target.prefix)], [destination], "convert")
    if _destination_exists((destination,), "keras", destination) and not overwrite:
        raise Refused(f"destination {destination} exists (use --overwrite to replace it)")
    return ConvertPlan(target.prefix, target.format, destination, "keras", tuple(items), tuple(dropped), (),
                       (destination,), overwrite=overwrite, template=template_target.prefix,
                       unmatched=found.unmatched, unused=found.unused)


# -- writing ----------------------------------------------------------------

def _commit_in_order(staged: list[StagedFile]) -> None:
    """Move every staged file into place in order; on failure remove those already moved."""
    committed: list[str] = []
    try:
        for file in staged:
            file.commit()
            committed.append(file.path)
    except BaseException:
        for path in committed:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        raise


class _Source:
    """The open source and a byte counter, handing out each item's stored bytes."""

    def __init__(self, reader, plan: ConvertPlan, on_progress: Callable[[int], None] | None):
        self.reader = reader
        self.on_progress = on_progress
        self.by_name = {i.name: i for i in plan.items}

    def variable(self, item: ConvertItem) -> Variable:
        return self.reader.variable(item.source)

    def chunks(self, name: str) -> Iterator[bytes]:
        from ckpttool.formats.raw import iter_stored_bytes

        for chunk in iter_stored_bytes(self.reader, self.variable(self.by_name[name])):
            yield chunk
            if self.on_progress:
                self.on_progress(len(chunk))

    def spec(self, item: ConvertItem):
        return item.name, dtype_from_name(item.dtype), item.shape


def _write_tf(plan: ConvertPlan, source: _Source, update_state: bool = True) -> None:
    from ckpttool.formats.tf.bundle_writer import BundleWriter, remove_checkpoint_files
    from ckpttool.ops.destination import update_destination_state

    with BundleWriter(plan.destination) as writer:
        for item in plan.items:
            var = source.variable(item)
            if var.dtype.code == STRING:
                writer.add(item.name, var.dtype, source.reader.read(var))
            else:
                writer.add_stream(item.name, var.dtype, var.shape, source.chunks(item.name))
        if plan.object_graph is not None:
            import numpy as np  # only here: converting to safetensors never needs numpy

            graph = np.empty((), dtype=object)
            graph[()] = plan.object_graph
            writer.add(OBJECT_GRAPH_KEY, dtype_from_name("string"), graph)
        if plan.overwrite:
            remove_checkpoint_files(plan.destination)  # only now: everything new is staged
        writer.finish()
    if update_state:
        update_destination_state(plan.destination)


def _write_safetensors(plan: ConvertPlan, source: _Source, update_state: bool = True) -> None:
    from ckpttool.formats.safetensors import index_document, write_safetensors

    staged: list[StagedFile] = []
    try:
        weight_map = {}
        for path, group in zip(plan.files, plan.shards):
            staged.append(StagedFile(path, sync=False))
            specs = [source.spec(plan.items[i]) for i in group]
            write_safetensors(staged[-1].handle, specs, source.chunks, plan.metadata)
            weight_map.update({plan.items[i].name: os.path.basename(path) for i in group})
        if len(plan.files) > len(plan.shards):  # a sharded set: its index goes last
            staged.append(StagedFile(plan.files[-1]))
            staged[-1].handle.write(index_document(weight_map, plan.total_bytes, plan.metadata))
        _commit_in_order(staged)
    except BaseException:
        for file in staged:
            file.discard()
        raise


def _write_npz(plan: ConvertPlan, source: _Source, update_state: bool = True) -> None:
    from ckpttool.formats.npz import write_npz

    with atomic_output(plan.destination, sync=False) as handle:
        write_npz(handle, [source.spec(i) for i in plan.items], source.chunks)


def _write_keras(plan: ConvertPlan, source: _Source, update_state: bool = True) -> None:
    """The template's weights file copied into a temp beside DST, each matched weight overwritten,
    then moved into place (for a .keras, the template's zip around it)."""
    import tempfile

    from ckpttool.formats import keras_writer

    items = [(i.name.encode("utf-8", "surrogateescape"), dtype_from_name(i.dtype).storage, i.shape,
              lambda name=i.name: source.chunks(name)) for i in plan.items]
    with tempfile.TemporaryDirectory(prefix="ckpttool-keras-") as scratch:
        if plan.destination.endswith(".keras"):
            weights = os.path.join(scratch, "model.weights.h5")
            with open(weights, "xb") as out:
                keras_writer.copy_template_weights(plan.template, out, _scratch_dir(scratch))
            keras_writer.fill_weights(weights, items)
            with atomic_output(plan.destination) as handle:
                keras_writer.write_archive(plan.template, weights, handle)
            return
        staged = StagedFile(plan.destination)
        try:
            keras_writer.copy_template_weights(plan.template, staged.handle, scratch)
            keras_writer.fill_weights(staged.tmp, items)
        except BaseException:
            staged.discard()
            raise
        staged.commit()


def _scratch_dir(parent: str) -> str:
    path = os.path.join(parent, "template")
    os.mkdir(path)
    return path


def _written_files(plan: ConvertPlan) -> tuple[str, ...]:
    return plan.files if plan.to != "tf" else (plan.destination + ".index", plan.destination + ".data-00000-of-00001")


_WRITERS = {"tf": _write_tf, "safetensors": _write_safetensors, "npz": _write_npz, "keras": _write_keras}


def _apply_to_a_bucket(plan: ConvertPlan, on_progress: Callable[[int], None] | None) -> ConvertResult:
    """Write into a local staging directory with the local writers, then upload in commit order: data
    first, the index or manifest last (each upload is a whole object, seen complete or not at all)."""
    import dataclasses
    import tempfile

    from ckpttool.storage import remote
    from ckpttool.formats.safetensors import INDEX_SUFFIX

    with tempfile.TemporaryDirectory(prefix="ckpttool-convert-") as staging:
        local = fs.join(staging, fs.basename(plan.destination))
        files = tuple(fs.join(staging, fs.basename(f)) for f in plan.files)
        local_plan = dataclasses.replace(plan, destination=local, files=files)
        with open_checkpoint(plan.source, plan.source_format) as reader:
            _WRITERS[plan.to](local_plan, _Source(reader, local_plan, on_progress), update_state=False)
        order = sorted(_written_files(local_plan), key=lambda f: f.endswith((".index", INDEX_SUFFIX)))
        uploaded: list[str] = []
        try:
            for path in order:
                url = fs.join(fs.dirname(plan.destination), fs.basename(path))
                remote.upload(path, url)
                uploaded.append(url)
        except BaseException:
            fs.remove_files(list(reversed(uploaded)))
            raise
        total = sum(os.path.getsize(f) for f in order)
    if plan.to == "tf":
        from ckpttool.ops.destination import update_destination_state

        update_destination_state(plan.destination)
    return ConvertResult(plan, _written_files(plan), total)


def apply_convert(plan: ConvertPlan, on_progress: Callable[[int], None] | None = None) -> ConvertResult:
    """Write what `plan` says; `on_progress(bytes)` is called as tensor bytes are moved."""
    if fs.is_url(plan.destination):
        return _apply_to_a_bucket(plan, on_progress)
    created_directories = make_parents(plan.destination)
    try:
        with open_checkpoint(plan.source, plan.source_format) as reader:
            _WRITERS[plan.to](plan, _Source(reader, plan, on_progress))
    except BaseException:
        remove_empty(created_directories)
        raise
    files = _written_files(plan)
    return ConvertResult(plan, files, sum(os.path.getsize(f) for f in files))
