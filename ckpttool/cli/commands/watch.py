"""`ckpttool watch DIR|URL`: act once on each new complete checkpoint, in step order (ops/runs/watch.py
decides what and when), by running --exec's command or printing one JSON line; remember what was
done in a locked state file, so that a restart repeats nothing and skips nothing."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sys
import time
from contextlib import contextmanager
from typing import Annotated, Optional

import typer

from ckpttool.cli import render
from ckpttool.cli.errors import EXIT_NEGATIVE, EXIT_OK
from ckpttool.errors import UsageProblem
from ckpttool.text import excerpt

_ON_FAILURE_RE = re.compile(r"^(stop|skip|retry)(?:[ :=]?(\d+))?$")
_DEFAULT_RETRIES = 3


def command(
    directory: Annotated[str, typer.Argument(metavar="DIR", help="A checkpoint directory, or a bucket URL.",
                                             show_default=False)],
    exec_: Annotated[Optional[str], typer.Option(
        "--exec", "-e", metavar="CMD",
        help="Run CMD for each checkpoint (split as a shell would, then {path}, {step}, {name}, {series}, "
             "{format} and {directory} replaced in each word; CKPTTOOL_CHECKPOINT, CKPTTOOL_STEP and "
             "CKPTTOOL_SERIES in its environment). Without it: one JSON line per checkpoint on stdout.")] = None,
    shell: Annotated[bool, typer.Option(
        "--shell", help="Run CMD with /bin/sh -c (values shell-quoted: placeholders stand bare, never inside quotes), for pipes and redirections.")] = False,
    verify: Annotated[bool, typer.Option(
        "--verify", help="Check every CRC of a checkpoint (as verify does) before acting on it; damage counts as "
                         "a failure of the command.")] = False,
    state: Annotated[Optional[str], typer.Option(
        "--state", metavar="FILE",
        help="Where what was done is kept (locked: one watch per file). Default: DIR/.ckpttool-watch.json when "
             "DIR is writable, else $XDG_STATE_HOME/ckpttool/watch/<hash of DIR>.json.")] = None,
    since: Annotated[Optional[int], typer.Option(
        "--since", metavar="STEP", min=0, help="Leave out checkpoints before step STEP.")] = None,
    once: Annotated[bool, typer.Option(
        "--once", help="Act on the complete checkpoints there now, then exit (for CI).")] = False,
    timeout: Annotated[Optional[float], typer.Option(
        "--timeout", metavar="SECONDS", min=0.0,
        help="Exit once no new checkpoint has appeared for SECONDS.")] = None,
    interval: Annotated[float, typer.Option(
        "--interval", metavar="SECONDS", min=0.01,
        help="Seconds between looks: a bucket's listings, and a local directory's where file events are "
             "missing (with inotify, events wake it at once).")] = 5.0,
    on_failure: Annotated[str, typer.Option(
        "--on-failure", metavar="stop|skip|retry:N",
        help="When CMD fails (or --verify finds damage): stop (exit 1, tried again by the next run), skip it "
             "(remembered as skipped), or retry it N more times, --interval apart, then stop.")] = "stop",
    json_out: Annotated[bool, typer.Option(
        "--json", help="Every event as a JSON line on stdout (CMD's own stdout then goes to stderr).")] = False,
):
    """Act once on each new complete checkpoint of DIR, in step order.

    Every series ls lists is watched: TF prefixes, Keras checkpoint files, SavedModel versions,
    Orbax and HF steps. A checkpoint is acted on once complete by the rules of `latest --complete`
    (never one whose files are still being written; a TF checkpoint whose data is shorter than its
    index says is damage, as with --verify) and, in a local directory, once its files have been left
    alone for a second. Each series goes in step order; an incomplete checkpoint that a
    later one leaves behind (an interrupted save), one pruned before its turn and one whose {name}
    or {series} would begin a word of the command with - (an option to it) are skipped with a
    warning.

    What was done is kept in the state file, replaced atomically after each command succeeds: a
    restart repeats nothing and skips nothing (a watch killed while CMD ran runs CMD on that
    checkpoint again, and says so). SIGINT or SIGTERM stop watch after the running command (a
    second one at once); the command runs in watch's process group and is sent nothing by watch.

    Exit 0 when every checkpoint was handled, 1 when one failed or was skipped (or --on-failure
    stop stopped), 4 when another watch holds the state file.
    """
    from ckpttool.ops.runs import watch as plan
    from ckpttool.ops.runs.directories import require_directory
    from ckpttool.ops.runs.lock import file_lock
    from ckpttool.storage import fs

    failure_mode, retries = _parse_on_failure(on_failure)
    if shell and exec_ is None:
        raise UsageProblem("--shell needs --exec")
    if exec_ is not None:
        _check_program(exec_, shell)
        for word in plan.unknown_placeholders(exec_):
            render.warn(f"--exec holds {{{word}}}, which is not a placeholder (left as it is; placeholders: "
                        + ", ".join("{" + p + "}" for p in plan.PLACEHOLDERS) + ")")
    require_directory(directory, "watch")
    state_path = state or plan.default_state_path(directory)
    plan.check_state_path(state_path)
    os.makedirs(os.path.dirname(os.path.abspath(state_path)), mode=0o700, exist_ok=True)
    with file_lock(state_path + ".lock", f"the watch state file {state_path}",
                   hint="another watch is consuming it; give each consumer its own --state FILE"):
        run = _Run(directory, state_path, plan.load_state(state_path, directory), exec_, shell, verify,
                   failure_mode, retries, interval, json_out)
        if run.state.running is not None:
            was = run.state.running
            render.warn(f"the last watch stopped while its command ran on {excerpt(str(was.get('name')))} "
                        "(killed?): it runs again")
        return run.loop(since, once, timeout, fs.is_url(directory))


def _parse_on_failure(text: str) -> tuple[str, int]:
    found = _ON_FAILURE_RE.match(text.strip())
    if found is None or (found[2] is not None and found[1] != "retry"):
        raise UsageProblem(f"--on-failure {excerpt(text)}: expected stop, skip or retry:N")
    return found[1], int(found[2]) if found[2] is not None else _DEFAULT_RETRIES if found[1] == "retry" else 0


def _check_program(template: str, shell: bool) -> None:
    from ckpttool.ops.runs.watch import check_shell_template, split_command

    if shell:
        check_shell_template(template)
        return
    program = split_command(template)[0]
    if "{" not in program and shutil.which(program) is None:
        raise UsageProblem(f"--exec: no program {excerpt(program)} (not found on PATH, or not executable)")


class _Stop(Exception):
    """--on-failure stop (or retries used up): end the loop, exit 1."""


class _Run:
    """One watch: the loop, the state it advances, and what it reports."""

    def __init__(self, directory, state_path, state, exec_, shell, verify, failure_mode, retries, interval, json_out):
        self.directory, self.state_path, self.state = directory, state_path, state
        self.exec, self.shell, self.verify = exec_, shell, verify
        self.failure_mode, self.retries, self.interval, self.json_out = failure_mode, retries, interval, json_out
        self.unhandled = 0  # failed or skipped: exit 1
        self.warned: set[str] = set()

    # -- the loop -------------------------------------------------------------------------------

    def loop(self, since: int | None, once: bool, timeout: float | None, remote: bool) -> int:
        from ckpttool.ops.runs.scan import scan_directory
        from ckpttool.ops.runs.watch import SETTLE_SECONDS, plan_watch
        from ckpttool.storage.changes import Waiter, bucket_listing

        signature, scan, last_activity, seen = None, None, time.monotonic(), ()
        with Waiter(self.directory) as waiter:
            while True:
                now = time.time()
                if remote:
                    listed, entries = bucket_listing(self.directory)  # one listing per poll
                    if listed != signature or scan is None:
                        scan, signature = scan_directory(self.directory, entries), listed
                else:
                    scan = scan_directory(self.directory)
                found = plan_watch(scan, self.state, since=since, now=now, settle=None if remote else SETTLE_SECONDS)
                self._warn_once(found)
                try:
                    for item in found.ready:
                        self._handle(item)
                except _Stop:
                    return EXIT_NEGATIVE
                pending = tuple(sorted(found.waiting))
                if found.ready or pending != seen:
                    last_activity, seen = time.monotonic(), pending
                if found.ready:
                    continue  # look again at once: more may have come meanwhile
                if once and found.wake_at is None:
                    break
                wait = self.interval
                if found.wake_at is not None:
                    wait = min(wait, found.wake_at - time.time() + 0.01)
                if timeout is not None:
                    left = timeout - (time.monotonic() - last_activity)
                    if left <= 0:
                        break
                    wait = min(wait, left)
                waiter.wait(wait)
        return EXIT_NEGATIVE if self.unhandled else EXIT_OK

    def _warn_once(self, found) -> None:
        for item, why in found.passed_over:
            self._skip(item, "incomplete", f"{item.name} is passed over: {why}, and a later checkpoint of its "
                                           "series is complete (an interrupted save?)")
        for name in found.unnumbered:
            if name not in self.warned:
                self.warned.add(name)
                render.warn(f"{name} has no step number: watch cannot order it, and leaves it alone")

    # -- one checkpoint ---------------------------------------------------------------------------

    def _handle(self, item) -> None:
        from ckpttool.ops.runs.watch import option_like, record_stopped, still_there

        if not still_there(item):
            self._skip(item, "gone", f"{item.name} was removed before its turn (pruned?): skipped")
            return
        if self.exec is not None and (placeholder := option_like(self.exec, item, self.directory, self.shell)):
            self._skip(item, "option-like", f"{item.name}: its {placeholder} would begin a word of the command "
                                            "with '-', an option to it: skipped (write {path}, which is absolute)")
            return
        attempt = 0
        while True:
            attempt += 1
            failure = self._attempt(item)
            if failure is None:
                return
            if self.state.running is not None:
                self._save(record_stopped(self.state))
            self._event("failed", item, exit_status=failure["exit_status"], attempt=attempt,
                        output_tail=failure["output_tail"], message=failure["message"])
            if self.failure_mode == "retry" and attempt <= self.retries:
                time.sleep(self.interval)
                continue
            if self.failure_mode == "skip":
                self._skip(item, "failed", None)
                return
            raise _Stop()

    def _attempt(self, item) -> dict | None:
        """Verify (with --verify), then act once: print the checkpoint's line, or run the command.
        None when that succeeded (and is recorded), else what failed."""
        from ckpttool.ops.runs.watch import command_environment, command_words, record_done, record_running

        damage = self._damage(item)
        if damage is not None:
            return {"exit_status": None, "output_tail": "", "message": damage}
        if self.exec is None:
            from ckpttool.storage.atomic import commit_section

            with commit_section():  # printed and recorded, or neither: a signal waits for both
                self._event("checkpoint", item)
                self._save(record_done(self.state, item))
            return None
        from ckpttool.cli.child import run_child

        self._save(record_running(self.state, item))
        argv = command_words(self.exec, item, self.directory, self.shell)
        with _finish_before_stopping():
            result = run_child(argv, command_environment(item), stdout_to_stderr=self.json_out)
            if result.ok:
                self._save(record_done(self.state, item))
                self._event("done", item, exit_status=0)
        if result.ok:
            return None
        return {"exit_status": result.exit_status, "output_tail": result.tail,
                "message": f"the command ended with {result.describe()} on {item.name}"}

    def _damage(self, item) -> str | None:
        if not self.verify:
            return self._cut_short(item)
        from ckpttool.ops.tensors.verify import verify_member

        report = verify_member(item.info, item.path)
        if report.ok:
            return None
        first = report.errors[0].message if report.errors else "damaged"
        return f"{item.name} is damaged: {first}" + (f" (and {len(report.errors) - 1} more)"
                                                    if len(report.errors) > 1 else "")

    @staticmethod
    def _cut_short(item) -> str | None:
        """Without --verify, a TF checkpoint's data shards are still checked to hold what its index
        says (one index read), as `latest --complete` does: TensorFlow cannot restore one cut short."""
        if item.format != "v2":
            return None
        from ckpttool.ops.runs.wholeness import data_cut_short

        problem = data_cut_short(item.info.prefix)
        return None if problem is None else f"{item.name} is damaged: {problem}"

    def _skip(self, item, reason: str, message: str | None) -> None:
        from ckpttool.ops.runs.watch import record_skipped

        self.unhandled += 1
        if message is not None:
            self._event("skipped", item, reason=reason, message=message)
        self._save(record_skipped(self.state, item, reason))

    def _save(self, state) -> None:
        from ckpttool.ops.runs.watch import save_state
        from ckpttool.storage.atomic import commit_section

        with commit_section():
            save_state(self.state_path, state)
            self.state = state
        if state.running is None:
            from ckpttool import _pause_for_test

            _pause_for_test("watch-recorded")

    # -- reporting ------------------------------------------------------------------------------

    def _event(self, event: str, item, **details) -> None:
        """A checkpoint's line: JSON on stdout (every event with --json; the checkpoint to act on when
        there is no command), else a line for people on stderr."""
        if event == "checkpoint" or self.json_out:
            document = {"schema_version": render.SCHEMA_VERSION, "command": "watch", "event": event,
                        "directory": self.directory, "path": item.path, "name": item.name, "step": item.step,
                        "series": item.series, "format": item.format, **details}
            sys.stdout.write(json.dumps(render.jsonable(document), ensure_ascii=False, allow_nan=False) + "\n")
            sys.stdout.flush()
            return
        if event == "done":
            render.say(f"watch: {item.name} (step {item.step}): done")
        elif event == "failed":
            render.warn(f"{details['message']} (attempt {details['attempt']})")
            tail = details.get("output_tail")
            if tail:
                print("  " + tail.replace("\n", "\n  "), file=sys.stderr)
        else:
            render.warn(details["message"])


@contextmanager
def _finish_before_stopping():
    """SIGINT, SIGTERM and SIGHUP held while the command runs and its result is recorded: the first
    lets it finish, then stops watch as the signal would have (cli/interrupts.py); a second one
    stops watch at once (the command is left to finish on its own)."""
    from ckpttool import _STOP_SIGNALS, _stop_at_once
    from ckpttool.cli import interrupts

    received: list[tuple[int, object]] = []

    def hold(signum, frame):
        if received:
            _stop_at_once(signum, frame)
        received.append((signum, frame))
        os.write(2, f"watch: {_STOP_SIGNALS[signum]}: stopping once the command is done (again: at once)\n"
                 .encode())

    previous = {}
    for signum in _STOP_SIGNALS:
        handler = signal.getsignal(signum)
        if handler not in (signal.SIG_IGN, None):
            previous[signum] = handler
            signal.signal(signum, hold)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if received:
            interrupts.on_signal(*received[0])
