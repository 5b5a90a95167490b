"""Legacy Keras HDF5 files, read only: what Keras 1/2 and tf.keras wrote with
`model.save("m.h5")` (a full model: `model_weights/` beside the `model_config`
and `training_config` attributes, and the optimizer's `optimizer_weights/`) and
`model.save_weights("w.h5")` (weights only, at the root), Hugging Face's
`tf_model.h5` among them, whatever the file is named (`.h5`, `.hdf5`, even
`.keras`: the bytes decide, see hdf5_kind).

The layout (keras/src/legacy/saving/legacy_h5_format.py): the weights group
lists its layers in the `layer_names` attribute (split into `layer_names0`,
`layer_names1`, ... when too long for one HDF5 attribute); each layer's group
lists its weights in `weight_names`, each the path of a dataset under that
group (`dense_1/kernel:0`). Variables are named as Keras 2 named them, without
the `:0` output suffix (`dense_1/kernel`); the optimizer's as
`optimizer/<its weight name>` (`optimizer/Adam/dense_1/kernel/m`), which
`--drop-optimizer` leaves out. Datasets no list names are not weights (Keras
never loads them) and are not listed.

Every name in these lists is hostile: a layer must be a group directly under the
weights group, a weight a dataset found by walking its layer's group (an HDF5
path such as `/x` would otherwise reach outside it). Datasets are checked and
read as the Keras 3 reader does (formats/keras/keras3.py: declared sizes against the
file, chunk-aligned reads), which this reader extends.
"""
from __future__ import annotations

import os
import re
from collections import Counter

import numpy as np

from ckpttool.errors import CorruptCheckpoint
from ckpttool.formats.keras.keras3 import HDF5_MAGIC, KerasWeights, _import_h5py
from ckpttool.formats.keras.probe import LAYER_NAMES_ATTRIBUTES, LEGACY_MODEL_GROUP, keras3_or_legacy
from ckpttool.storage import fs
from ckpttool.text import quote

FORMAT = "keras_h5"
MODEL_WEIGHTS = LEGACY_MODEL_GROUP
OPTIMIZER_WEIGHTS = "optimizer_weights"
TOP_LEVEL = "top_level_model_weights"  # Keras 3's legacy writer: the model's own weights, outside any layer
OPTIMIZER_PREFIX = "optimizer/"
_ATTRIBUTE_LIMIT = 16 << 20  # bytes of one name-list attribute read (real ones are under 64 KiB each)
_MAX_ATTRIBUTE_CHUNKS = 100_000
_OUTPUT_SUFFIX = re.compile(r":\d+$")


def _storage_size(attribute) -> int:
    """Bytes an attribute stores (a variable-length string's text lies in the file's heap, read from
    the file as it is: no more than the file holds)."""
    try:
        return attribute.get_storage_size()
    except RuntimeError:  # HDF5 reports an empty attribute's 0 bytes as an error
        return 0


def _names_attribute(group, name: str, what: str) -> list[str] | None:
    """The list Keras stores in `name` (or split over name0, name1, ...); None when there is none."""
    keys = [name] if name in group.attrs else []
    while not keys or keys[-1] != name:
        chunk = f"{name}{len(keys)}"
        if chunk not in group.attrs or len(keys) >= _MAX_ATTRIBUTE_CHUNKS:
            break
        keys.append(chunk)
    if not keys:
        return None
    names: list[str] = []
    for key in keys:
        if _storage_size(group.attrs.get_id(key)) > _ATTRIBUTE_LIMIT:
            raise CorruptCheckpoint(f"{what}: attribute {key!r} is larger than {_ATTRIBUTE_LIMIT} bytes")
        value = np.asarray(group.attrs[key])
        if not value.size:
            continue  # h5py reads an empty list back as float64
        if value.ndim > 1 or value.dtype.kind not in "SUO":
            raise CorruptCheckpoint(f"{what}: attribute {key!r} is not a list of names")
        for item in value.reshape(-1).tolist():
            if isinstance(item, bytes):
                item = item.decode("utf-8", "surrogateescape")
            if not isinstance(item, str):
                raise CorruptCheckpoint(f"{what}: attribute {key!r} is not a list of names")
            names.append(item)
    return names


def _lists_layers(group) -> bool:
    """Whether `group` has the `layer_names` attribute (or its first piece), whatever it holds."""
    return any(name in group.attrs for name in LAYER_NAMES_ATTRIBUTES)


def _weights_group(h5file) -> tuple[str, object] | None:
    """(path, group) of the layer weights: the root of a save_weights file, `model_weights` of a model."""
    if _lists_layers(h5file):
        return "", h5file
    h5py = _import_h5py()
    if MODEL_WEIGHTS in h5file and isinstance(h5file.get(MODEL_WEIGHTS, getlink=True), h5py.HardLink):
        group = h5file[MODEL_WEIGHTS]
        if isinstance(group, h5py.Group) and _lists_layers(group):
            return MODEL_WEIGHTS, group
    return None


def hdf5_kind(path: str) -> str | None:
    """What an HDF5 file holds, by its bytes and layout, not its name: "legacy" (its root lists
    `layer_names` or holds `model_weights` that does), "keras3" (Keras 3's `layers/` or `vars/`
    groups, or no group at all), "other" (HDF5 of another kind); None for a file that is no HDF5
    (a .keras zip, or something unreadable: the Keras 3 reader says why)."""
    if fs.read_range(path, 0, len(HDF5_MAGIC), "Keras file") != HDF5_MAGIC:
        return None
    h5py = _import_h5py()
    handle = fs.open_input(path, "Keras file") if fs.is_url(path) else None
    try:
        with h5py.File(handle if handle is not None else path, "r", locking=False) as h5file:
            # The rule `ls` applies to a file's bytes without h5py (formats/keras/probe.py).
            names = set(h5file.keys())
            return keras3_or_legacy(_weights_group(h5file) is not None, False, not names, names.__contains__)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError):
        return None
    finally:
        if handle is not None:
            handle.close()


class KerasLegacyWeights(KerasWeights):
    """An open legacy Keras HDF5 file as a checkpoint reader."""

    format = FORMAT

    def _named_datasets(self, h5py) -> list[tuple[str, bytes]]:
        """(name, dataset path) of each listed weight; a name two layers' lists share is qualified with
        the layer's group name (`dense/kernel` -> `dense_1/dense/kernel`), a clash that stays is refused."""
        base = os.path.basename(self.prefix)
        found = _weights_group(self._file)
        if found is None:
            raise CorruptCheckpoint(f"{base} is an HDF5 file but no Keras model or weights file: no "
                                    "layer_names list at its root or under model_weights")
        root, weights = found
        layers = _names_attribute(weights, "layer_names", f"{base} {quote(root or '/')}") or []
        named: list[tuple[str, bytes, str]] = []
        children = set(weights.keys())
        groups = [(weights, layer) for layer in layers]
        if TOP_LEVEL in children and TOP_LEVEL not in layers:
            groups.append((weights, TOP_LEVEL))
        for parent, layer in groups:
            named += self._layer_weights(h5py, parent, layer, children, "")
        if root and OPTIMIZER_WEIGHTS in self._file:
            named += self._layer_weights(h5py, self._file, OPTIMIZER_WEIGHTS, set(self._file.keys()),
                                         OPTIMIZER_PREFIX)
        counts = Counter(name for name, _path, _layer in named)
        seen: dict[str, bytes] = {}
        out = []
        for name, path, layer in named:
            if counts[name] > 1 and layer != OPTIMIZER_WEIGHTS:  # two layers name a weight so: each under its layer
                name = f"{layer}/{name}"
            if name in seen:
                raise CorruptCheckpoint(f"{base}: two weights are named {quote(name)} "
                                        f"({quote(seen[name].decode('utf-8', 'replace'))} and "
                                        f"{quote(path.decode('utf-8', 'replace'))})")
            seen[name] = path
            out.append((name, path))
        return out

    def _layer_weights(self, h5py, parent, layer: str, children: set[str], prefix: str
                       ) -> list[tuple[str, bytes, str]]:
        """(name, dataset path, layer) of each weight a layer group lists, found by walking that group."""
        base = os.path.basename(self.prefix)
        what = f"{base} layer {quote(layer)}"
        if layer not in children or not isinstance(parent.get(layer, getlink=True), h5py.HardLink) \
                or not isinstance(parent[layer], h5py.Group):
            raise CorruptCheckpoint(f"{what} is listed in layer_names but is no group of the file")
        group = parent[layer]
        weight_names = _names_attribute(group, "weight_names", what) or []
        datasets: set[bytes] = set()

        def visit(path: bytes, info) -> None:
            if info.type == h5py.h5o.TYPE_DATASET:
                datasets.add(path)

        if weight_names:
            h5py.h5o.visit(group.id, visit, info=True)
        group_path = group.name.encode("utf-8", "surrogateescape").lstrip(b"/")
        out = []
        for weight in weight_names:
            relative = weight.encode("utf-8", "surrogateescape")
            if relative not in datasets:
                raise CorruptCheckpoint(f"{what} lists weight {quote(weight)}, which is no dataset in its group")
            out.append((prefix + _OUTPUT_SUFFIX.sub("", weight), group_path + b"/" + relative, layer))
        return out
