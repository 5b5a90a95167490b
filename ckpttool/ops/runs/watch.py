"""What `watch` acts on next, and what it remembers between runs: pure planning over a directory
scan (ops/runs/scan.py, so `watch` counts as a checkpoint exactly what `ls` counts; before acting
on a TF checkpoint the CLI reads its index for a data shard cut short, as `latest --complete` does,
and counts one as damage), the
state file's model, and the command line made for each checkpoint.

A checkpoint is acted on once it is complete by the scan's rules (every shard its index names, a
Keras file whose bytes end where its header says, a committed step directory) and, in a local
directory, once its newest file is SETTLE_SECONDS old: files written in place (Keras, the HF
Trainer's) are then done being written, whatever the format's own markers say. Objects in a bucket
appear whole, so a complete checkpoint there is acted on at once.

Each series (ops/runs/series.py: a TF prefix family, a Keras file family, SavedModel versions,
Orbax or HF steps) is taken in step order and remembered by the last step acted on: a restart
continues after it, so nothing is repeated and nothing skipped. An incomplete checkpoint older
than a complete one of its series is passed over (an interrupted save: its writer moved on), and
a checkpoint without a step number cannot be ordered: both are reported, never acted on.

Nothing here runs a command, prints or waits: the CLI (cli/commands/watch.py) loops over
`plan_watch`, records each outcome with `record_*` and writes the state with `save_state`.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import time
from dataclasses import dataclass, field, replace

from ckpttool.errors import BadInput, Refused, UsageProblem
from ckpttool.ops.runs.scan import CheckpointInfo, DirectoryScan
from ckpttool.storage import fs
from ckpttool.storage.atomic import write_bytes_atomic
from ckpttool.text import excerpt

STATE_SCHEMA = 1
STATE_KIND = "ckpttool-watch-state"
DEFAULT_STATE_NAME = ".ckpttool-watch.json"
SETTLE_SECONDS = 1.0  # a local checkpoint's files unchanged this long: done being written
_KEPT_SKIPS = 100  # skipped checkpoints remembered in the state file (the newest)
_STATE_LIMIT = 1 << 20  # a state file larger than this is not ours
PLACEHOLDERS = ("path", "step", "name", "series", "format", "directory")
_PLACEHOLDER_RE = re.compile(r"\{(" + "|".join(PLACEHOLDERS) + r")\}")
_UNKNOWN_PLACEHOLDER_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class WatchItem:
    """One checkpoint to act on: `path` is absolute (a URL in a bucket), as `ls --json` gives prefixes."""

    series: str  # the scan's family: `ckpt`, `model.ckpt`, `w.#.weights.h5`, `savedmodel/`, `orbax/`, `checkpoint/`
    name: str
    step: int
    path: str
    format: str  # "v2" | "v1" | "keras" | "savedmodel" | "orbax" | "hf"
    files: tuple[str, ...]  # what must still be there when its turn comes
    mtime: float
    info: CheckpointInfo = field(compare=False, repr=False)  # as the scan found it (verify reads it)

    @classmethod
    def of(cls, info: CheckpointInfo) -> "WatchItem":
        return cls(info.family, info.name, info.step, info.prefix, info.format, info.files, info.mtime, info)


@dataclass(frozen=True)
class WatchPlan:
    ready: tuple[WatchItem, ...]  # to act on now, in order
    waiting: tuple[str, ...]  # names not ready yet (being written, or not settled)
    passed_over: tuple[tuple[WatchItem, str], ...]  # incomplete ones a later complete one leaves behind: (item, why)
    unnumbered: tuple[str, ...]  # checkpoints without a step number: never acted on
    wake_at: float | None  # when a checkpoint waiting to settle will have settled (time.time())


@dataclass(frozen=True)
class SeriesMark:
    step: int
    name: str
    done: int = 0  # checkpoints of the series acted on, over every run
    skipped: int = 0  # and skipped (gone before their turn, failed under --on-failure skip)


@dataclass(frozen=True)
class WatchState:
    directory: str  # what was watched (absolute path or URL): a state file serves one directory
    series: dict[str, SeriesMark] = field(default_factory=dict)
    running: dict | None = None  # the checkpoint whose command was running when the state was written
    skips: tuple[dict, ...] = ()  # the newest skipped checkpoints: series, name, step, reason, time

    def mark(self, series: str) -> int | None:
        found = self.series.get(series)
        return found.step if found is not None else None


# -- planning ---------------------------------------------------------------------------------

def plan_watch(scan: DirectoryScan, state: WatchState, *, since: int | None = None, now: float | None = None,
               settle: float | None = None) -> WatchPlan:
    """What to act on after `state`, in step order. `settle`: seconds a local checkpoint's newest file
    must be old (None: a bucket, where objects appear whole); `now`: the time the scan was made."""
    now = time.time() if now is None else now
    by_series: dict[str, list[CheckpointInfo]] = {}
    unnumbered = []
    for info in scan.checkpoints:
        if info.step is None:
            unnumbered.append(info.name)
            continue
        mark = state.mark(info.family)
        if (mark is not None and info.step <= mark) or (since is not None and info.step < since):
            continue
        by_series.setdefault(info.family, []).append(info)
    ready: list[WatchItem] = []
    waiting: list[str] = []
    passed: list[tuple[WatchItem, str]] = []
    wake_at = None
    problems = {p.path: p.message for p in scan.problems}
    for members in by_series.values():
        members.sort(key=lambda c: (c.step, c.time, c.name))
        incomplete: list[CheckpointInfo] = []
        for info in members:
            if not info.complete:
                incomplete.append(info)
                continue
            settles_at = info.mtime + settle if settle is not None else now
            if settles_at > now:
                waiting.append(info.name)
                wake_at = settles_at if wake_at is None else min(wake_at, settles_at)
                break  # the later ones of the series wait for it: step order
            passed += [(WatchItem.of(old), problems.get(old.prefix, "it is incomplete")) for old in incomplete]
            incomplete = []
            ready.append(WatchItem.of(info))
        else:
            waiting += [info.name for info in incomplete]
    ready.sort(key=lambda item: (item.step, item.mtime, item.name))
    return WatchPlan(tuple(ready), tuple(waiting), tuple(passed), tuple(unnumbered), wake_at)


def still_there(item: WatchItem) -> bool:
    """Whether every file (or the directory) of `item` still exists: one pruned before its turn
    (CheckpointManager's max_to_keep, a cron prune) is skipped."""
    return all(fs.exists_now(path) for path in item.files)


# -- recording outcomes -------------------------------------------------------------------------

def record_running(state: WatchState, item: WatchItem, now: float | None = None) -> WatchState:
    return replace(state, running={"series": item.series, "name": item.name, "step": item.step,
                                   "started": _iso(now)})


def record_done(state: WatchState, item: WatchItem) -> WatchState:
    old = state.series.get(item.series)
    mark = SeriesMark(item.step, item.name, (old.done if old else 0) + 1, old.skipped if old else 0)
    return replace(state, series={**state.series, item.series: mark}, running=None)


def record_skipped(state: WatchState, item: WatchItem, reason: str, now: float | None = None) -> WatchState:
    old = state.series.get(item.series)
    mark = SeriesMark(item.step, item.name, old.done if old else 0, (old.skipped if old else 0) + 1)
    skip = {"series": item.series, "name": item.name, "step": item.step, "reason": reason, "time": _iso(now)}
    return replace(state, series={**state.series, item.series: mark}, running=None,
                   skips=(state.skips + (skip,))[-_KEPT_SKIPS:])


def record_stopped(state: WatchState) -> WatchState:
    """The command failed and watch stops: nothing advances, so the next run tries it again."""
    return replace(state, running=None)


def _iso(now: float | None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if now is None else now))


# -- the state file -------------------------------------------------------------------------------

def default_state_path(directory: str) -> str:
    """DIR/.ckpttool-watch.json when DIR is a local directory we may write in; else a file under
    $XDG_STATE_HOME/ckpttool/watch (~/.local/state by default) named by a hash of DIR's resolved
    path or URL, so that every run on one directory finds the same state."""
    if not fs.is_url(directory) and os.access(directory, os.W_OK | os.X_OK):
        return os.path.join(directory, DEFAULT_STATE_NAME)
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    key = hashlib.sha256(watched_directory(directory).encode()).hexdigest()[:32]
    return os.path.join(base, "ckpttool", "watch", f"{key}.json")


def watched_directory(directory: str) -> str:
    """What a state file records as its directory: the resolved path, or the URL as given."""
    return directory.rstrip("/") if fs.is_url(directory) else os.path.realpath(directory)


def check_state_path(path: str) -> None:
    if fs.is_url(path):
        raise UsageProblem(f"--state must be a local file, not {excerpt(path)} (it is locked and replaced "
                           "atomically on this host)")


def load_state(path: str, directory: str) -> WatchState:
    """The state kept in `path` for `directory`; a fresh one when there is no file yet. BadInput
    when it is not a watch state file; Refused when it belongs to another directory."""
    watched = watched_directory(directory)
    data = fs.read_capped(path, _STATE_LIMIT, "watch state file", missing_ok=True)
    if data is None:
        return WatchState(watched)
    _refuse_anothers(path)
    try:
        document = json.loads(data)
        state = _state_of(document)
    except (ValueError, TypeError, KeyError) as exc:
        raise BadInput(f"{path} is not a watch state file ({exc})",
                       hint="give another --state FILE, or remove this one to start over") from None
    if state.directory != watched:
        raise Refused(f"{path} is the watch state of {excerpt(state.directory)}, not of {excerpt(watched)}",
                      hint="give each watched directory its own --state FILE")
    return state


def _refuse_anothers(path: str) -> None:
    """BadInput when the state file belongs to neither this user nor the owner of its directory:
    anyone who may add a file there (DIR/.ckpttool-watch.json in a shared run directory) could have
    planted it, marking every series done far ahead, and watch then acted on no checkpoint."""
    owner = os.stat(path).st_uid
    parent = os.stat(os.path.dirname(fs.absolute(path))).st_uid
    if owner not in (os.geteuid(), parent):
        raise BadInput(f"{path} belongs to uid {owner}, neither this user nor its directory's owner: not "
                       "resumed (anyone who may write there could have planted it)",
                       hint="look at it and remove it, or give --state FILE in a directory of yours")


def _state_of(document) -> WatchState:
    if not isinstance(document, dict) or document.get("kind") != STATE_KIND:
        raise ValueError(f"no \"kind\": \"{STATE_KIND}\"")
    if document.get("schema_version") != STATE_SCHEMA:
        raise ValueError(f"schema_version {document.get('schema_version')!r}, not {STATE_SCHEMA}")
    directory = document["directory"]
    series = {}
    for name, mark in document.get("series", {}).items():
        values = (mark["step"], mark["name"], mark.get("done", 0), mark.get("skipped", 0))
        if not (isinstance(name, str) and isinstance(values[1], str)
                and all(type(v) is int and v >= 0 for v in values[:1] + values[2:])):
            raise ValueError(f"series {excerpt(str(name))} is not a step, a name and counts")
        series[name] = SeriesMark(*values)
    running = document.get("running")
    skips = document.get("skips", [])
    if not isinstance(directory, str) or not (running is None or isinstance(running, dict)) \
            or not isinstance(skips, list) or not all(isinstance(s, dict) for s in skips):
        raise ValueError("its fields are not what watch writes")
    return WatchState(directory, series, running, tuple(skips[-_KEPT_SKIPS:]))


def state_document(state: WatchState) -> dict:
    return {"schema_version": STATE_SCHEMA, "kind": STATE_KIND, "directory": state.directory,
            "series": {name: {"step": m.step, "name": m.name, "done": m.done, "skipped": m.skipped}
                       for name, m in sorted(state.series.items())},
            "running": state.running, "skips": list(state.skips)}


def save_state(path: str, state: WatchState) -> None:
    """Replace the state file atomically (temp file, fsync, rename): a crash leaves the old state
    or the new one."""
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, mode=0o700, exist_ok=True)
    write_bytes_atomic(path, (json.dumps(state_document(state), indent=1) + "\n").encode())


# -- the command ------------------------------------------------------------------------------------

def unknown_placeholders(template: str) -> list[str]:
    """`{word}`s in an --exec template that are not placeholders (left as they are: a typo, or a
    command's own braces)."""
    return sorted({m[1] for m in _UNKNOWN_PLACEHOLDER_RE.finditer(template)} - set(PLACEHOLDERS))


def placeholder_values(item: WatchItem, directory: str) -> dict[str, str]:
    return {"path": item.path, "step": str(item.step), "name": item.name, "series": item.series,
            "format": item.format, "directory": directory}


def command_words(template: str, item: WatchItem, directory: str, shell: bool) -> list[str]:
    """The argv that runs `template` for `item`. Without a shell: the template split as a POSIX
    shell would (shlex), then each placeholder replaced inside its word, so a name with spaces or
    quotes stays one argument and is never parsed. With `shell`: `/bin/sh -c` on the template
    with each value shell-quoted."""
    values = placeholder_values(item, directory)
    if shell:
        check_shell_template(template)
        return ["/bin/sh", "-c", _PLACEHOLDER_RE.sub(lambda m: shlex.quote(values[m[1]]), template)]
    return [_PLACEHOLDER_RE.sub(lambda m: values[m[1]], word) for word in split_command(template)]


# A placeholder that begins a word: of a shell template, after a blank or an operator.
_WORD_START_RE = re.compile(r"(?:^|(?<=[\s;|&()<>]))" + _PLACEHOLDER_RE.pattern)


def option_like(template: str, item: WatchItem, directory: str, shell: bool) -> str | None:
    """The placeholder that would begin a word of the command with `-` (`{name}` of a checkpoint
    someone named `--delete.ckpt-1`: an option to the command, not a name), or None. `{path}` is
    absolute, so never; `{name}` and `{series}` come from the directory's listing."""
    values = placeholder_values(item, directory)
    words = [template] if shell else split_command(template)
    for word in words:
        for match in (_WORD_START_RE.finditer(word) if shell else filter(None, [_PLACEHOLDER_RE.match(word)])):
            if values[match[1]].startswith("-"):
                return match[0]
    return None


def check_shell_template(template: str) -> None:
    """UsageProblem when a placeholder of a --shell template sits where the shell would still parse
    its shell-quoted value: inside quotes (in `"{name}"` the single quotes shlex.quote adds are plain
    characters; in `'{name}'` they close and reopen the template's own: a name holding `$(...)` or
    backquotes ran as a command either way) or after a here-document's `<<` (its body expands
    `$(...)` whatever the quotes). Bare, the quoted value is one literal word."""
    quote, escaped, heredoc = None, False, False
    for at, char in enumerate(template):
        if escaped:
            escaped = False
        elif char == "\\" and quote != "'":
            escaped = True
        elif quote is None and char in "'\"":
            quote = char
        elif char == quote:
            quote = None
        elif quote is None and template.startswith("<<", at):
            heredoc = True
        elif char == "{" and (quote or heredoc) and _PLACEHOLDER_RE.match(template, at):
            where = "inside quotes" if quote else "in a here-document"
            raise UsageProblem(f"--exec: {_PLACEHOLDER_RE.match(template, at)[0]} is {where}, where the "
                               "shell would still run what a checkpoint's name holds ($(...), backquotes)",
                               hint="write placeholders bare (--shell quotes each value), or use "
                                    "\"$CKPTTOOL_CHECKPOINT\" inside double quotes")


def split_command(template: str) -> list[str]:
    try:
        words = shlex.split(template)
    except ValueError as exc:
        raise UsageProblem(f"--exec {excerpt(template)} does not parse as a command line ({exc})") from None
    if not words:
        raise UsageProblem("--exec is empty")
    return words


def command_environment(item: WatchItem) -> dict[str, str]:
    """What the command finds in its environment besides the placeholders."""
    return {"CKPTTOOL_CHECKPOINT": item.path, "CKPTTOOL_STEP": str(item.step), "CKPTTOOL_SERIES": item.series}
