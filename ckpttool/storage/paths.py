"""Local paths as the system resolves them: a `..` after a symlink is the parent of the link's
target, where the text alone (os.path.abspath) says the link's own directory. Every comparison of
a source with a destination, and every write, names files this way, so both agree with the open()
that reads the source."""
from __future__ import annotations

import os


def local_absolute(path: str) -> str:
    """Local `path` made absolute naming the file the system reaches by it. os.path.abspath drops
    `x/..` by the text alone, but to the system `link/..` is the parent of the link's target: the
    part up to the last `..` is resolved (symlinks followed, as every open does); what follows it
    stays as written, so a symlink named last is still the link, never its target."""
    joined = os.path.join(os.getcwd(), path)
    parts = joined.split(os.sep)
    if os.pardir not in parts:
        return os.path.normpath(joined)  # (the usual case: no `..`, nothing to resolve)
    last = len(parts) - 1 - parts[::-1].index(os.pardir)
    head = os.path.realpath(os.sep.join(parts[: last + 1]) or os.sep)
    return os.path.normpath(os.path.join(head, *parts[last + 1:]))
