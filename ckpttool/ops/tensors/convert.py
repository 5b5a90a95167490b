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
from ckpttool.storage.atomic import StagedFile, atomic_output, commit_section
from ckpttool.formats.dtypes import STRING, VARIANT, dtype_from_name
from ckpttool.formats.reader import open_checkpoint, weights_file_format
from ckpttool.formats.variables import OBJECT_GRAPH_KEY, Variable
from ckpttool.ops.destination import (check_parent_creatable, files_read, make_parents, refuse_writing_over_source,
                                      remove_empty)
from ckpttool.ops.tensors.model_names import check_naming, model_name_mapping
from ckpttool.ops.tensors.rename_rules import RenameRules, compute_mapping
from ckpttool.ops.targets import open_target, resolve_target

FORMATS = ("tf", "safetensors", "npz")
# A bundle's tensor copied or cast on the way is read in pieces of this size (1 GiB, paired runs:
# 512 KiB took 0.92x the CPU of 256 KiB for a copy, 0.87x for --dtype bfloat16, whose passes make
# fewer calls per byte; 0.3-0.8 MB more). A transpose gathers its tensor: there it made no difference.
STREAM_BYTES = 512 << 10
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
    # --layout / --transpose / --dtype: what is done to the stored bytes on the way (dtype and shape
    # above are the written ones)
    source_dtype: str = ""  # the stored dtype, when --dtype casts it
    source_shape: tuple[int, ...] | None = None  # the stored shape, when its axes are permuted
    perm: tuple[int, ...] | None = None  # stored axes in written order
    transforms: tuple[str, ...] = ()  # each change, said for people (the plan shows them)
    match: str = ""  # --like: how it was matched to the template's weight, "name" or "order"


@dataclass(frozen=True)
class Skipped:
    name: str
    reason: str


@dataclass(frozen=True)
class ConvertPlan:
    source: str  # the checkpoint prefix or file read
    source_format: str  # "v2" | "v1" | "safetensors" | "npz" | "keras" | "graphdef"
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
    update_state: bool = True  # TF destination: make it the latest checkpoint of its directory
    state_warning: str | None = None  # ... though it is older than the latest there
    template: str | None = None  # Keras destination (--like): the file giving its layout
    unmatched: tuple[str, ...] = ()  # --like --partial: template weights kept as the template has them
    unused: tuple[str, ...] = ()  # --like: source variables no template weight takes
    source_min_elements: int | None = None  # a graph source: its constants with fewer elements are left out
    warnings: tuple[str, ...] = ()  # rename rules that matched no name

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
    overflowed: tuple[tuple[str, int], ...] = ()  # --dtype: (name, finite values that became infinite)


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
    if by_name == "keras" and to == "tf" and not destination.endswith((".weights.h5", ".keras")):
        return "tf"  # `--to tf` names a TF prefix `model.h5` (its files model.h5.index ...), as it says
    if by_name == "keras":
        raise UsageProblem("Keras files are written only after a template of the model: add --like TEMPLATE "
                           "(its .keras or .weights.h5), or convert to a TF checkpoint, .safetensors or .npz")
    if to is None:
        if by_name is None:
            _refuse_unknown_extension(destination)
        return by_name or "tf"
    if to not in FORMATS:
        raise UsageProblem(f"--to must be one of {', '.join(FORMATS)}, not {to!r}")
    if by_name is not None and by_name != to:
        raise UsageProblem(f"--to {to} but {destination} is named like a {by_name} file")
    return to


_WORD_EXTENSION_RE = re.compile(r"\.([A-Za-z][A-Za-z0-9_]*)$")
_PREFIX_EXTENSIONS = {"ckpt"}  # model.ckpt: a checkpoint prefix's own (model.ckpt-5's has a step)


def _refuse_unknown_extension(destination: str) -> None:
    """`convert run out/model.h5` (or .pt, or the typo .safetensor) would write a TF checkpoint named
    model.h5.index: a name with another format's extension is a usage error unless --to tf says so."""
    match = _WORD_EXTENSION_RE.search(fs.basename(destination))
    if not match or match[1].lower() in _PREFIX_EXTENSIONS:
        return
    import difflib

    close = difflib.get_close_matches(match[1].lower(), ["safetensors", "npz"], n=1)
    raise UsageProblem(f"convert does not write .{match[1]} files: DST ends in .safetensors, "
                       f".safetensors.index.json, .npz, or is a TF checkpoint prefix"
                       + (f" (did you mean .{close[0]}?)" if close else ""),
                       hint=f"--to tf writes a TF checkpoint with the prefix {fs.basename(destination)} anyway")


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


def _metadata(reader, target, overrides: dict[str, str], sep: str | None, source_metadata: bool) -> dict[str, str]:
    """The safetensors __metadata__: the source's own, then what convert knows. Hugging Face
    loaders refuse a file without `format`: the source's is kept, else `pt` for PyTorch-style
    names (--sep .), else `tf`. The source is recorded by name only: the file may be published,
    and a local path says things about the machine it was made on."""
    from ckpttool.version import __version__
    from ckpttool.formats.tf.shards import split_step  # not through the run scanner: it loads slowly

    metadata = dict(getattr(reader, "metadata", {}) or {})
    if "format" not in metadata:
        metadata["format"] = "pt" if sep == "." else "tf"
    if source_metadata:
        metadata["source"] = fs.basename(target.prefix)
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
    from ckpttool.formats.tf.object_graph import rewrite_object_graph  # protobuf: only to rename a graph

    try:
        return rewrite_object_graph(graph, mapping, left_out), None
    except CkptError as exc:
        return None, f"the TF2 object graph cannot follow these names ({exc.message}); the tensors keep them"


def _transformed_item(var: Variable, new_name: str, change, cast: str | None) -> ConvertItem:
    """The item of `var`, with the layout's permutation (`change`) and the --dtype cast applied."""
    perm = change.perm if change is not None and var.dtype.fixed_width else None
    shape = change.shape if perm is not None else var.shape
    dtype = dtype_from_name(cast) if cast else var.dtype
    transforms = []
    if change is not None:
        transforms.append(change.describe(var.shape))
    if cast:
        transforms.append(f"cast {var.dtype.name} -> {cast}")
    size = var.size_bytes if not cast else var.size_bytes // var.dtype.itemsize * dtype.itemsize
    return ConvertItem(var.name, new_name, dtype.name, shape, size, var.dtype.name if cast else "",
                       var.shape if perm is not None else None, perm, tuple(transforms))


def _destination_path(destination: str) -> str:
    """DST made absolute; Refused if it is a directory, BadInput if its parents cannot be made."""
    destination = fs.absolute(destination)
    if fs.is_dir(destination):
        raise Refused(f"destination {destination} is a directory; give a file name or a checkpoint prefix")
    if not fs.is_url(destination):
        check_parent_creatable(destination)
    return destination


@dataclass(frozen=True)
class _Names:
    """What the naming, the layout and the rename rules make of a source's names (_plan_names)."""
    mapping: dict[str, str]  # kept source name -> name written
    dropped: list[str]
    changes: dict  # source name -> layouts.LayoutChange (its axes and the layout's name)
    rules: RenameRules  # the rules as applied: the layout's renames first, its separator
    idle: tuple[str, ...]  # rules that matched no name
    shown: dict[str, str]  # source name -> its name after `--names` (what --drop, --keep, --keep-dtype match)

    def cast_to(self, cast, var: Variable) -> str | None:
        """The dtype --dtype casts `var` to (--keep-dtype and step counters matched on its shown name)."""
        return cast.target(self.shown[var.name], var.dtype.name)


def _plan_names(variables: list[Variable], graph_bytes: bytes | None, rules: RenameRules, naming: str,
                layout: str | None, transposes: tuple[tuple[str, tuple[int, ...]], ...],
                embeddings: frozenset[str] = frozenset()) -> _Names:
    """Each source variable's written name, in this order: `--names model` names it by its path
    through the model; --drop, --keep and --drop-optimizer choose among those names; the layout
    (and --transpose) renames and permutes what it recognises in them; --map (matched on the names
    after `--names`, winning over the layout's name), --regex, --add-prefix, --strip-prefix and
    --ema rename (ops/tensors/rename_rules.compute_mapping), and --sep (`.` under --layout torch)
    comes last. --dtype (cast_to) and --like then work on the result."""
    import dataclasses

    from ckpttool.ops.tensors.layouts import plan_layout

    start = model_name_mapping([v.name for v in variables], graph_bytes, unique=False) if naming == "model" else None
    shown = {v.name: (start or {}).get(v.name, v.name) for v in variables}
    by_shown = plan_layout([(shown[v.name], v.shape) for v in variables], layout, transposes, embeddings)
    changes = {v.name: by_shown[shown[v.name]] for v in variables if shown[v.name] in by_shown}
    if changes or layout == "torch":  # the layout's names first: the user's rules apply on top
        renames = tuple((shown[name], c.name) for name, c in changes.items() if c.name != shown[name])
        rules = dataclasses.replace(rules, maps=renames + rules.maps,
                                    sep=rules.sep if rules.sep is not None or layout != "torch" else ".")
    named = compute_mapping([v.name for v in variables], rules, graph_bytes, start)
    return _Names(named.mapping, named.dropped, changes, rules, named.idle, shown)


def plan_convert(source: str, destination: str, *, to: str | None = None, rules: RenameRules = RenameRules(),
                 strict: bool = False, shard_size: int | None = None, metadata: dict[str, str] | None = None,
                 overwrite: bool = False, update_state: bool = True, source_metadata: bool = True,
                 naming: str = "key", layout: str | None = None,
                 transposes: tuple[tuple[str, tuple[int, ...]], ...] = (), cast=None, like: str | None = None,
                 partial: bool = False, from_graph: bool = False, min_elements: int | None = None) -> ConvertPlan:
    """What `convert` would write. Raises Unsupported for a dtype the destination cannot hold,
    Refused for an existing destination (unless overwrite) or a name collision. `naming`:
    "model" names variables by their path through the model first (ops/tensors/model_names.py), then
    the rename rules apply to those names. `layout` ("torch" or "tf"), `transposes` (REGEX, PERM)
    and `cast` (a casting.CastRule) change the tensors on the way. `like`: a Keras 3 file of the
    target model, whose layout a Keras destination takes (see ops/tensors/keras_like.py). `from_graph`,
    `min_elements`: read the constants of the source's graph (ops/targets.py)."""
    import dataclasses

    from ckpttool.ops.tensors.casting import CastRule

    cast = cast or CastRule()
    if partial and like is None:
        raise UsageProblem("--partial applies with --like only")
    to = destination_format(destination, to, like)
    check_naming(naming)
    if to == "keras":
        if shard_size is not None or metadata:
            raise UsageProblem("--shard-size and --metadata apply to safetensors destinations only")
        return _plan_like(source, destination, like, rules, partial, overwrite, naming, layout, transposes, cast)
    if shard_size is not None and (to != "safetensors" or shard_size <= 0):
        raise UsageProblem("--shard-size applies to safetensors destinations only, and must be positive")
    if metadata and to != "safetensors":
        raise UsageProblem("--metadata applies to safetensors destinations only")
    for key, value in (metadata or {}).items():
        if not (isinstance(key, str) and isinstance(value, str) and _is_text(key) and _is_text(value)):
            raise UsageProblem(f"metadata {key!r}: keys and values must be UTF-8 strings "
                               "(safetensors refuses a header holding anything else)")
    destination = _destination_path(destination)
    target = resolve_target(source, graph=from_graph, min_elements=min_elements)
    with open_target(target) as reader:
        variables = [v for v in reader.variables if not v.internal]
        graph_bytes = reader.object_graph_bytes() if reader.variable(OBJECT_GRAPH_KEY) is not None else None
        names = _plan_names(variables, graph_bytes, rules, naming, layout, transposes)
        mapping, dropped, changes, rules = names.mapping, names.dropped, names.changes, names.rules
        items, skipped = [], []
        for var in variables:
            if var.name not in mapping:
                continue
            reason = _cannot_hold(var, to)
            if reason:
                skipped.append(Skipped(var.name, reason))
                continue
            item = _transformed_item(var, mapping[var.name], changes.get(var.name), names.cast_to(cast, var))
            written = dataclasses.replace(var, dtype=dtype_from_name(item.dtype), shape=item.shape)
            if var.dtype.fixed_width:
                from ckpttool.formats.raw import check_stored_readable

                check_stored_readable(reader, var)
                _check_dtype(written, to)
            _check_name(mapping[var.name], to)
            _check_shape(var, to)
            items.append(item)
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
            st_metadata = _metadata(reader, target, dict(metadata or {}), rules.sep, source_metadata)
        sources = [*files_read(target, source), *reader.data_files()]
    written = (destination + ".index", destination + ".data-00000-of-00001") if to == "tf" else ()
    refuse_writing_over_source(sources, [destination, *files, *written], "convert")
    if _destination_exists(files, to, destination) and not overwrite:
        raise Refused(f"destination {destination} exists (use --overwrite to replace it)")
    if to == "tf" and update_state:
        from ckpttool.ops.runs.statefile import older_than_latest  # and the run scanner: only for a TF DST

        state_warning = older_than_latest(destination)
    else:
        state_warning = None
    return ConvertPlan(target.prefix, target.format, destination, to, tuple(items), tuple(dropped), tuple(skipped),
                       files, shards, st_metadata, graph, overwrite, update_state, state_warning,
                       source_min_elements=target.min_elements, warnings=names.idle)


def _plan_like(source: str, destination: str, like: str, rules: RenameRules, partial: bool,
               overwrite: bool, naming: str = "key", layout: str | None = None,
               transposes: tuple[tuple[str, tuple[int, ...]], ...] = (), cast=None) -> ConvertPlan:
    """A Keras 3 destination laid out as the template `like`: every template weight matched to a
    source variable (ops/tensors/keras_like.py) and checked (shape, dtype) before anything is written.
    The names are made as plan_convert makes them (_plan_names: `naming`, then `layout` ("tf":
    PyTorch layouts back to Keras') and `transposes`, then the rules), and `cast` (--dtype) applies:
    the template is matched by the names, shapes and dtypes the variables will have."""
    import dataclasses

    from ckpttool.formats.keras.keras3 import KerasWeights
    from ckpttool.formats.raw import check_stored_readable
    from ckpttool.ops.tensors.casting import CASTABLE, CastRule
    from ckpttool.ops.tensors.keras_like import match_template
    from ckpttool.ops.tensors.layouts import lone_matrices

    cast = cast or CastRule()
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
        def planned(embeddings: frozenset[str] = frozenset()):
            names = _plan_names(variables, graph_bytes, rules, naming, layout, transposes, embeddings)
            as_written = [dataclasses.replace(v, shape=names.changes[v.name].shape)
                          if v.name in names.changes and names.changes[v.name].perm is not None else v
                          for v in variables]
            return names, match_template(as_written, names.mapping, weights)

        names, found = planned()
        if layout == "tf" and found.unmatched:
            # PyTorch weights taken for Dense kernels by their rank alone may be Embedding tables the
            # names do not tell (`_operations.1.weight`): the template decides, when it leaves fewer unfilled
            lone = lone_matrices({names.shown[n]: c for n, c in names.changes.items()}, set(names.shown.values()))
            if lone:
                again = planned(lone)
                if len(again[1].unmatched) < len(found.unmatched) and not again[1].mismatched:
                    names, found = again
        changes = names.changes
        if found.mismatched:
            raise BadInput(f"{len(found.mismatched)} source variable(s) named as template weights have other shapes: "
                           + ", ".join(f"{s!r} {list(a)} for {t!r} {list(b)}" for s, t, a, b in found.mismatched[:10]))
        if found.unmatched and not partial:
            raise BadInput(f"{len(found.unmatched)} weight(s) of the template match no source variable: "
                           + ", ".join(repr(n) for n in found.unmatched[:20])
                           + (" ..." if len(found.unmatched) > 20 else ""),
                           hint="rename the source's variables with --map/--regex (`--names model` names a TF2 "
                                "checkpoint's by their path through the model), or keep the template's values "
                                "for these with --partial")
        by_path = {w.name: w for w in weights}
        items = []
        for match in found.matches:
            var, weight = reader.variable(match.source), by_path[match.target]
            if var.dtype.code == STRING:
                raise Unsupported(f"{var.name!r} holds strings, which convert does not write into Keras files",
                                  hint="leave it out with --drop and keep the template's value with --partial")
            item = _transformed_item(var, weight.name, changes.get(var.name), names.cast_to(cast, var))
            if item.dtype != weight.dtype.name:
                raise Unsupported(f"{var.name!r} is {item.dtype} but the template's {weight.name!r} is "
                                  f"{weight.dtype.name}; convert writes values in the template's dtype only",
                                  hint=f"cast with --dtype {weight.dtype.name}" if weight.dtype.name in CASTABLE
                                  else "give a source (or a template) with that dtype")
            check_stored_readable(reader, var)
            items.append(dataclasses.replace(item, match=match.by))
        sources = [fs.absolute(target.prefix), *(fs.absolute(f) for f in reader.data_files())]
    refuse_writing_over_source(sources + [fs.absolute(template_target.prefix)], [destination], "convert")
    if _destination_exists((destination,), "keras", destination) and not overwrite:
        raise Refused(f"destination {destination} exists (use --overwrite to replace it)")
    return ConvertPlan(target.prefix, target.format, destination, "keras", tuple(items), tuple(names.dropped), (),
                       (destination,), overwrite=overwrite, template=template_target.prefix,
                       unmatched=found.unmatched, unused=found.unused, warnings=names.idle)


# -- writing ----------------------------------------------------------------

def _commit_in_order(staged: list[StagedFile], remove_first: tuple[str, ...] = ()) -> None:
    """Remove `remove_first` (an old manifest), then move every staged file into place in order,
    interrupts deferred; on failure remove those moved."""
    committed: list[str] = []
    with commit_section():
        try:
            for path in remove_first:
                if os.path.lexists(path):
                    os.unlink(path)
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
    """The open source and a byte counter, handing out each item's bytes as written: the stored
    bytes (or what `stored` makes of them: average's mean), permuted and cast as the item says."""

    def __init__(self, reader, plan: ConvertPlan, on_progress: Callable[[int], None] | None,
                 stored: Callable[[ConvertItem], Iterator[bytes]] | None = None):
        self.reader = reader
        self.on_progress = on_progress
        self.by_name = {i.name: i for i in plan.items}
        self.stored = stored
        self.spill_beside = plan.destination  # where a transpose larger than memory is staged
        from ckpttool.formats.tf.bundle import Bundle

        self.bundle = isinstance(reader, Bundle)  # other readers read in pieces of their own size
        self.overflow: dict[str, list[int]] = {}

    def variable(self, item: ConvertItem) -> Variable:
        return self.reader.variable(item.source)

    def chunks(self, name: str) -> Iterator[bytes]:
        from ckpttool.formats.raw import iter_stored_views

        item = self.by_name[name]
        # every consumer below (the writers, the cast, the transpose) writes or copies a piece before
        # it asks for the next: the pieces may be views of one reused read buffer
        stream = self.stored(item) if self.stored else iter_stored_views(
            self.reader, self.variable(item), STREAM_BYTES if item.perm is None and self.bundle else None)
        if item.perm is not None:
            from ckpttool.ops.tensors.layouts import permute_stream

            itemsize = dtype_from_name(item.source_dtype or item.dtype).itemsize
            stream = permute_stream(stream, item.source_shape, itemsize, item.perm, self.spill_beside)
        if item.source_dtype:
            from ckpttool.ops.tensors.casting import cast_stream

            stream = cast_stream(stream, item.source_dtype, item.dtype, self.overflow.setdefault(name, [0]))
        for chunk in stream:
            yield chunk
            if self.on_progress:
                self.on_progress(len(chunk))

    def overflowed(self) -> tuple[tuple[str, int], ...]:
        return tuple((name, count[0]) for name, count in self.overflow.items() if count[0])

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
                writer.add_stream(item.name, dtype_from_name(item.dtype), item.shape, source.chunks(item.name))
        if plan.object_graph is not None:
            import numpy as np  # only here: converting to safetensors never needs numpy

            graph = np.empty((), dtype=object)
            graph[()] = plan.object_graph
            writer.add(OBJECT_GRAPH_KEY, dtype_from_name("string"), graph)
        with commit_section():  # Ctrl-C waits: the old checkpoint goes (index first) and the new one comes whole
            if plan.overwrite:
                remove_checkpoint_files(plan.destination)  # only now: everything new is staged
            writer.finish()
            if update_state and plan.update_state:
                update_destination_state(plan.destination)


def _write_safetensors(plan: ConvertPlan, source: _Source, update_state: bool = True) -> None:
    from ckpttool.formats.safetensors import index_document, write_safetensors

    staged: list[StagedFile] = []
    try:
        weight_map = {}
        for path, group in zip(plan.files, plan.shards):
            StagedFile(path, sync=False, into=staged)
            specs = [source.spec(plan.items[i]) for i in group]
            write_safetensors(staged[-1].handle, specs, source.chunks, plan.metadata)
            weight_map.update({plan.items[i].name: os.path.basename(path) for i in group})
        if len(plan.files) > len(plan.shards):  # a sharded set: its index goes last
            StagedFile(plan.files[-1], into=staged)
            staged[-1].handle.write(index_document(weight_map, plan.total_bytes, plan.metadata))
        # Overwriting a sharded set: its old manifest goes first, so it never names a mix of shards.
        _commit_in_order(staged, plan.files[-1:] if plan.overwrite and len(plan.files) > len(plan.shards) else ())
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

    from ckpttool.formats.keras import writer as keras_writer

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
            # through the temp's own descriptor: its name, in a directory others may write in, may
            # name another file by now (a planted link), which h5py would fill in place
            with os.fdopen(os.dup(staged.handle.fileno()), "r+b") as temp:
                keras_writer.fill_weights(temp, items)
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


def _apply_to_a_bucket(plan: ConvertPlan, on_progress: Callable[[int], None] | None, stored=None) -> ConvertResult:
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
        with open_checkpoint(plan.source, plan.source_format, plan.source_min_elements) as reader:
            source = _Source(reader, local_plan, on_progress, stored)
            _WRITERS[plan.to](local_plan, source, update_state=False)
        order = sorted(_written_files(local_plan), key=lambda f: f.endswith((".index", INDEX_SUFFIX)))
        if plan.overwrite:
            # The old destination goes before any new byte is written, its index (or manifest) first:
            # a failed or killed upload then leaves no checkpoint rather than an old index over new data.
            fs.remove_files(_old_destination_objects(plan))
        uploaded: list[str] = []
        try:
            for path in order[:-1]:
                url = fs.join(fs.dirname(plan.destination), fs.basename(path))
                uploaded.append(url)
                remote.upload(path, url)
            with commit_section():  # the index (one small object) and the state file: whole, or not at all
                url = fs.join(fs.dirname(plan.destination), fs.basename(order[-1]))
                uploaded.append(url)
                remote.upload(order[-1], url)
                if plan.to == "tf" and plan.update_state:
                    from ckpttool.ops.destination import update_destination_state

                    update_destination_state(plan.destination)
                uploaded = []  # complete: an interrupt delivered as the section ends must not undo it
        except BaseException:
            fs.remove_files(list(reversed(uploaded)))
            raise
        total = sum(os.path.getsize(f) for f in order)
    return ConvertResult(plan, _written_files(plan), total, source.overflowed())


def _old_destination_objects(plan: ConvertPlan) -> list[str]:
    """The objects of the destination being overwritten, its index (or manifest) first."""
    from ckpttool.formats.safetensors import INDEX_SUFFIX

    names = {e.name: e.path for e in _listing(fs.dirname(plan.destination))}
    if plan.to == "tf":
        stem = fs.basename(plan.destination)
        old = [path for name, path in names.items()
               if name == stem + ".index" or re.fullmatch(re.escape(stem) + r"\.data-\d{5}-of-\d{5}", name)]
    else:
        old = [names[fs.basename(f)] for f in plan.files if fs.basename(f) in names]
    return sorted(old, key=lambda path: not path.endswith((".index", INDEX_SUFFIX)))


def apply_convert(plan: ConvertPlan, on_progress: Callable[[int], None] | None = None,
                  stored: Callable[[ConvertItem], Iterator[bytes]] | None = None) -> ConvertResult:
    """Write what `plan` says; `on_progress(bytes)` is called as tensor bytes are moved. `stored(item)`,
    when given, hands out each item's bytes in place of the source's (average's mean)."""
    if fs.is_url(plan.destination):
        return _apply_to_a_bucket(plan, on_progress, stored)
    created_directories = make_parents(plan.destination)
    try:
        with open_checkpoint(plan.source, plan.source_format, plan.source_min_elements) as reader:
            source = _Source(reader, plan, on_progress, stored)
            _WRITERS[plan.to](plan, source)
    except BaseException:
        remove_empty(created_directories)
        raise
    files = _written_files(plan)
    return ConvertResult(plan, files, sum(os.path.getsize(f) for f in files), source.overflowed())
