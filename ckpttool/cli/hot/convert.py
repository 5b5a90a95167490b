"""`ckpttool convert SRC DST` (its options and help: cli/commands/convert.py): the body, importable
without Typer or Rich, which cli/quick.py runs for the common forms and the Typer command for the rest;
the options' values come as strings."""
from __future__ import annotations

from ckpttool.cli import render


def transform_options(layout: str | None, transpose, dtype: str | None, keep_dtype) -> dict:
    """plan_convert's keyword arguments for --layout, --transpose, --dtype and --keep-dtype (their values)."""
    from ckpttool.ops.tensors.casting import CastRule
    from ckpttool.ops.tensors.layouts import parse_transpose

    return {"layout": layout, "transposes": tuple(parse_transpose(t) for t in transpose or ()),
            "cast": CastRule(dtype, tuple(keep_dtype or ()))}


def warn_overflow(result) -> None:
    if result is not None:
        render.warn_all(f"{name}: {count} finite value{'s' if count != 1 else ''} overflowed to inf in the cast"
                        for name, count in result.overflowed)


def summary_of_transforms(plan) -> str:
    """`, 4 transposed, 12 cast` for the summary line (nothing when nothing was)."""
    transposed = sum(1 for i in plan.items if i.perm is not None)
    cast = sum(1 for i in plan.items if i.source_dtype)
    return (f", {transposed} transposed" if transposed else "") + (f", {cast} cast" if cast else "")


def transformed(plan) -> list[dict]:
    return [{"name": i.name, "source": i.source, "transforms": list(i.transforms)} for i in plan.items if i.transforms]


def _document(plan, result, dry_run: bool) -> dict:
    return {
        "source": plan.source, "source_format": plan.source_format, "destination": plan.destination,
        "format": plan.to, "dry_run": dry_run, "files": list(result.files if result else plan.files),
        "tensors": len(plan.items), "total_bytes": plan.total_bytes,
        "bytes_written": result.bytes_written if result else 0,
        "renamed": [{"from": old, "to": new} for old, new in plan.renamed],
        "dropped": list(plan.dropped),
        "skipped": [{"name": s.name, "reason": s.reason} for s in plan.skipped],
        "transformed": transformed(plan),
        "overflowed": [{"name": n, "count": c} for n, c in (result.overflowed if result else ())],
        "warnings": list(plan.warnings),
        **({"like": plan.template,
            "matched": [{"from": i.source, "to": i.name, "by": i.match} for i in plan.items],
            "unmatched": list(plan.unmatched), "unused": list(plan.unused)} if plan.template else {}),
    }


def run(source: str, destination: str, *, to: str | None = None, names: str = "key", map_=None, map_file=None,
        regex=None, add_prefix=None, strip_prefix=None, ema: bool = False, drop=None, keep=None,
        drop_optimizer: bool = False, sep: str | None = None, strict: bool = False, shard_size: str | None = None,
        metadata=None, no_source_metadata: bool = False, layout: str | None = None, transpose=None,
        dtype: str | None = None, keep_dtype=None, like: str | None = None, partial: bool = False,
        graph: bool = False, min_elements: int | None = None, overwrite: bool = False,
        no_update_state: bool = False, dry_run: bool = False, json_out: bool = False, quiet: bool = False) -> int:
    from ckpttool.ops.tensors.convert import apply_convert, parse_size, plan_convert
    from ckpttool.ops.tensors.rename_rules import RenameRules, parse_pair

    rules = RenameRules.from_options(maps=map_, map_file=map_file, regexes=regex, add_prefix=add_prefix,
                                     strip_prefix=strip_prefix, ema=ema, drop=drop, keep=keep,
                                     drop_optimizer=drop_optimizer, sep=sep)
    plan = plan_convert(source, destination, to=to, rules=rules, strict=strict,
                        shard_size=parse_size(shard_size) if shard_size is not None else None,
                        metadata=dict(parse_pair(m, "--metadata") for m in metadata or ()), overwrite=overwrite,
                        update_state=not no_update_state, source_metadata=not no_source_metadata,
                        naming=names, **transform_options(layout, transpose, dtype, keep_dtype),
                        like=like, partial=partial, from_graph=graph, min_elements=min_elements)
    if plan.state_warning:
        render.warn(plan.state_warning)
    render.warn_all(plan.warnings)
    render.warn_all(f"skipped {s.name}: {s.reason}" for s in plan.skipped)
    if plan.unmatched:
        render.warn_all([f"--partial: {render.plural(len(plan.unmatched), 'template weight')} kept as the template "
                         f"has them: {', '.join(plan.unmatched[:10])}{' ...' if len(plan.unmatched) > 10 else ''}"])
    result = None
    if not dry_run:
        from ckpttool.cli.progress import byte_progress

        with byte_progress("converting", plan.total_bytes, json_out) as advance:
            result = apply_convert(plan, on_progress=advance)
        warn_overflow(result)
    if json_out:
        render.emit_json("convert", _document(plan, result, dry_run))
    elif quiet:
        render.print_lines(item.name for item in plan.items)
    else:
        if dry_run:
            if plan.template:
                render.print_table([render.Column("source name", kind=render.NAME),
                                    render.Column("template weight", kind=render.NAME), render.Column("matched by"),
                                    render.Column("dtype"), render.Column("shape")],
                                   [(i.source, i.name, i.match, i.dtype, list(i.shape)) for i in plan.items])
            else:
                render.print_table([render.Column("source name", kind=render.NAME),
                                    render.Column("new name", kind=render.NAME), render.Column("dtype"),
                                    render.Column("shape"), render.Column("transforms")],
                                   [(i.source, i.name, i.dtype, list(i.shape), "; ".join(i.transforms))
                                    for i in plan.items])
        files = result.files if result else plan.files
        verb = "would write" if dry_run else "wrote"
        render.print_wrapped([f"{verb} {plan.to} {', '.join(files)}: {render.plural(len(plan.items), 'tensor')}, "
                            f"{render.human_bytes(plan.total_bytes)} ({len(plan.renamed)} renamed, "
                            f"{len(plan.dropped)} dropped, {len(plan.skipped)} skipped"
                            + summary_of_transforms(plan) + ")"])
    return 0
