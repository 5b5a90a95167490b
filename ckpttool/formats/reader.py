"""One entry point for reading a checkpoint whatever its format: V2 bundle, V1
file, a weights file (safetensors, .npz, Keras 3, legacy Keras HDF5), chosen by extension (which
kind of Keras file, a Keras 3 one or a legacy HDF5 model, by its bytes), a PyTorch file (by its
bytes alone, whatever its name: a zip holding <root>/data.pkl or a legacy torch.save file; a sharded
set by its `*.bin.index.json`), the constants of a graph (a GraphDef `.pb`, a `.meta`, a
`saved_model.pb`: "graphdef"), or an Orbax checkpoint directory or item ("orbax", by the metadata
files in it)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Union

from ckpttool.errors import CkptError, CorruptCheckpoint, NotFound, Unsupported
from ckpttool.storage import fs
from ckpttool.formats.tf.bundle import Bundle, open_bundle
from ckpttool.formats.tf.shards import checkpoint_exists, split_v1_pattern
from ckpttool.formats.tf.table import is_table_file

if TYPE_CHECKING:  # V1 files need numpy and protobuf at once: imported only for them
    from ckpttool.formats.tf.v1 import V1Checkpoint

Reader = Union[Bundle, "V1Checkpoint"]
WEIGHTS_FORMATS = ("safetensors", "npz", "keras", "keras_h5", "pytorch")
PYTORCH_FORMAT = "pytorch"
GRAPH_FORMAT = "graphdef"  # a graph's Const nodes read as variables (formats/tf/graphs/graphdef.py)


def weights_file_format(path: str) -> str | None:
    """"safetensors", "npz" or "keras" for a weights file named so (any Keras file, HDF5 or zip: see
    keras_file_format); None for anything else."""
    if path.endswith((".safetensors", ".safetensors.index.json")):
        return "safetensors"
    if path.endswith(".npz"):
        return "npz"
    if path.endswith((".h5", ".hdf5", ".keras")):
        return "keras"
    return None


def keras_file_format(path: str) -> str:
    """"keras_h5" for a legacy Keras HDF5 file (Keras 1/2, tf.keras), "keras" for a Keras 3 one,
    by the file's bytes whatever its name (a legacy model may be named .keras). An HDF5 file of
    neither kind is refused, unless named as Keras 3 names its files."""
    from ckpttool.formats.keras.legacy import FORMAT, hdf5_kind

    kind = hdf5_kind(path)
    if kind == "legacy":
        return FORMAT
    if kind == "other" and not path.endswith((".weights.h5", ".keras")):
        raise Unsupported(f"{path} is an HDF5 file, not a TensorFlow checkpoint nor a Keras model or weights file "
                          "(no layer_names list, no Keras 3 layers/ group)",
                          hint="ckpttool reads Keras 3 files (*.weights.h5, *.keras) and the .h5 files Keras 1/2 "
                               "and tf.keras wrote with model.save or save_weights")
    return "keras"


def pytorch_file_format(path: str) -> str | None:
    """"pytorch" for a PyTorch file by its bytes (or a sharded set's index by its name), else None."""
    try:
        if not fs.is_file(path):  # no file, no PyTorch: a TF prefix is asked too, before the readers load
            return None
    except (CkptError, OSError):
        pass  # the checks below answer as they always have
    from ckpttool.formats.pytorch.archive import sniff
    from ckpttool.formats.pytorch.reader import is_index_path

    if is_index_path(path):
        return PYTORCH_FORMAT if fs.is_file(path) else None
    return PYTORCH_FORMAT if sniff(path) else None


def detect_format(prefix: str) -> str:
    if fs.is_file(prefix + ".index"):
        return "v2"
    from ckpttool.formats.orbax.tree import is_orbax_dir  # its files say: _METADATA in it or in an item

    if is_orbax_dir(prefix):
        return "orbax"
    if split_v1_pattern(fs.basename(prefix)):  # the shards of a sharded V1 save, P-?????-of-N
        if checkpoint_exists(prefix):
            return "v1"
    if fs.is_file(prefix):
        if is_table_file(prefix):
            return "v1"
        if pytorch_file_format(prefix):
            return PYTORCH_FORMAT
        raise CorruptCheckpoint(f"{prefix} is not a checkpoint (no index table found)")
    raise NotFound(f"no checkpoint at {prefix}")


def open_checkpoint(prefix: str, fmt: str | None = None, min_elements: int | None = None) -> Reader:
    """`min_elements`: for a graph, the constants with fewer elements are left out (default 2)."""
    fmt = fmt or weights_file_format(prefix) or detect_format(prefix)
    if fmt == GRAPH_FORMAT:
        from ckpttool.formats.tf.graphs.graphdef import DEFAULT_MIN_ELEMENTS, GraphConstants

        return GraphConstants(prefix, DEFAULT_MIN_ELEMENTS if min_elements is None else min_elements)
    if fmt == "keras":
        fmt = keras_file_format(prefix)
    if fmt == "safetensors":
        from ckpttool.formats.safetensors import SafetensorsReader

        return SafetensorsReader(prefix)
    if fmt == "npz":
        from ckpttool.formats.npz import NpzReader

        return NpzReader(prefix)
    if fmt == "keras":
        from ckpttool.formats.keras.keras3 import KerasWeights

        return KerasWeights(prefix)
    if fmt == "keras_h5":
        from ckpttool.formats.keras.legacy import KerasLegacyWeights

        return KerasLegacyWeights(prefix)
    if fmt == PYTORCH_FORMAT:
        from ckpttool.formats.pytorch.reader import PytorchReader

        return PytorchReader(prefix)
    if fmt == "v2":
        return open_bundle(prefix)
    if fmt == "orbax":
        from ckpttool.formats.orbax.reader import OrbaxReader

        return OrbaxReader(prefix)
    from ckpttool.formats.tf.v1 import V1Checkpoint

    return V1Checkpoint(prefix)
