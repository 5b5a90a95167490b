"""ckpttool: a fast, safe, scriptable tool for TensorFlow checkpoint directories,
and the library under it (see ckpttool/api.py):

    import ckpttool
    ckpt = ckpttool.open("run/")            # lazy: variables listed, values read when asked
    weights = ckpttool.load("model.safetensors")
    ckpttool.latest("run/"); ckpttool.best("run/", "val_loss"); ckpttool.convert("run/", "model.safetensors")
    ckpttool.apply_prune(ckpttool.plan_prune("run/", keep_last=3))
    ckpttool.verify("run/"); ckpttool.diff("a/", "b/"); ckpttool.scan("run/")
    ckpttool.average("run/", "avg.safetensors", last=3)

Every command run imports this package, so the API is loaded on first use
(module __getattr__): `ckpttool latest` pays for none of it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Checkpoint", "VariableInfo", "apply_prune", "average", "best", "convert", "diff", "latest", "load",
           "open", "plan_prune", "scan", "verify"]

if TYPE_CHECKING:
    from ckpttool.api import (Checkpoint, VariableInfo, apply_prune, average, best, convert, diff, latest,  # noqa: A004
                              load, open, plan_prune, scan, verify)


def __getattr__(name: str) -> Any:
    if name in __all__:
        from ckpttool import api

        return getattr(api, name)
    raise AttributeError(f"module 'ckpttool' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
