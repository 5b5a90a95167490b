"""`inspect`: the variables of a checkpoint, with optional statistics, values,
slices, object paths and a summary of the graph stored beside it."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Callable

from ckpttool.errors import CkptError, UnknownVariable
from ckpttool.storage import fs
from ckpttool.text import quote
from ckpttool.formats.variables import OBJECT_GRAPH_KEY, format_slice, slice_shape
from ckpttool.ops.tensors.model_names import check_naming, reader_names
from ckpttool.ops.patterns import compile_optional
from ckpttool.ops.targets import Target, open_target, resolve_target

if TYPE_CHECKING:  # numpy (values, statistics), protobuf (--tree), graphs (--meta): imported when asked for
    import numpy as np

    from ckpttool.formats.tf.graphs.meta import MetaSummary
    from ckpttool.ops.tensors.stats import TensorStats


def read_meta_summary(path: str) -> MetaSummary:
    from ckpttool.formats.tf.graphs.meta import read_meta_summary as read

    return read(path)


@dataclass(frozen=True)
class SliceInfo:
    spec: str  # TensorFlow's slice spec, e.g. "0,3:-"
    shape: tuple[int, ...]
    shard_id: int | None


@dataclass(frozen=True)
class VariableReport:
    name: str
    dtype: str
    shape: tuple[int, ...]
    num_elements: int
    size_bytes: int
    partitioned: bool
    internal: bool
    num_slices: int
    slices: tuple[SliceInfo, ...] | None = None
    stats: TensorStats | None = None
    value: np.ndarray | None = None  # with values: None when left out by the values limit
    value_summarized: bool = False  # `value` holds the corners numpy shows of a large tensor (ops/tensors/values.py)
    object_path: str | None = None  # --tree: the shortest object path (TF2 checkpoints)
    object_paths: tuple[str, ...] | None = None  # --tree: every object path reaching it, the shortest first
    checkpoint_key: str | None = None  # naming "model": the stored key (`name` is the model name)
    sha256: str | None = None  # with_hash: the content digest (ops/tensors/manifest.py)


@dataclass(frozen=True)
class InspectReport:
    target: Target
    checkpoint: str
    format: str
    variables: tuple[VariableReport, ...]
    num_variables: int
    total_elements: int
    total_bytes: int
    meta: MetaSummary | None
    has_object_graph: bool
    filter_matches: int = 0  # variables the --filter pattern matched
    values_omitted: int = 0  # variables whose value the values limit left out
    warnings: tuple[str, ...] = ()  # how the target was found; data shards the index names but are gone
    file_metadata: dict | None = None  # --meta: a safetensors __metadata__, a .keras archive's model summary

    @property
    def all_warnings(self) -> tuple[str, ...]:
        return self.target.warnings + self.warnings


_SHARDS_LOOKED_AT = 64  # a hostile header may claim millions: look at this many, say how many more


def _missing_shards(reader) -> tuple[str, ...]:
    """A warning when data shards of the checkpoint are gone: names, dtypes and shapes come from
    the index alone then, as tf.train.list_variables gives them (values cannot be read)."""
    try:
        files = reader.data_files()
    except CkptError:
        return ()
    missing = [f for f in files[:_SHARDS_LOOKED_AT] if not fs.is_file(f)]
    if not missing:
        return ()
    more = f" (of the first {_SHARDS_LOOKED_AT} looked at)" if len(files) > _SHARDS_LOOKED_AT else ""
    names = ", ".join(fs.basename(f) for f in missing[:3]) + (" ..." if len(missing) > 3 else "")
    return (f"{reader.prefix} is incomplete: {len(missing)} of its {len(files)} data shard(s) are missing{more} "
            f"({names}); names, dtypes and shapes come from the index alone",)


VALUES_SUMMARY, VALUES_FULL = "summary", "full"


def inspect_checkpoint(
    target: str | Target,
    *,
    pattern: str | None = None,
    names: tuple[str, ...] = (),
    include_internal: bool = False,
    with_stats: bool = False,
    with_values: bool = False,
    values: str | None = None,
    values_limit: int | None = None,
    on_values: Callable[[int], None] | None = None,
    with_slices: bool = False,
    with_meta: bool = False,
    with_object_paths: bool = False,
    on_progress: Callable[[int], None] | None = None,
    naming: str = "key",
    graph: bool = False,
    min_elements: int | None = None,
    with_hash: bool = False,
) -> InspectReport:
    """`target`: a path or a resolved Target. Variables shown: all (internal ones with
    `include_internal`), or those matching `pattern` or named exactly in `names` (a name
    that does not exist is UnknownVariable). `values`: VALUES_SUMMARY (what numpy prints
    of a large tensor) or VALUES_FULL; `values_limit` leaves out values past that many
    stored bytes in total, and `on_values(bytes)` is told the stored bytes of the values
    about to be read (`with_values`: VALUES_FULL). `on_progress(bytes)` is called after each
    variable whose values were read (--stats). `naming`: "model" shows (and selects by) each
    variable's name through the model (ops/tensors/model_names.py), its key in `checkpoint_key`.
    `with_object_paths`: every object path that reaches each variable (--tree). `graph`: the constants
    of the target's graph instead of its variables; of a graph's constants those with fewer than
    `min_elements` elements are left out (default 2; `include_internal`: none). `with_hash`: each
    variable's content SHA-256, as `manifest` records it (read in parallel threads)."""
    values = values or (VALUES_FULL if with_values else None)
    regex = compile_optional(pattern, "--filter")
    check_naming(naming)
    if min_elements is None and include_internal:
        min_elements = 0
    if isinstance(target, str):
        target = resolve_target(target, graph_only_ok=True, graph=graph, min_elements=min_elements)
    elif min_elements is not None and target.min_elements is None:
        target = replace(target, min_elements=min_elements)
    if target.format == "none":
        return _graph_only_report(target, with_meta, names)
    with open_target(target) as reader:
        object_paths = None
        # The object graph is a tensor in a data shard: read it only for --tree, so that names and
        # shapes cost the index alone (a bucket: no data shard is fetched).
        has_object_graph = reader.variable(OBJECT_GRAPH_KEY) is not None
        graph_bytes = reader.object_graph_bytes() if with_object_paths and has_object_graph else None
        if graph_bytes is not None:
            from ckpttool.formats.tf.object_graph import key_all_paths, parse_object_graph

            object_paths = key_all_paths(parse_object_graph(graph_bytes)) or None
        shown = reader_names(reader, naming)
        incomplete = _missing_shards(reader) if target.format in ("v1", "v2") else _left_out(reader, target)
        if with_stats:
            from ckpttool.ops.tensors.stats import stats_of_chunks
        reports = []
        selected, filter_matches = _select(reader.variables, regex, names, include_internal, shown)
        included = _values_included(selected, values_limit) if values else set()
        if on_values and values:
            on_values(sum(selected[i].size_bytes for i in included))
        digests = _digests(reader, selected, on_progress) if with_hash else {}
        for i, var in enumerate(selected):
            stats = None
            if with_stats and var.dtype.kind in ("float", "int", "uint", "bool"):
                stats = stats_of_chunks(reader.iter_value_chunks(var))
                if on_progress:
                    on_progress(var.size_bytes)
            slices = None
            if with_slices and var.partitioned:
                slices = tuple(
                    SliceInfo(format_slice(ext), slice_shape(ext, var.shape), part.shard_id if var.parts else None)
                    for ext, part in zip(var.slices, var.parts or [None] * len(var.slices))
                )
            value, summarized = None, False
            if i in included:
                from ckpttool.ops.tensors.values import check_value_shape, needs_summary, read_corners  # numpy: only now

                check_value_shape(var)
                summarized = values == VALUES_SUMMARY and needs_summary(var)
                value = read_corners(reader, var) if summarized else reader.read(var)
            paths = object_paths.of(var.name) if object_paths is not None else None
            reports.append(VariableReport(
                name=shown[var.name], dtype=var.dtype.name, shape=var.shape, num_elements=var.num_elements,
                size_bytes=var.size_bytes, partitioned=var.partitioned, internal=var.internal,
                num_slices=len(var.slices), slices=slices, stats=stats, value=value, value_summarized=summarized,
                object_path=paths[0] if paths else None, object_paths=paths,
                checkpoint_key=var.name if naming == "model" else None, sha256=digests.get(var.name),
            ))
    meta = read_meta_summary(target.meta_path) if with_meta and target.meta_path else None
    file_metadata = _file_metadata(target, reader) if with_meta else None
    return InspectReport(
        target=target, checkpoint=target.prefix, format=target.format, variables=tuple(reports),
        num_variables=len(reports), total_elements=sum(r.num_elements for r in reports),
        total_bytes=sum(r.size_bytes for r in reports), meta=meta, has_object_graph=has_object_graph,
        warnings=incomplete,
        filter_matches=filter_matches, values_omitted=len(selected) - len(included) if values else 0,
        file_metadata=file_metadata,
    )


def _digests(reader, variables, on_progress: Callable[[int], None] | None) -> dict[str, str]:
    """Each variable's content digest; damage is raised, as reading its values would."""
    from ckpttool.ops.tensors.manifest import tensor_digests

    found = {}
    for var, outcome in tensor_digests(reader, variables, on_progress):
        if isinstance(outcome, CkptError):
            raise outcome
        found[var.name] = outcome
    return found


def _left_out(reader, target: Target) -> tuple[str, ...]:
    """A graph's small constants (shapes, axes, scalars) are not listed: say how many."""
    count = getattr(reader, "left_out", 0)
    if not count:
        return ()
    from ckpttool.formats.tf.graphs.graphdef import DEFAULT_MIN_ELEMENTS  # graphs only: listing a bundle never needs it

    limit = DEFAULT_MIN_ELEMENTS if target.min_elements is None else target.min_elements
    return (f"{count} constant(s) with fewer than {limit} elements left out (--min-elements 0 or --all "
            "lists them)",)


def _file_metadata(target: Target, reader) -> dict | None:
    """What a weights file says about itself besides its tensors (--meta)."""
    if target.format == "safetensors":
        return dict(getattr(reader, "metadata", {}) or {})
    if target.format == "keras" and target.prefix.endswith(".keras"):
        from ckpttool.formats.keras.meta import keras_archive_summary

        return keras_archive_summary(target.prefix)
    return None


def _select(variables, regex, names: tuple[str, ...], include_internal: bool, shown: dict[str, str]):
    """(the variables to show, how many the pattern matched); UnknownVariable for a name not there.
    Names and the pattern are matched against the shown names (`shown`: stored name -> shown)."""
    wanted = set(names)
    missing = wanted - {shown[var.name] for var in variables}
    if missing:
        raise unknown_variable(sorted(missing)[0], [shown[var.name] for var in variables])
    if regex is None and not wanted:
        return [var for var in variables if include_internal or not var.internal], 0
    matched = [var for var in variables
               if regex and (include_internal or not var.internal) and regex.search(shown[var.name])]
    chosen = {var.name for var in matched} | {var.name for var in variables if shown[var.name] in wanted}
    return [var for var in variables if var.name in chosen], len(matched)


def unknown_variable(name: str, known: list[str]) -> UnknownVariable:
    """`name` is not a variable: said with the names it may have meant."""
    import difflib

    close = [k for k in known if name in k][:3]
    close += [k for k in difflib.get_close_matches(name, known, n=3, cutoff=0.6) if k not in close]
    hint = ("did you mean " + ", ".join(quote(k) for k in close[:3]) + "?") if close else (
        "`ckpttool inspect -q` lists the names")
    return UnknownVariable(f"no variable {quote(name)} in the checkpoint", hint=hint)


def _values_included(variables, limit: int | None) -> set[int]:
    """Which variables' values fit `limit` stored bytes in total (in order; a value too
    large is left out and smaller ones after it still come)."""
    if limit is None:
        return set(range(len(variables)))
    included, total = set(), 0
    for i, var in enumerate(variables):
        if total + var.size_bytes <= limit:
            included.add(i)
            total += var.size_bytes
    return included


def _graph_only_report(target: Target, with_meta: bool, names: tuple[str, ...]) -> InspectReport:
    """A SavedModel without variables: an empty list, and its graph if asked for."""
    if names:
        raise unknown_variable(names[0], [])
    meta = read_meta_summary(target.meta_path) if with_meta else None
    return InspectReport(target=target, checkpoint=target.prefix, format=target.format, variables=(),
                         num_variables=0, total_elements=0, total_bytes=0, meta=meta, has_object_graph=False)
