"""Ops a graph uses that TensorFlow has not registered: custom ops of add-on
packages (TF-Text tokenizers, TF-DF inference, TF-Addons, TF-IO).

Loading such a graph fails deep inside TensorFlow; finding them first gives
one line naming the op and the pip package that registers it. When that
package is installed, importing it registers its ops, so that is tried
before giving up.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass

from ckpttool.errors import Unsupported


@dataclass(frozen=True)
class OpPackage:
    pip_name: str
    module: str  # importing it registers the ops


_TF_TEXT = OpPackage("tensorflow-text", "tensorflow_text")
_TF_DF = OpPackage("tensorflow-decision-forests", "tensorflow_decision_forests")
_TF_ADDONS = OpPackage("tensorflow-addons", "tensorflow_addons")
_TF_IO = OpPackage("tensorflow-io", "tensorflow_io")

# Op-name prefixes, from the packages' REGISTER_OP calls.
_PREFIXES = (
    ("TFText>", _TF_TEXT),
    ("Sentencepiece", _TF_TEXT),  # SentencepieceOp, SentencepieceTokenizeOp, ...
    ("SimpleML", _TF_DF),  # SimpleMLInferenceOpWithHandle, SimpleMLCreateModelResource, ...
    ("Addons>", _TF_ADDONS),
    ("IO>", _TF_IO),
)
_NAMES = {name: _TF_TEXT for name in (
    "CaseFoldUTF8", "NormalizeUTF8", "NormalizeUTF8WithOffsets", "FindSourceOffsets",
    "WhitespaceTokenizeWithOffsets", "WordpieceTokenizeWithOffsets", "UnicodeScriptTokenizeWithOffsets",
    "RegexSplitWithOffsets", "SplitMergeTokenizeWithOffsets", "ConstrainedSequence", "MaxSpanningTree",
)}


def package_for_op(op: str) -> OpPackage | None:
    if op in _NAMES:
        return _NAMES[op]
    return next((package for prefix, package in _PREFIXES if op.startswith(prefix)), None)


def _ops_used(graph_def) -> set[str]:
    functions = {f.signature.name for f in graph_def.library.function}
    used = {node.op for node in graph_def.node}
    for function in graph_def.library.function:
        used.update(node.op for node in function.node_def)
    return used - functions  # a node may call a library function by its name


def _unregistered(ops) -> list[str]:
    from tensorflow.python.framework import op_def_registry

    return sorted(op for op in ops if op_def_registry.get(op) is None)


def _try_import(package: OpPackage) -> bool:
    try:
        importlib.import_module(package.module)
    except Exception:  # noqa: BLE001 - absent, or built for another TensorFlow: either way not usable
        return False
    return True


def require_registered_ops(graph_def, source: str) -> None:
    """Exit 3 naming the ops TensorFlow cannot run, and the packages that provide them."""
    missing = _unregistered(_ops_used(graph_def))
    if not missing:
        return
    imported = {package: _try_import(package) for package in {package_for_op(op) for op in missing} - {None}}
    if any(imported.values()):
        missing = _unregistered(missing)
        if not missing:
            return
    packages = {op: package_for_op(op) for op in missing}
    if len(missing) == 1:
        op, package = missing[0], packages[missing[0]]
        message = f"{source} uses op {op!r}, which TensorFlow has not registered"
        message += f"; it comes from the {package.pip_name} package" if package else ""
    else:
        shown = [f"{op!r}" + (f" ({packages[op].pip_name})" if packages[op] else "") for op in missing[:5]]
        message = (f"{source} uses ops TensorFlow has not registered: {', '.join(shown)}"
                   + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
    known = sorted({p for p in packages.values() if p}, key=lambda p: p.pip_name)
    if not known:
        hint = "ckpttool knows no package that provides it; export-json still shows the graph"
    elif all(imported[p] for p in known):
        hint = (f"{', '.join(p.pip_name for p in known)} is installed but did not register it "
                "(its version must match TensorFlow's)")
    else:
        hint = f"pip install {' '.join(p.pip_name for p in known if not imported[p])} (matching your TensorFlow version)"
    raise Unsupported(message, hint=hint)
