"""`ckpttool convert SRC DST`: weights between TF checkpoints, safetensors and .npz, out of Keras files, and
into a Keras 3 file laid out as a template (--like). Its options for Typer; the body is cli/hot/convert.py."""
from __future__ import annotations

import enum
from typing import Annotated, List, Optional

import typer

from ckpttool.cli.hot import convert
from ckpttool.cli.options import (AddPrefix, DropOpt, DropOptimizer, DryRun, Ema, Json, KeepOpt, MapFile, MapOpt,
                                  GraphOpt, MinElements, Naming, NamesOpt, NoUpdateState, Overwrite, Quiet, RegexOpt,
                                  StripPrefix)


class TargetFormat(str, enum.Enum):
    tf = "tf"
    safetensors = "safetensors"
    npz = "npz"


class Layout(str, enum.Enum):
    torch = "torch"
    tf = "tf"


class CastDtype(str, enum.Enum):
    bfloat16 = "bfloat16"
    float16 = "float16"
    float32 = "float32"
    float64 = "float64"


LayoutOpt = Annotated[Optional[Layout], typer.Option(
    "--layout", help="torch: Keras layouts to PyTorch's (Dense/Conv kernels transposed, kernel/embeddings/gamma -> "
                     "weight, beta -> bias, moving_mean/moving_variance -> running_mean/running_var, --sep . "
                     "unless given); tf: the way back. The layer kind comes from the names, else name and rank.")]
TransposeOpt = Annotated[Optional[List[str]], typer.Option(
    "--transpose", metavar="REGEX=PERM", help="Permute the axes of variables matching REGEX (e.g. kernel=1,0; "
                                              "repeatable); wins over --layout.")]
DtypeOpt = Annotated[Optional[CastDtype], typer.Option(
    "--dtype", help="Cast floating variables (float16/bfloat16/float32/float64) to this dtype, rounding to "
                    "nearest even; integers, strings and step counters keep theirs.")]
# What convert and average write: one definition of each output option (average writes as convert).
ToOpt = Annotated[Optional[TargetFormat], typer.Option(
    "--to", help="Format of DST: tf, safetensors or npz (default: from DST's extension; tf otherwise).")]
SepOpt = Annotated[Optional[str], typer.Option(
    "--sep", metavar="SEP", help="Replace the scope separator / by this in the new names, last (--sep . for "
                                 "PyTorch-style names).")]
StrictOpt = Annotated[bool, typer.Option(
    "--strict", help="Refuse (exit 3) instead of skipping what DST cannot hold (strings, variants, the TF2 "
                     "object graph).")]
ShardSizeOpt = Annotated[Optional[str], typer.Option(
    "--shard-size", metavar="SIZE", help="Split safetensors output into files of at most this size (5GB, 500MiB): "
                                         "NAME-00001-of-0000N.safetensors plus NAME.safetensors.index.json.")]
MetadataOpt = Annotated[Optional[List[str]], typer.Option(
    "--metadata", metavar="KEY=VALUE", help="KEY=VALUE for the safetensors __metadata__ (repeatable; e.g. format=pt).")]
KeepDtypeOpt = Annotated[Optional[List[str]], typer.Option(
    "--keep-dtype", metavar="REGEX", help="With --dtype: variables matching REGEX keep their dtype (repeatable; "
                                          "e.g. norm).")]


def command(
    source: Annotated[str, typer.Argument(
        metavar="SRC", help="What to read: a checkpoint (prefix, file, run directory, SavedModel), a .safetensors "
                            "file or *.safetensors.index.json, an .npz, a Keras .weights.h5 or .keras file, a "
                            "PyTorch .pt/.pth/.bin file or *.bin.index.json (read without torch; nothing its "
                            "pickle names is run).",
        show_default=False)],
    destination: Annotated[str, typer.Argument(
        metavar="DST", help="What to write: NAME.safetensors, NAME.safetensors.index.json (sharded), NAME.npz, "
                            "a checkpoint prefix such as out/model.ckpt-1, or (with --like) NAME.weights.h5 or "
                            "NAME.keras.", show_default=False)],
    to: ToOpt = None,
    names: NamesOpt = Naming.key,
    map_: MapOpt = None,
    map_file: MapFile = None,
    regex: RegexOpt = None,
    add_prefix: AddPrefix = None,
    strip_prefix: StripPrefix = None,
    ema: Ema = False,
    drop: DropOpt = None,
    keep: KeepOpt = None,
    drop_optimizer: DropOptimizer = False,
    sep: SepOpt = None,
    strict: StrictOpt = False,
    shard_size: ShardSizeOpt = None,
    metadata: MetadataOpt = None,
    no_source_metadata: Annotated[bool, typer.Option(
        "--no-source-metadata", help="Leave the source's name out of the safetensors __metadata__.")] = False,
    layout: LayoutOpt = None,
    transpose: TransposeOpt = None,
    dtype: DtypeOpt = None,
    keep_dtype: KeepDtypeOpt = None,
    like: Annotated[Optional[str], typer.Option(
        "--like", metavar="TEMPLATE",
        help="Write a Keras 3 DST (NAME.weights.h5 or NAME.keras) laid out as TEMPLATE, a .keras or .weights.h5 "
             "of the target model: each of its weights takes the source variable of its path (after the rename "
             "rules), else the one at its place (order and shape) in the layer of its name.")] = None,
    partial: Annotated[bool, typer.Option(
        "--partial", help="With --like: keep the template's values for weights no source variable matches "
                          "(otherwise exit 3 listing them).")] = False,
    graph: GraphOpt = False,
    min_elements: MinElements = None,
    overwrite: Overwrite = False,
    no_update_state: NoUpdateState = False,
    dry_run: DryRun = False,
    json_out: Json = False,
    quiet: Quiet = False,
):
    """Convert weights between TF checkpoints, safetensors, .npz and Keras files (Keras out: with --like).

    Values are moved bit-exactly with their dtypes, tensor by tensor (memory
    stays bounded). Names are made in this order: 1. --names model names each
    variable by its path through the model; 2. --drop, --keep and
    --drop-optimizer choose among those names; 3. --layout and --transpose
    rename and transpose the layer weights they recognise in them; 4. --map
    (matched on the names of step 1, winning over the layout's), --regex,
    --add-prefix, --strip-prefix and --ema rename; 5. --sep (. under --layout
    torch). Then --dtype casts (--keep-dtype matched on the names of step 1),
    and --like fills the template's weights with the result. A rule that
    matches no name is warned about (JSON: warnings). What DST
    cannot hold (strings, variants, the TF2 object graph) is skipped with a
    warning, or refused with --strict; a dtype DST cannot hold is refused
    naming the variable. A TF checkpoint DST is a V2 bundle, with the state
    file beside it updated (with a warning when DST is older than the latest
    checkpoint there; --no-update-state to leave it). Writes are atomic: an interrupted convert leaves no DST.
    """
    return convert.run(source, destination, to=to.value if to else None, names=names.value, map_=map_,
                       map_file=map_file, regex=regex, add_prefix=add_prefix, strip_prefix=strip_prefix, ema=ema,
                       drop=drop, keep=keep, drop_optimizer=drop_optimizer, sep=sep, strict=strict,
                       shard_size=shard_size, metadata=metadata, no_source_metadata=no_source_metadata,
                       layout=layout.value if layout else None, transpose=transpose,
                       dtype=dtype.value if dtype else None, keep_dtype=keep_dtype, like=like, partial=partial,
                       graph=graph, min_elements=min_elements, overwrite=overwrite, no_update_state=no_update_state,
                       dry_run=dry_run, json_out=json_out, quiet=quiet)
