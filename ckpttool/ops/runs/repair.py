"""`repair`: rewrite a directory's state file so TensorFlow can use it again.

Relative paths; entries whose files are gone (or that point outside the
directory) dropped; complete checkpoints missing from it added in step order;
latest set to the newest complete checkpoint when the recorded one is gone.
The old file is kept as `checkpoint.bak`. A local directory is written
through the descriptor of the directory planned (ops/runs/lock.py locked_as_planned),
never through its path again; a state file that is a link to a file outside
the directory is neither read nor backed up, only replaced.
"""
from __future__ import annotations

from dataclasses import dataclass

from ckpttool.errors import CkptError, Refused
from ckpttool.storage import fs
from ckpttool.formats.tf.state import STATE_FILE_CAP, STATE_FILENAME, CheckpointState, format_state
from ckpttool.ops.runs.lock import locked_as_planned
from ckpttool.ops.runs.scan import TF_FORMATS, resolve_state_entry, scan_directory

BACKUP_FILENAME = STATE_FILENAME + ".bak"


@dataclass(frozen=True)
class RepairPlan:
    directory: str
    old_text: str | None
    new_state: CheckpointState | None  # None: no checkpoint to point at
    changes: tuple[str, ...]
    directory_id: tuple[int, int] | None = None  # (device, inode) of a local directory when planned

    @property
    def summary(self) -> str:
        """One sentence for people and JSON alike."""
        if self.new_state is None:
            return "no complete checkpoint in the directory: nothing to repair"
        return "state file rewritten" if self.changed else "state file is fine: nothing to repair"

    @property
    def new_text(self) -> str | None:
        return format_state(self.new_state) if self.new_state else None

    @property
    def changed(self) -> bool:
        return self.new_state is not None and self.new_text != self.old_text


def _read_raw(path: str, dir_fd: int | None = None) -> bytes | None:
    """The state file's bytes (through `dir_fd`, the descriptor of its directory, when given);
    None if there is none, or it cannot be read (a FIFO, over the cap, a link to a file outside
    the directory): it is then replaced without a backup."""
    try:
        return fs.read_capped(path, STATE_FILE_CAP, "state file", missing_ok=True, dir_fd=dir_fd, inside=True)
    except CkptError:
        return None


def _text(raw: bytes | None) -> str | None:
    return None if raw is None else raw.decode("utf-8", "replace")


def plan_repair(directory: str) -> RepairPlan:
    directory_id = fs.directory_identity(directory)
    scan = scan_directory(directory)
    old_text = _text(_read_raw(fs.join(scan.directory, STATE_FILENAME)))
    complete = {c.name: c for c in scan.checkpoints if c.complete and c.format in TF_FORMATS}  # never a series member
    changes: list[str] = []
    if scan.state_error:
        changes.append(f"replaced an unparseable state file ({scan.state_error})")
    elif scan.state is None:
        changes.append("created a missing state file")
    state = scan.state
    entries: dict[str, float | None] = {}
    had_times = bool(state and state.all_model_checkpoint_timestamps
                     and len(state.all_model_checkpoint_timestamps) == len(state.all_model_checkpoint_paths))
    if state is not None:
        for path in state.all_model_checkpoint_paths:
            name, _problem = resolve_state_entry(scan.directory, path)
            if name is None:
                changes.append(f"dropped {path} (outside the directory)")
            elif name not in complete:
                changes.append(f"dropped {path} (its files are gone or incomplete)")
            elif name not in entries:
                if name != path:
                    changes.append(f"made {path} relative ({name})")
                entries[name] = state.timestamp_of(path)
    for name, c in complete.items():
        if name not in entries:
            if state is not None:
                changes.append(f"added {name} (on disk, missing from the state file)")
            entries[name] = c.mtime
    if not entries:
        return RepairPlan(scan.directory, old_text, None, (), directory_id)
    ordered = sorted(entries, key=lambda n: (complete[n].step if complete[n].step is not None else -1,
                                             complete[n].time, n))
    recorded = None
    if state is not None and state.model_checkpoint_path:
        recorded, _problem = resolve_state_entry(scan.directory, state.model_checkpoint_path)
    if recorded in complete:
        latest = recorded
    else:
        latest = scan.latest.name
        if state is not None and state.model_checkpoint_path:
            changes.append(f"latest {state.model_checkpoint_path} is gone; latest is now {latest}")
    # TensorFlow expects the latest checkpoint last in the list.
    ordered = [n for n in ordered if n != latest] + [latest]
    stamps = tuple(entries[n] if entries[n] is not None else complete[n].mtime for n in ordered)
    new_state = CheckpointState(
        model_checkpoint_path=latest,
        all_model_checkpoint_paths=tuple(ordered),
        all_model_checkpoint_timestamps=stamps if had_times or state is None else (),
        last_preserved_timestamp=state.last_preserved_timestamp if state else 0.0,
    )
    return RepairPlan(scan.directory, old_text, new_state, tuple(changes), directory_id)


def apply_repair(plan: RepairPlan) -> None:
    if not plan.changed:
        return
    with locked_as_planned(plan.directory, plan.directory_id, "nothing written") as checked:
        dir_fd = checked.fd if checked is not None else None
        state_path = fs.join(plan.directory, STATE_FILENAME)
        old = _read_raw(state_path, dir_fd)
        if _text(old) != plan.old_text:
            # A writer saved meanwhile: the plan would revert its latest checkpoint.
            raise Refused(f"the state file of {plan.directory} changed since the repair was planned "
                          "(a training job saving?); nothing written", hint="run repair again")
        if old is not None:
            fs.write_atomic(fs.join(plan.directory, BACKUP_FILENAME), old, mode_of=state_path, dir_fd=dir_fd)
        fs.write_atomic(state_path, plan.new_text.encode("utf-8"), dir_fd=dir_fd)
