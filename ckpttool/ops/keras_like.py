"""How `convert SRC model.weights.h5 --like TEMPLATE` fills a Keras 3 weights file: which source
variable goes into each weight of the template (a `.keras` or `.weights.h5` of the target model,
whose paths `layers/<layer>/vars/<i>` Keras 3 matches on load).

A template weight takes, in this order:
1. by name: the source variable whose name, after the rename rules, is its path
   (`layers/dense/vars/0`: a Keras 3 file converted out and back);
2. by order and shape within its layer: the source variables whose scope ends in the layer's
   name (`dense_1/kernel`, `model/dense_1/bias` for `layers/dense_1`), in the order Keras
   creates a layer's weights (kernel before bias, gamma, beta, moving mean, moving variance,
   the rest as the source lists them), the i-th of those for `vars/<i>` when the shapes agree.
   A layer name two source scopes or two template layers share is ambiguous: not matched so.
Shapes are checked on every match; what stays unmatched on either side is reported.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ckpttool.formats.variables import Variable

_VARS_RE = re.compile(r"^(?:(.*)/)?vars/(\d+)$")
# The order Keras layers create their weights (Dense, Conv*, BatchNormalization, LayerNormalization,
# Embedding, RNN cells); names it does not know keep the source's order, after these.
_CREATION_ORDER = ("kernel", "depthwise_kernel", "pointwise_kernel", "recurrent_kernel", "embeddings", "bias",
                   "gamma", "beta", "moving_mean", "moving_variance")


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
    for key, layer_paths in template_keys.items():
        candidates = scopes.get(key, {})
        if len(layer_paths) != 1 or len(candidates) != 1:
            continue  # no such scope, or ambiguous
        (variables,) = candidates.values()
        ordered = sorted(variables, key=lambda v: _creation_rank(mapping[v.name]))  # stable: source order kept
        weights = layers[layer_paths[0]]
        for position, index in enumerate(sorted(weights)):
            if position >= len(ordered):
                break
            var, weight = ordered[position], weights[index]
            if var.shape != weight.shape:
                break  # the layers differ: no guess past this point
            matches.append(Match(var.name, weight.name, "order"))
            taken.add(var.name)
            filled.add(weight.name)
    unmatched = tuple(w.name for w in template if w.name not in filled)
    unused = tuple(v.name for v in sources if v.name in mapping and v.name not in taken)
    return LikeMatch(tuple(matches), unmatched, unused, tuple(mismatched))
