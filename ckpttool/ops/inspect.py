"""`inspect`: the variables of a checkpoint, with optional statistics, values,
slices, object paths and a summary of the graph stored beside it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from ckpttool.formats.reader import open_checkpoint
from ckpttool.formats.variables import format_slice, slice_shape
from ckpttool.ops.patterns import compile_optional
from ckpttool.ops.targets import Target, resolve_target

if TYPE_CHECKING:  # numpy (values, statistics), protobuf (--tree), graphs (--meta): imported when asked for
    import numpy as np

    from ckpttool.formats.meta import MetaSummary
    from ckpttool.ops.stats import TensorStats


def read_meta_summary(path: str) -> MetaSummary:
    from ckpttool.formats.meta import read_meta_summary as read

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
    value: np.ndarray | None = None
    object_path: str | None = None


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


def inspect_checkpoint(
    target_path: str,
    *,
    pattern: str | None = None,
    include_internal: bool = False,
    with_stats: bool = False,
    with_values: bool = False,
    with_slices: bool = False,
    with_meta: bool = False,
    with_object_paths: bool = False,
    on_progress: Callable[[int], None] | None = None,
) -> InspectReport:
    """`on_progress(bytes)` is called after each variable whose values were read (--stats)."""
    regex = compile_optional(pattern, "--filter")
    target = resolve_target(target_path, graph_only_ok=True)
    if target.format == "none":
        return _graph_only_report(target, with_meta)
    with open_checkpoint(target.prefix, target.format) as reader:
        object_paths = None
        graph_bytes = reader.object_graph_bytes()
        if with_object_paths and graph_bytes is not None:
            from ckpttool.formats.object_graph import key_object_paths, parse_object_graph

            object_paths = key_object_paths(parse_object_graph(graph_bytes))
        if with_stats:
            from ckpttool.ops.stats import stats_of_chunks
        reports = []
        for var in reader.variables:
            if var.internal and not include_internal:
                continue
            if regex and not regex.search(var.name):
                continue
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
            reports.append(VariableReport(
                name=var.name, dtype=var.dtype.name, shape=var.shape, num_elements=var.num_elements,
                size_bytes=var.size_bytes, partitioned=var.partitioned, internal=var.internal,
                num_slices=len(var.slices), slices=slices, stats=stats, value=reader.read(var) if with_values else None,
                object_path=object_paths.of(var.name) if object_paths else None,
            ))
    meta = read_meta_summary(target.meta_path) if with_meta and target.meta_path else None
    if with_meta and not target.meta_path:
        meta = None
    return InspectReport(
        target=target, checkpoint=target.prefix, format=target.format, variables=tuple(reports),
        num_variables=len(reports), total_elements=sum(r.num_elements for r in reports),
        total_bytes=sum(r.size_bytes for r in reports), meta=meta, has_object_graph=graph_bytes is not None,
    )


def _graph_only_report(target: Target, with_meta: bool) -> InspectReport:
    """A SavedModel without variables: an empty list, and its graph if asked for."""
    meta = read_meta_summary(target.meta_path) if with_meta else None
    return InspectReport(target=target, checkpoint=target.prefix, format=target.format, variables=(),
                         num_variables=0, total_elements=0, total_bytes=0, meta=meta, has_object_graph=False)
