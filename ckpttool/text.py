"""How names and other text taken from files are shown.

Tensor names are bytes: TensorFlow's SaveV2 stores whatever it is given, so
a name need not be valid UTF-8. Readers decode names with `surrogateescape`,
which keeps every byte (`name_bytes(name)` gives the stored key back, so
rename-vars writes the same bytes), but such a string cannot be printed.
People see the undecodable bytes escaped as `\\xNN`; JSON gets the name with
U+FFFD in their place plus the exact bytes in base64 (cli/render.py). Text
quoted from a file in a message is cut to a short excerpt, so a hostile file
cannot fill the terminal, a log or memory with it.
"""
from __future__ import annotations

import base64
import re

EXCERPT_CHARS = 120
# Control characters that could drive a terminal (escape sequences, carriage
# returns, the C1 controls such as U+009B, a one-character CSI); tabs and newlines
# stay in prose, as messages are made of them.
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# In one field (a table cell, a name on a line of its own) a tab or a newline is escaped too, and
# the line separators Python's str.splitlines also ends a line at (U+0085 is among the C1
# controls): a hostile name must not split a row or a line that scripts read, nor forge another.
_FIELD_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def name_bytes(name: str) -> bytes:
    """The stored bytes of a name read with surrogateescape."""
    try:
        return name.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that did not come from a file's bytes
        return name.encode("utf-8", "backslashreplace")


def is_exact_text(text: str) -> bool:
    """False when `text` holds undecodable bytes (lone surrogates), which UTF-8 output cannot carry."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def for_people(text: str, field: bool = False) -> str:
    """`text` with undecodable bytes and control characters shown as `\\xNN` (a `field` also its
    tabs, newlines and U+2028/U+2029; C1 controls and those as `\\uNNNN`); other text unchanged."""
    if not is_exact_text(text):
        text = name_bytes(text).decode("utf-8", "backslashreplace")
    pattern = _FIELD_CONTROL_RE if field else _CONTROL_RE
    return pattern.sub(_escaped, text) if pattern.search(text) else text


def _escaped(match: re.Match) -> str:
    # A C1 control as `\u0085`: `\x85` is how an undecodable byte 0x85 is shown.
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x80 else f"\\u{code:04x}"


def all_plain(texts: list[str]) -> bool:
    """Whether for_people leaves every one of `texts` as it is (ASCII, no control character), each
    as wide on a terminal as it is long: one look at them all."""
    joined = "".join(texts)
    return joined.isascii() and _FIELD_CONTROL_RE.search(joined) is None


def replaced(text: str) -> str:
    """`text` with each undecodable byte replaced by U+FFFD (always valid UTF-8)."""
    return text if is_exact_text(text) else name_bytes(text).decode("utf-8", "replace")


def base64_of(text: str) -> str:
    """The exact bytes of `text` (as read from the file) in base64."""
    return base64.b64encode(name_bytes(text)).decode("ascii")


def excerpt(text: str | bytes, limit: int = EXCERPT_CHARS) -> str:
    """Printable text of at most `limit` characters (plus a note of how much was cut)."""
    if isinstance(text, (bytes, bytearray, memoryview)):
        text = bytes(text)
        length = len(text)
        shown = for_people(text[:limit].decode("utf-8", "surrogateescape"))
    else:
        length = len(text)
        shown = for_people(text[:limit])
    if length > limit:
        return f"{shown}... ({length - limit} more)"
    return shown


def quote(name: str | bytes, limit: int = EXCERPT_CHARS) -> str:
    """A name for a message: quoted, undecodable bytes escaped, a long one cut."""
    return "'" + excerpt(name, limit) + "'"


def format_size(size: int) -> str:
    """A size for people, in binary units everywhere (tables and messages alike): `312 B`,
    `7.2 KiB`, `64 MiB` (an exact number of units shows no decimal)."""
    if size < 1024:
        return f"{size} B"
    value = float(size)
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        value /= 1024
        if value < 1024 or unit == "PiB":
            break
    return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
