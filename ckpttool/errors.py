"""The CkptError hierarchy: every failure the tool expects to meet.

Lower layers raise these; only cli/errors.py turns them into exit codes and
messages, so ops/ and formats/ never print or exit.
"""
from __future__ import annotations


class CkptError(Exception):
    """Base of all expected errors. `hint` is an optional second line for people."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageProblem(CkptError):
    """The options or arguments do not make sense together."""


class BadInput(CkptError):
    """Missing, unreadable, corrupt or unsupported input."""


class NotFound(BadInput):
    """A target, file or shard that should exist does not."""


class TooLarge(BadInput):
    """A file or object larger than the most ckpttool reads of its kind (a capped read)."""


class CorruptCheckpoint(BadInput):
    """Bytes on disk do not match the format or their checksum."""


class ChecksumMismatch(CorruptCheckpoint):
    """Stored bytes whose CRC does not match them."""


class Truncated(CorruptCheckpoint):
    """A file ends before the bytes its index says it holds."""


class BadSlices(CorruptCheckpoint):
    """The stored slices of a partitioned variable do not tile its shape."""


class Unsupported(BadInput):
    """A valid file that uses a feature this tool does not handle."""


class UnsafeFile(BadInput):
    """A file that would run code to be read (a pickle naming a global outside the allowlist):
    refused whole, nothing of it run."""


class UnknownVariable(BadInput):
    """A variable name that is not in the checkpoint."""


class Refused(CkptError):
    """Refused for safety: no confirmation, destination exists, name collision, path escapes."""


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP (cron's `timeout`, systemd, Kubernetes, a closed terminal), raised by the
    CLI's handler so that it unwinds as Ctrl-C does: every cleanup runs, locks are released. The
    exit code is 128 + the signal's number, as a shell reports a process the signal killed."""

    def __init__(self, signum: int, name: str):
        super().__init__(name)
        self.signum = signum
        self.name = name


# Whether --debug asked for tracebacks and the storage backends' own logs: set by the CLI on each
# invocation, read where a backend is set up (storage/reach.py), which cannot import the CLI.
debug_output = {"on": False}
