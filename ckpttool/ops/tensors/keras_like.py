"""How `convert SRC model.weights.h5 --like TEMPLATE` fills a Keras 3 weights file: which source
variable goes into each weight of the template (a `.keras` or `.weights.h5` of the target model,
whose paths `layers/<layer>/vars/<i>` Keras 3 matches on load).

A template weight takes, in this order:
1. by name: the source variable whose name, after the rename rules, is its path
   (`layers/dense/vars/0`: a Keras 3 file converted out and back);
2. by order and shape within its layer: the source variables whose scope ends in the layer's
   name (`dense_1/kernel`, `model/dense_1/bias` for `layers/dense_1`), in the order Keras
   creates a layer's weights (kernel before bias, gamma, beta, moving mean, moving variance,
   the rest as the source lists them), the i-th of those for `vars/<i>`, when every shape of the
   layer agrees (else the layer is not paired so). Order decides only where it is known: weights
   of one shape are filled so only when the source has as many of that shape, each named as
   Keras names it (gamma, beta, moving_mean ...); else nothing tells which is which (PyTorch's
   weight, bias, running_mean, running_var) and the match is refused (BadInput, exit 3), listing
   the template's weights and the source's names.
   A layer name two source scopes or two template layers share is ambiguous: not matched so.
   A subclassed model's own weights (`vars/N` at the template's top) take the variables of the
   source scope that holds the scopes its top-level layers were paired with (`model/scale` beside
   `model/encoder/...`).
   Layers left unpaired by name are paired in the order of Keras' per-class counters when both
   sides have as many of a class (Keras 2's `dense_1`, `dense_2` are Keras 3's `dense`, `dense_1`).
   A TF2 checkpoint names no layers: under `--names model` a layer is a position in a list of the
   model (`model/_functional/_operations/2`, tf.keras' `layer_with_weights-1`). Such scopes are
   given a kind by what they hold (a kernel's rank, moving statistics, embeddings: _scope_kind) and
   paired, in position order, with the template's layers of that kind in counter order (`dense`,
   `dense_1` ...), when both sides have as many of the kind. This assumes the model's layers were
   created in the order they are called, as in a Sequential; shapes are still checked.
Shapes are checked on every match; what stays unmatched on either side is reported.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ckpttool.errors import BadInput
from ckpttool.formats.variables import Variable

_VARS_RE = re.compile(r"^(?:(.*)/)?vars/(\d+)$")
_COUNTER_RE = re.compile(r"^(.*)_(\d+)$")
# A scope named by its position in a list of the model (a TF2 object graph names no layers).
_POSITION_RE = re.compile(r"^(?:layer_with_weights-|layer-)?(\d+)$")
# The order Keras layers create their weights (Dense, Conv*, BatchNormalization, LayerNormalization,
# Embedding, RNN cells); names it does not know keep the source's order, after these.
# Keras 3 stores Dense and Conv kernels and Embedding tables as `_kernel`, `_embeddings` in a TF2 object graph.
_CREATION_ORDER = ("kernel", "_kernel", "depthwise_kernel", "pointwise_kernel", "recurrent_kernel", "embeddings",
                   "_embeddings", "bias", "gamma", "beta", "moving_mean", "moving_variance")


@dataclass(frozen=True)
class Match:
    source: str  # the source variable's name
    target: str  # the template weight's path
    by: str  # "name" | "order"


@dataclass(frozen=True)
class LikeMatch:
    matches: tuple[Match, ...]
    unmatched: tuple[str, ...]  # template weights nothing fills
    unused: tuple[str, ...]  # source variables nothing takes
    mismatched: tuple[tuple[str, str, tuple[int, ...], tuple[int, ...]], ...]  # (source, target, shapes) by name


def _template_layer(path: str) -> tuple[str, int] | None:
    """(layer path, index) of a Keras 3 weight path, `layers/dense/vars/0` -> (`layers/dense`, 0)."""
    match = _VARS_RE.match(path)
    return (match[1] or "", int(match[2])) if match else None


def _leaf(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def _creation_rank(name: str) -> int:
    leaf = re.sub(r":\d+$", "", _leaf(name))
    return _CREATION_ORDER.index(leaf) if leaf in _CREATION_ORDER else len(_CREATION_ORDER)


def _refuse_unknown_order(layer: str, ordered: list[Variable], weights: list[Variable],
                          mapping: dict[str, str]) -> None:
    """BadInput when order would decide among weights of one shape without the names saying which
    (a wrong guess loads without error and computes garbage)."""
    for shape in dict.fromkeys(w.shape for w in weights):
        candidates = [w.name for w in weights if w.shape == shape]
        sources = [v for v in ordered if v.shape == shape]
        ranks = [_creation_rank(mapping[v.name]) for v in sources]
        if len(candidates) == len(sources) == 1 or (
                len(candidates) == len(sources) and len(set(ranks)) == len(ranks)
                and max(ranks) < len(_CREATION_ORDER)):
            continue
        raise BadInput(f"template layer {layer!r}: nothing tells which of the source's "
                       + ", ".join(repr(v.name) for v in sources) + f" (shape {list(shape)}) fills which of "
                       + ", ".join(repr(c) for c in candidates) + "; refusing to fill them by order",
                       hint="name them as Keras does (kernel, bias, gamma, beta, moving_mean, moving_variance; "
                            "--layout tf for PyTorch names), or map each with --map")


def _counter(name: str) -> tuple[str, int]:
    """Keras' per-class counter of a layer name: `dense_2` -> (`dense`, 2), `dense` -> (`dense`, 0)."""
    match = _COUNTER_RE.match(name)
    return (match[1], int(match[2])) if match else (name, 0)


def _pairs_by_counter(template_keys: dict[str, list[str]], scopes: dict[str, dict[str, list[Variable]]],
                      paired: set[str]) -> list[tuple[str, list[Variable]]]:
    """Layers and scopes no name paired, paired in counter order within each class of layer: Keras 2
    counted from `dense_1` where Keras 3 counts from `dense`, so `dense_1`, `dense_2` -> `dense`,
    `dense_1`. Only when both sides have as many such layers of that class."""
    template_by_class: dict[str, list[tuple[int, str]]] = {}
    for key, layer_paths in template_keys.items():
        if len(layer_paths) == 1 and layer_paths[0] not in paired:
            base, count = _counter(key)
            template_by_class.setdefault(base, []).append((count, layer_paths[0]))
    source_by_class: dict[str, list[tuple[int, str, list[Variable]]]] = {}
    for key, candidates in scopes.items():
        if len(candidates) == 1 and next(iter(candidates)) not in paired:
            base, count = _counter(key)
            (scope, variables), = candidates.items()
            source_by_class.setdefault(base, []).append((count, scope, variables))
    pairs = []
    for base, layers in template_by_class.items():
        sources = sorted(source_by_class.get(base, []), key=lambda item: item[:2])
        if len(sources) == len(layers):
            pairs += [(layer, variables) for (_, layer), (_, _, variables) in zip(sorted(layers), sources)]
    return pairs


def _attribute(name: str) -> str:
    return re.sub(r":\d+$", "", _leaf(name))


def _scope_kind(variables: list[Variable], mapping: dict[str, str]) -> str | None:
    """The layer kind (ops/tensors/layouts.layer_kind's) of a scope from the variables it holds."""
    shapes = {_attribute(mapping[v.name]): v.shape for v in variables}
    if {"moving_mean", "moving_variance"} & set(shapes):
        return "batch_norm"
    if {"embeddings", "_embeddings"} & set(shapes):
        return "embedding"
    if "depthwise_kernel" in shapes:
        return "depthwise"
    kernel = shapes.get("_kernel", shapes.get("kernel"))
    if kernel is not None:
        if len(kernel) == 2:
            return "dense"
        bias = shapes.get("bias")
        if "kernel" in shapes and bias is not None and len(bias) == 1 and 3 <= len(kernel) <= 4:
            # Keras 3 names a depthwise and a transposed kernel `kernel` (a convolution's `_kernel`):
            # the bias tells them apart, in*mult against the transposed one's out (k..., out, in)
            if bias[0] == kernel[-2] * kernel[-1] != kernel[-1]:
                return "depthwise"
            if bias[0] == kernel[-2] != kernel[-1]:
                return "conv_transpose"
        return "conv" if 3 <= len(kernel) <= 5 else None
    return "layer_norm" if shapes and set(shapes) <= {"gamma", "beta"} else None


def _natural(scope: str) -> tuple:
    """Sort key of a scope: positions by their number (`_operations/2` before `_operations/10`)."""
    return tuple((0, int(m[1]), "") if (m := _POSITION_RE.match(part)) else (1, 0, part) for part in scope.split("/"))


def _pairs_by_position(template_keys: dict[str, list[str]], scopes: dict[str, dict[str, list[Variable]]],
                       paired: set[str], mapping: dict[str, str]) -> list[tuple[str, list[Variable]]]:
    """Template layers no name paired, each kind in counter order (one class name per kind), and the
    source's position scopes of that kind in position order, paired when both sides have as many."""
    from ckpttool.ops.tensors.layouts import layer_kind

    template_by_kind: dict[str, list[tuple[tuple[str, int], str]]] = {}
    for key, layer_paths in template_keys.items():
        kind = layer_kind(key)
        if kind is not None and len(layer_paths) == 1 and layer_paths[0] not in paired:
            template_by_kind.setdefault(kind, []).append((_counter(key), layer_paths[0]))
    source_by_kind: dict[str, list[tuple[str, list[Variable]]]] = {}
    for key, candidates in scopes.items():
        if _POSITION_RE.match(key):
            for scope, variables in candidates.items():
                kind = _scope_kind(variables, mapping)
                if kind is not None and scope not in paired:
                    source_by_kind.setdefault(kind, []).append((scope, variables))
    pairs = []
    for kind, layers in template_by_kind.items():
        sources = sorted(source_by_kind.get(kind, []), key=lambda item: _natural(item[0]))
        if len(sources) == len(layers) and len({base for (base, _), _ in layers}) == 1:
            pairs += [(layer, variables) for (_, layer), (_, variables) in zip(sorted(layers), sources)]
    return pairs


def match_template(sources: list[Variable], mapping: dict[str, str], template: list[Variable]) -> LikeMatch:
    """Match source variables (their new names in `mapping`) to the template's weights."""
    by_new_name = {mapping[v.name]: v for v in sources if v.name in mapping}
    matches: list[Match] = []
    mismatched = []
    taken: set[str] = set()
    filled: set[str] = set()
    for weight in template:
        var = by_new_name.get(weight.name)
        if var is None:
            continue
        if var.shape != weight.shape:
            mismatched.append((var.name, weight.name, var.shape, weight.shape))
        matches.append(Match(var.name, weight.name, "name"))
        taken.add(var.name)
        filled.add(weight.name)

    # By order and shape within each layer, the layers paired by name.
    layers: dict[str, dict[int, Variable]] = {}
    for weight in template:
        place = _template_layer(weight.name)
        if place is not None and weight.name not in filled:
            layers.setdefault(place[0], {})[place[1]] = weight
    template_keys: dict[str, list[str]] = {}
    for layer in layers:
        template_keys.setdefault(_leaf(layer) if layer else "", []).append(layer)
    scopes: dict[str, dict[str, list[Variable]]] = {}
    for new_name, var in by_new_name.items():
        if var.name in taken or "/" not in new_name:
            continue
        scope = new_name.rsplit("/", 1)[0]
        scopes.setdefault(_leaf(scope), {}).setdefault(scope, []).append(var)
    def assign(layer: str, variables: list[Variable]) -> bool:
        """Fill the layer's weights in order from the scope's variables when every shape agrees."""
        ordered = sorted(variables, key=lambda v: _creation_rank(mapping[v.name]))  # stable: source order kept
        weights = [layers[layer][index] for index in sorted(layers[layer])]
        if len(ordered) < len(weights) or any(v.shape != w.shape for v, w in zip(ordered, weights)):
            return False
        _refuse_unknown_order(layer, ordered, weights, mapping)
        for var, weight in zip(ordered, weights):
            matches.append(Match(var.name, weight.name, "order"))
            taken.add(var.name)
            filled.add(weight.name)
        return True

    paired: set[str] = set()
    parents: set[str] = set()  # the source scopes holding those paired with top-level template layers
    for key, layer_paths in template_keys.items():
        candidates = scopes.get(key, {})
        if len(layer_paths) == 1 and len(candidates) == 1:  # else no such scope, or ambiguous
            (scope, variables), = candidates.items()
            if assign(layer_paths[0], variables):
                paired |= {layer_paths[0], scope}
                if "/" not in layer_paths[0] and "/" in scope:
                    parents.add(scope.rsplit("/", 1)[0])
    # A subclassed model's own weights (`vars/N` at the template's top, `model/scale` in the source):
    # the scope that holds the scopes its top-level layers were paired with (`model/encoder` -> `model`).
    if "" in layers and len(parents) == 1:
        parent = next(iter(parents))
        own = scopes.get(_leaf(parent), {}).get(parent)
        if own is not None and assign("", own):
            paired |= {"", parent}
    for layer, variables in _pairs_by_counter(template_keys, scopes, paired):
        if assign(layer, variables):
            paired.add(layer)
    for layer, variables in _pairs_by_position(template_keys, scopes, paired, mapping):
        assign(layer, variables)
    unmatched = tuple(w.name for w in template if w.name not in filled)
    unused = tuple(v.name for v in sources if v.name in mapping and v.name not in taken)
    return LikeMatch(tuple(matches), unmatched, unused, tuple(mismatched))
