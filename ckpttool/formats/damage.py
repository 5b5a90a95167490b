"""Damage a reader met in a log it read around: which file, at which byte, what was wrong.

The readers of metric logs (TensorBoard event files, metrics files, trainer_state.json) skip what
they cannot read and go on where they can; what they skipped is reported as Damage, so that a
command deciding by the scores (prune, latest --best, average --best) can refuse to decide on a
log that lost some of them. A message names the file and the offset, never the bytes there.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Damage:
    path: str
    offset: int  # byte offset in the file of the first damaged record, line or value
    what: str  # what is wrong there, and what was lost

    @property
    def message(self) -> str:
        return f"{self.path}, byte {self.offset}: {self.what}"
