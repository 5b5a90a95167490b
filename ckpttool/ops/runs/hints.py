"""What to tell someone whose argument found nothing, when it is cheap to find out
(issue 18 item 13): the steps a run directory does hold, that a DIR given is a
checkpoint, that a bucket (not a directory) is missing, that run directories lie
below. Each costs one listing at most and answers None when it has nothing to add."""
from __future__ import annotations

import shlex

from ckpttool.errors import CkptError
from ckpttool.storage import fs

_MAX_SHOWN = 8
# A corrupt file in a run directory: what to run next.
CORRUPT_HINT = ("`ckpttool verify --all DIR` lists every damaged checkpoint; `ckpttool repair DIR` points the "
                "state file at the ones that remain, `ckpttool prune --clean DIR` removes leftovers")


def _shown(items: list[str]) -> str:
    more = len(items) - _MAX_SHOWN
    return ", ".join(items[:_MAX_SHOWN]) + (f" and {more} more" if more > 0 else "")


def steps_in_directory(path: str) -> str | None:
    """For a prefix that names no checkpoint (`run/model.ckpt-7`): the checkpoints its directory has."""
    from ckpttool.ops.runs.scan import scan_directory

    directory = fs.dirname(path) or "."
    try:
        if not fs.is_dir(directory):
            return None
        checkpoints = scan_directory(directory).checkpoints
    except (CkptError, OSError):
        return None
    if not checkpoints:
        return None
    return f"{directory} has {_shown([c.name for c in checkpoints])}"


def missing_directory(path: str) -> tuple[str, str | None] | None:
    """(message, hint) for a DIR that is no directory, when more can be said: it is a checkpoint
    prefix (meant for inspect), or it is in a bucket that does not exist."""
    from ckpttool.formats.tf.shards import checkpoint_exists

    try:
        if checkpoint_exists(path):
            return (f"{path} is a checkpoint, not a directory",
                    f"did you mean `ckpttool inspect {shlex.quote(path)}`?")
        if fs.is_url(path):
            protocol, _, rest = path.partition("://")
            bucket = f"{protocol}://{rest.split('/', 1)[0]}"
            if rest.strip("/") and not fs.exists(bucket):
                return f"no such bucket: {bucket} (looking for {path})", "check its name and the account's project"
    except (CkptError, OSError):
        return None
    return None


_LISTINGS = 200  # the most directories looked into for the hint


def run_directories_below(directory: str) -> str | None:
    """For a directory with no checkpoints of its own: the run directories below it, looked
    for breadth first, two levels deep, in at most _LISTINGS listings."""
    runs, level, budget = [], [directory], _LISTINGS
    try:
        for _depth in range(2):
            below = []
            for parent in level:
                children = sorted(e.path for e in fs.list_dir(parent) if e.kind == "dir")
                for child in children:
                    if budget <= 0:
                        break
                    budget -= 1
                    entries = fs.list_dir(child)
                    if any(e.name == "checkpoint" or e.name.endswith(".index") for e in entries):
                        runs.append(child)
                    else:
                        below.append(child)
            level = below
    except (CkptError, OSError):
        return None
    if not runs:
        return None
    return f"run directories below: {_shown(runs)}; try `ckpttool ls -r {shlex.quote(directory)}`"
