"""The HF Trainer's `trainer_state.json`, read in bounded memory.

The Trainer writes it with `json.dumps(dataclasses.asdict(state), indent=2, sort_keys=True)`, straight
to its final name: an object of small fields (`best_model_checkpoint`, `global_step` ...) and
`log_history`, a list that grows by one entry per logging step (a long run: tens of megabytes).
Parsed whole, it costs many times its size in Python objects; this reads it in pieces, decoding one
top-level value at a time and one `log_history` entry at a time (json's own decoder on each), so
memory is bounded by the largest single value (MAX_VALUE) whatever the file's size.

What cannot be parsed (a file cut short by a crash during the save, a damaged byte) stops the reading
there: what was read before it is kept, and the place is reported as Damage (byte offset). A file
that parses but is no trainer state (not an object, `log_history` not a list) is BadInput.
"""
from __future__ import annotations

import codecs
import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from ckpttool.errors import BadInput, NotFound
from ckpttool.formats.damage import Damage
from ckpttool.storage import fs

FILENAME = "trainer_state.json"
PIECE = 256 << 10  # read at a time
MAX_VALUE = 16 << 20  # a top-level value or a log_history entry larger than this is not the Trainer's
MAX_SIZE = 1 << 30  # a larger file is not read (time, not memory, is what it would cost)
_WHITESPACE = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


class _Damaged(Exception):
    def __init__(self, offset: int, what: str):
        super().__init__(what)
        self.offset, self.what = offset, what


@dataclass
class TrainerState:
    """What was read: the top-level fields asked for, how many log_history entries, the damage met."""
    path: str
    fields: dict[str, Any] = field(default_factory=dict)
    entries: int = 0
    has_history: bool = False
    damage: Damage | None = None


class _Text:
    """The file's text from the parsing position on, decoded piece by piece; positions in `text`
    map to byte offsets in the file (`offset`)."""

    def __init__(self, stream):
        self.stream = stream
        self.decoder = codecs.getincrementaldecoder("utf-8")()
        self.text, self.pos = "", 0
        self.base = 0  # byte offset of text[0]
        self.fed = 0  # bytes given to the decoder
        self.eof = False

    def offset(self, pos: int | None = None) -> int:
        pos = self.pos if pos is None else pos
        return self.base + len(self.text[:pos].encode("utf-8"))

    def fill(self, want: int) -> bool:
        """At least `want` characters after pos, unless the file ends first."""
        while len(self.text) - self.pos < want and not self.eof:
            if self.pos:  # what was parsed is dropped: memory holds the unparsed window only
                self.base = self.offset()
                self.text, self.pos = self.text[self.pos:], 0
            piece = self.stream.read(PIECE)
            pending = len(self.decoder.getstate()[0])
            try:
                self.text += self.decoder.decode(piece, final=not piece)
            except UnicodeDecodeError as exc:
                raise _Damaged(self.fed - pending + exc.start, "not UTF-8 text") from None
            self.fed += len(piece)
            self.eof = not piece
            if self.fed > MAX_SIZE:
                raise _Damaged(self.fed, f"larger than {MAX_SIZE >> 20} MiB: not read further")
        return len(self.text) - self.pos >= want

    def peek(self) -> str:
        """The next character that is not whitespace ("" at the end of the file)."""
        while True:
            self.pos = _WHITESPACE.match(self.text, self.pos).end()
            if self.pos < len(self.text) or not self.fill(1):
                return self.text[self.pos:self.pos + 1]

    def expect(self, chars: str, what: str) -> str:
        found = self.peek()
        if not found or found not in chars:
            raise _Damaged(self.offset(), f"{what} expected" if found else f"the file ends where {what} belongs")
        self.pos += 1
        return found

    def value(self) -> Any:
        """The next JSON value, whole (json's decoder), read on while it may go on past the text
        read so far, until it ends or is too large."""
        self.peek()
        while True:
            try:
                value, end = _DECODER.raw_decode(self.text, self.pos)
            except json.JSONDecodeError as error:
                if self.eof or not _may_go_on(self.text, error):
                    raise _Damaged(self.offset(error.pos), f"not JSON ({error.msg})") from None
            except RecursionError:
                raise _Damaged(self.offset(), "nested too deeply") from None
            else:
                # A number at the end of the text read may go on (`1` of `1.5`, `1` of `1e+18`).
                if self.eof or end < len(self.text) and not _number_tail(self.text, end):
                    self.pos = end
                    return value
            window = len(self.text) - self.pos
            if window > MAX_VALUE:
                raise _Damaged(self.offset(), f"a value larger than {MAX_VALUE >> 20} MiB")
            self.fill(2 * window + PIECE)

    def where(self, pos: int) -> Callable[[], int]:
        """How to find the byte offset of `pos` later (it costs an encoding of the text before it)."""
        text, base = self.text, self.base
        return lambda: base + len(text[:pos].encode("utf-8"))


_LITERALS = ("true", "false", "null", "NaN", "Infinity", "-Infinity")
_NUMBER_CHARS = "0123456789.eE+-"


def _number_tail(text: str, end: int) -> bool:
    """Whether all of text from `end` on could still be part of a number."""
    return text[end] in _NUMBER_CHARS and not text[end:].strip(_NUMBER_CHARS)


def _may_go_on(text: str, error: json.JSONDecodeError) -> bool:
    """Whether json's error may only mean that the text stops inside a value (more text would
    complete it) rather than that the text is wrong."""
    rest = text[error.pos:]
    return (len(rest) <= 1 or error.msg.startswith("Unterminated string")
            or "escape" in error.msg and len(rest) < 7 or any(word.startswith(rest) for word in _LITERALS)
            or not rest.strip(_NUMBER_CHARS))  # a number's fraction or exponent, cut


def read(path: str, keys: tuple[str, ...] = (),
         on_entry: Callable[[Any, Callable[[], int]], None] | None = None) -> TrainerState:
    """The top-level `keys` of the file at `path` and each `log_history` entry handed to
    `on_entry(entry, its byte offset when asked)`, reading on until the end or the first damage
    (then reported, what came before kept). BadInput when it parses as something else than a
    trainer state."""
    found = TrainerState(path)
    stream = fs.open_input(path, FILENAME)
    try:
        text = _Text(stream)
        try:
            _read_object(text, found, keys, on_entry)
        except _Damaged as exc:
            found.damage = Damage(path, exc.offset, exc.what)
    finally:
        stream.close()
    if found.damage is None and not found.has_history:
        raise BadInput(f"{path} is not a trainer state (no log_history list)")
    return found


def _read_object(text: _Text, found: TrainerState, keys: tuple[str, ...], on_entry) -> None:
    if text.peek() != "{":
        start = text.offset()
        text.value()  # damage when it does not parse; else it is JSON of another kind
        raise BadInput(f"{found.path} is not a trainer state (not a JSON object at byte {start})")
    text.pos += 1
    if text.peek() == "}":
        text.pos += 1
    else:
        while True:
            if text.peek() != '"':
                raise _Damaged(text.offset(), "a key expected")
            key = text.value()
            text.expect(":", "':'")
            if key == "log_history":
                _read_history(text, found, on_entry)
            else:
                value = text.value()
                if key in keys:
                    found.fields[key] = value  # a key given twice: the last, as json.loads has it
            if text.expect(",}", "',' or '}'") == "}":
                break
    if text.peek():
        raise _Damaged(text.offset(), "more after the end of the object")


def _read_history(text: _Text, found: TrainerState, on_entry) -> None:
    if text.peek() != "[":
        start = text.offset()
        text.value()
        raise BadInput(f"{found.path} is not a trainer state (log_history at byte {start} is not a list)")
    text.pos += 1
    found.has_history, found.entries = True, 0  # a log_history given twice: the last counts
    if text.peek() == "]":
        text.pos += 1
        return
    while True:
        text.peek()
        start = text.where(text.pos)
        entry = text.value()
        found.entries += 1
        if on_entry is not None:
            on_entry(entry, start)
        if text.expect(",]", "',' or ']'") == "]":
            return


def best_model_checkpoint(path: str) -> tuple[str | None, Damage | None]:
    """`best_model_checkpoint` of the trainer state at `path` (the last given) and the damage met
    reading it whole, if any: the value is None when it is absent, not a string, or not read before
    the damage, or when the file is missing or is no trainer state (then never damage). A damaged
    file may have lost (or not yet shown) the value: the caller decides whether to trust it."""
    try:
        state = read(path, ("best_model_checkpoint",))
    except (NotFound, BadInput, OSError):
        return None, None
    best = state.fields.get("best_model_checkpoint")
    return (best if isinstance(best, str) else None), state.damage
