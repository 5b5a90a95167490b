"""Running `watch --exec`'s command: its output passed through as it comes (stdout to ours, or to
our stderr when our stdout carries JSON events; stderr to ours) while the last lines are kept for
the report of a failure; its stdin is /dev/null (watch runs unattended).

The child stays in our process group: Ctrl-C at a terminal reaches it as it reaches us (the
terminal signals the whole foreground group), and nothing is forwarded by us. A SIGTERM sent to
watch alone (kill PID) is not passed on: watch lets the command finish, records it, and stops
(cli/commands/watch.py holds the signal meanwhile).
"""
from __future__ import annotations

import os
import selectors
import subprocess
import sys
from dataclasses import dataclass

TAIL_BYTES = 4096
TAIL_LINES = 20


@dataclass(frozen=True)
class ChildResult:
    exit_status: int  # the exit code, or -N when signal N ended it (subprocess's convention)
    tail: str  # its last output lines (stdout and stderr as they came)
    error: str | None = None  # why it could not be started

    @property
    def ok(self) -> bool:
        return self.exit_status == 0 and self.error is None

    def describe(self) -> str:
        if self.error is not None:
            return self.error
        if self.exit_status < 0:
            return f"killed by signal {-self.exit_status}"
        return f"exit status {self.exit_status}"


def run_child(argv: list[str], env: dict[str, str], stdout_to_stderr: bool) -> ChildResult:
    """Run `argv` to its end; its output passed through and its tail kept."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env={**os.environ, **env}, close_fds=True)
    except OSError as exc:
        return ChildResult(127 if isinstance(exc, FileNotFoundError) else 126, "",
                           f"cannot run {argv[0]}: {exc.strerror or exc}")
    tail = bytearray()
    outputs = {proc.stdout: sys.stderr if stdout_to_stderr else sys.stdout, proc.stderr: sys.stderr}
    with selectors.DefaultSelector() as selector:
        for pipe in outputs:
            os.set_blocking(pipe.fileno(), False)
            selector.register(pipe, selectors.EVENT_READ)
        open_pipes = len(outputs)
        # Until both pipes close; a grandchild that keeps them open (a daemon the command started)
        # is not waited for once the command itself has exited.
        while open_pipes and not (proc.poll() is not None and not selector.select(timeout=0)):
            for key, _events in selector.select(timeout=0.5):
                chunk = _read(key.fileobj)
                if chunk is None:
                    continue
                if not chunk:
                    selector.unregister(key.fileobj)
                    open_pipes -= 1
                    continue
                _pass_on(outputs[key.fileobj], chunk)
                tail += chunk
                del tail[:-TAIL_BYTES]
    for pipe in outputs:
        pipe.close()
    status = proc.wait()
    return ChildResult(status, _last_lines(bytes(tail)))


def _read(pipe) -> bytes | None:
    """What the pipe holds; b"" at its end; None when nothing is there yet."""
    try:
        return os.read(pipe.fileno(), 65536)
    except BlockingIOError:
        return None


def _pass_on(stream, chunk: bytes) -> None:
    try:
        stream.flush()
        target = getattr(stream, "buffer", None)
        if target is not None:
            target.write(chunk)
            target.flush()
        else:
            stream.write(chunk.decode("utf-8", "replace"))
            stream.flush()
    except (OSError, ValueError):
        pass  # our own output closed (a pipe reader gone): the command still runs to its end


def _last_lines(data: bytes) -> str:
    text = data.decode("utf-8", "replace")
    return "\n".join(text.rstrip("\n").split("\n")[-TAIL_LINES:])
