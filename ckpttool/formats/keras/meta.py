"""What a Keras 3 `.keras` archive says about its model, beside the weights:
`metadata.json` (Keras version, save date) and `config.json` (the model's class
and its layers' names and classes), for `inspect --meta`. Both members are
read capped: a config is a few KiB to a few MiB, never what a hostile archive
declares."""
from __future__ import annotations

import json
import os

from ckpttool.errors import CorruptCheckpoint
from ckpttool.formats.zips import ZIP_ERRORS, check_zip_member, open_zip

_MEMBER_CAP = 16 << 20
_LAYERS_SHOWN = 1000


def _member_json(archive, name: str, path: str) -> dict | None:
    try:
        info = archive.getinfo(name)
    except KeyError:
        return None
    check_zip_member(info, path)
    if info.file_size > _MEMBER_CAP:
        raise CorruptCheckpoint(f"{os.path.basename(path)}: {name} declares {info.file_size} bytes; "
                                f"more than a model config holds ({_MEMBER_CAP} read at most)")
    try:
        with archive.open(info) as handle:
            document = json.loads(handle.read(_MEMBER_CAP + 1).decode("utf-8"))
    except (*ZIP_ERRORS, ValueError, UnicodeDecodeError) as exc:
        raise CorruptCheckpoint(f"{os.path.basename(path)}: {name} is not readable JSON ({exc})") from None
    return document if isinstance(document, dict) else None


def _layers(config: dict) -> list[dict]:
    """(name, class) of each layer of a Functional/Sequential model config, nested models flattened."""
    found: list[dict] = []

    def walk(node: object) -> None:
        if len(found) >= _LAYERS_SHOWN or not isinstance(node, dict):
            return
        inner = node.get("config")
        layers = inner.get("layers") if isinstance(inner, dict) else None
        if not isinstance(layers, list):
            return
        for layer in layers:
            if isinstance(layer, dict):
                layer_config = layer.get("config") if isinstance(layer.get("config"), dict) else {}
                found.append({"name": str(layer_config.get("name", layer.get("name", ""))),
                              "class_name": str(layer.get("class_name", ""))})
                walk(layer)

    walk(config)
    return found[:_LAYERS_SHOWN]


def keras_archive_summary(path: str) -> dict:
    """{"keras_version", "date_saved", "class_name", "name", "layers": [{"name", "class_name"}]}, each
    None (or empty) when the archive does not say."""
    archive = open_zip(path, "Keras archive")
    try:
        metadata = _member_json(archive, "metadata.json", path) or {}
        config = _member_json(archive, "config.json", path) or {}
    finally:
        archive.close()
    inner = config.get("config") if isinstance(config.get("config"), dict) else {}

    def text(value: object) -> str | None:
        return value if isinstance(value, str) else None

    return {"keras_version": text(metadata.get("keras_version")), "date_saved": text(metadata.get("date_saved")),
            "class_name": text(config.get("class_name")), "name": text(inner.get("name")),
            "layers": _layers(config)}
