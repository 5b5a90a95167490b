"""The rename rules that rename-vars and convert (and average) share: exact maps, map files,
regular expressions, prefixes, EMA promotion, drop/keep and the optimizer patterns, turned into one
source name -> new name mapping. Pure: knows names, not files (a map file is read through storage)."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass

from ckpttool.errors import BadInput, Refused, UnknownVariable, Unsupported, UsageProblem
from ckpttool.formats.variables import INTERNAL_NAMES
from ckpttool.storage import fs
from ckpttool.ops.patterns import compile_pattern
from ckpttool.text import is_exact_text

EMA_SUFFIX = "/ExponentialMovingAverage"
MAP_FILE_CAP = 256 << 20  # a name per line: far more names than any checkpoint holds


@dataclass(frozen=True)
class RenameRules:
    maps: tuple[tuple[str, str], ...] = ()  # --map and --map-file, exact
    regexes: tuple[tuple[str, str], ...] = ()
    add_prefix: str | None = None
    strip_prefix: str | None = None
    ema: bool = False
    drop: tuple[str, ...] = ()
    keep: tuple[str, ...] = ()
    drop_optimizer: bool = False  # leave out optimizer state (optimizer_roles)
    sep: str | None = None  # replaces "/" in the new names, last (`.` for PyTorch-style names)

    @classmethod
    def from_options(cls, *, maps=(), map_file: str | None = None, regexes=(), add_prefix: str | None = None,
                     strip_prefix: str | None = None, ema: bool = False, drop=(), keep=(),
                     drop_optimizer: bool = False, sep: str | None = None) -> "RenameRules":
        """Rules from option values as typed: `OLD=NEW` texts for maps and regexes, a map file's path."""
        pairs = tuple(parse_pair(m, "--map") for m in maps or ())
        if map_file:
            pairs += read_map_file(map_file)
        return cls(pairs, tuple(parse_pair(r, "--regex") for r in regexes or ()), add_prefix, strip_prefix, ema,
                   tuple(drop or ()), tuple(keep or ()), drop_optimizer, sep)


# TF1 slot variables, named after their variable: `dense/kernel/Adam`, `.../Momentum` ...
TF1_SLOT_PATTERN = (
    r"/(Adam|Adam_1|AdamW|AdamW_1|Nadam|Nadam_1|LazyAdam|LazyAdam_1|Adamax|Adamax_1|Momentum|RMSProp|RMSProp_1"
    r"|Adagrad|AdagradDA|AdagradDA_1|ProximalAdagrad|Adadelta|Adadelta_1|Ftrl|Ftrl_1|adam_m|adam_v|LAMB|LAMB_1)$")
# What --drop-optimizer leaves out of a source without a TF2 object graph (TF1 checkpoints, Keras
# files, safetensors, .npz), matched against source names. A TF2 checkpoint's object graph says
# which keys are optimizer state (formats/tf/object_graph.optimizer_keys): there these names lie,
# Keras 3 stores model weights under `optimizer/_trainable_variables/N`.
OPTIMIZER_PATTERNS = (
    TF1_SLOT_PATTERN,
    r"(^|/)beta[12]_power(_\d+)?$",  # TF1 Adam's accumulators
    r"\.OPTIMIZER_SLOT/",  # TF2 object-based slots: `<var>/.OPTIMIZER_SLOT/optimizer/m/...`
    r"^(optimizer|opt)/",  # Keras 3 files' `optimizer/vars/N`; tensors converted from `Checkpoint(optimizer=...)`
)

def parse_pair(text: str, option: str) -> tuple[str, str]:
    if "=" not in text:
        raise UsageProblem(f"{option} takes OLD=NEW, got {text!r}")
    old, new = text.split("=", 1)
    return old, new


def read_map_file(path: str) -> tuple[tuple[str, str], ...]:
    """A JSON object {old: new}, or lines `old new` (blank lines and # comments skipped)."""
    try:
        text = fs.read_capped(path, MAP_FILE_CAP, "map file").decode("utf-8")
    except UnicodeDecodeError:
        raise BadInput(f"map file {path} is not UTF-8 text") from None
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except RecursionError:  # nested deeper than Python's stack: no map is
            raise BadInput(f"map file {path} is not a JSON object of names (nested too deeply)") from None
        except ValueError as exc:
            raise BadInput(f"map file {path} is not valid JSON: {exc}") from None
        if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
            raise BadInput(f"map file {path}: every key and value must be a string")
        for old, new in data.items():
            if not is_exact_text(new):  # "\udc80": an escape JSON allows, no character (TF2 keys are UTF-8 text)
                raise BadInput(f"map file {path}: the new name of {old!r}, {new!r}, is not text (it holds a "
                               "lone surrogate, which no UTF-8 name can)")
        return tuple(data.items())
    pairs = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2:
            raise BadInput(f"map file {path}, line {number}: expected `old new`")
        pairs.append((parts[0], parts[1]))
    return tuple(pairs)


@dataclass(frozen=True)
class OptimizerRoles:
    state: frozenset[str]  # the names --drop-optimizer leaves out
    trained: frozenset[str]  # names of variables an optimizer trains: never all dropped


def optimizer_roles(names: list[str], object_graph: bytes | None = None,
                    drop_optimizer: bool = True) -> OptimizerRoles:
    """Optimizer state and trained variables among `names`: from the TF2 object graph when there is
    one (slot variables and what only the optimizer reaches), else from the names (TF1 slots name
    their variable: `w/Adam` trains `w`)."""
    graph = None
    if object_graph is not None:
        # protobuf loads only here: a plain rename or convert never needs it
        from ckpttool.formats.tf.object_graph import optimizer_keys, parse_object_graph

        try:
            graph = parse_object_graph(object_graph)
        except BadInput:
            if drop_optimizer:
                raise  # its optimizer state cannot be told from its names
            # --drop/--keep alone work on names; the refusal then knows only TF1 slot names
    if graph is not None:
        return OptimizerRoles(*optimizer_keys(graph).split(names))
    patterns = [re.compile(p) for p in OPTIMIZER_PATTERNS]
    state = frozenset(n for n in names if any(p.search(n) for p in patterns))
    slot = re.compile(TF1_SLOT_PATTERN)
    known = set(names) - state
    trained = frozenset(n[: m.start()] for n in state if (m := slot.search(n)) and n[: m.start()] in known)
    return OptimizerRoles(state, trained)


@dataclass(frozen=True)
class NameMapping:
    mapping: dict[str, str]  # kept source name -> new name
    dropped: list[str]  # source names left out
    idle: tuple[str, ...] = ()  # warnings: the rules that matched no name (`--regex 'a=b' matched no name`)


def _idle_rules(rules: RenameRules, regex_hits: list[bool], drop_hits: list[bool], keep_hits: list[bool],
                stripped: bool, ema_found: bool) -> tuple[str, ...]:
    """A warning for each rule that matched no name: a typo there changes nothing, silently."""
    idle = [f"--regex {f'{p}={r}'!r}" for (p, r), hit in zip(rules.regexes, regex_hits) if not hit]
    idle += [f"--drop {p!r}" for p, hit in zip(rules.drop, drop_hits) if not hit]
    idle += [f"--keep {p!r}" for p, hit in zip(rules.keep, keep_hits) if not hit]
    if rules.strip_prefix and not stripped:
        idle.append(f"--strip-prefix {rules.strip_prefix!r}")
    if rules.ema and not ema_found:
        idle.append("--ema (no name ends in /ExponentialMovingAverage)")
    return tuple(f"{rule} matched no name: it changed nothing" for rule in idle)


def compute_mapping(names: list[str], rules: RenameRules, object_graph: bytes | None = None,
                    start: dict[str, str] | None = None) -> NameMapping:
    """Kept source name -> new name, the dropped names, and the rules that matched none. Rules
    apply in DESIGN order: drop/keep (and drop-optimizer) on the names as given; then on each kept
    name map, regex, add-prefix, strip-prefix, ema, sep. `object_graph`: the source's TF2 object
    graph, which says what optimizer state is. `start`: a first name for source names (`--names
    model`, ops/tensors/model_names.py): the rules see, match and rename it in place of the source
    name. Refuses (BadInput) rules that drop every trained variable."""
    given = {name: (start or {}).get(name, name) for name in names}
    known = set(given.values())
    exact = dict(rules.maps)
    unknown = [old for old in exact if old not in known]
    if unknown:
        raise UnknownVariable("no variable named " + ", ".join(repr(u) for u in unknown) + " in the source",
                              hint="list the names with `ckpttool inspect -q SRC`")
    regexes = [(compile_pattern(p, "--regex"), repl) for p, repl in rules.regexes]
    drops = [compile_pattern(p, "--drop") for p in rules.drop]
    keeps = [compile_pattern(p, "--keep") for p in rules.keep]
    roles = (optimizer_roles(names, object_graph, rules.drop_optimizer) if drops or keeps or rules.drop_optimizer
             else None)
    mapping: dict[str, str] = {}
    dropped: list[str] = []
    ruled_out: set[str] = set()  # dropped by --drop, --keep or --drop-optimizer (not replaced by an average)
    shadowed = {n[: -len(EMA_SUFFIX)] for n in known if rules.ema and n.endswith(EMA_SUFFIX)}
    regex_hits, drop_hits, keep_hits = [False] * len(regexes), [False] * len(drops), [False] * len(keeps)
    stripped = False
    for name in names:
        shown = given[name]
        dropping = [r.search(shown) is not None for r in drops]
        keeping = [r.search(shown) is not None for r in keeps]
        drop_hits = [a or b for a, b in zip(drop_hits, dropping)]
        keep_hits = [a or b for a, b in zip(keep_hits, keeping)]
        if any(dropping) or (keeps and not any(keeping)) or (rules.drop_optimizer and name in roles.state):
            dropped.append(name)
            ruled_out.add(name)
            continue
        if rules.ema and shown in shadowed:
            dropped.append(name)  # replaced by its moving average
            continue
        new = exact.get(shown, shown)
        for index, (regex, repl) in enumerate(regexes):
            if not regex_hits[index] and regex.search(new):
                regex_hits[index] = True
            try:
                new = regex.sub(repl, new)
            except (re.error, IndexError) as exc:
                raise UsageProblem(f"bad --regex replacement {repl!r}: {exc}") from None
        if rules.add_prefix:
            new = rules.add_prefix + new
        if rules.strip_prefix and new.startswith(rules.strip_prefix):
            new = new[len(rules.strip_prefix):]
            stripped = True
        if rules.ema and new.endswith(EMA_SUFFIX):
            new = new[: -len(EMA_SUFFIX)]
        if rules.sep is not None:
            new = new.replace("/", rules.sep)
        if not new:
            raise UsageProblem(f"the rules give {name!r} an empty name")
        if new in INTERNAL_NAMES:  # TensorFlow reads that key as the TF2 object graph, and fails to restore
            raise Unsupported(f"the rules give {name!r} the name {new!r}, which is reserved (TensorFlow's own "
                              "checkpoint entry)", hint="rename it with --map")
        mapping[name] = new
    if roles is not None and roles.trained and roles.trained <= ruled_out:
        shown = sorted(roles.trained)
        raise BadInput(f"the rules drop every trained variable ({len(shown)}: "
                       + ", ".join(repr(n) for n in shown[:5]) + (" ..." if len(shown) > 5 else "")
                       + "): the result would hold no model weights",
                       hint="check --drop/--keep against `ckpttool inspect -q SRC`")
    targets: dict[str, list[str]] = {}
    for old, new in mapping.items():
        targets.setdefault(new, []).append(old)
    collisions = {new: olds for new, olds in targets.items() if len(olds) > 1}
    if collisions:
        listing = "; ".join(f"{' + '.join(sorted(olds))} -> {new}" for new, olds in sorted(collisions.items()))
        raise Refused(f"name collision: {listing}")
    return NameMapping(mapping, dropped, _idle_rules(rules, regex_hits, drop_hits, keep_hits, stripped,
                                                     any(n.endswith(EMA_SUFFIX) for n in known)))


# -- TF2 object graph -----------------------------------------------------
