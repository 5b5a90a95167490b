"""protobuf's error texts as users should read them: about their file (a line
number, what was wrong), never naming our internal message types
(`ckpttool.CheckpointState`: the package that keeps our protos apart from
TensorFlow's) nor quoting the file's text."""
from __future__ import annotations

import re

from ckpttool.text import excerpt

_DECODE_PREFIX_RE = re.compile(r"^Error parsing message(?: with type '[\w.]+')?:? ?")
# What kind of mistake a text-format parse error is, by protobuf's wording: its own messages quote
# the text found (`has no field named "AKIA..."`), and the file may be anything (a state file that
# is a link to a key file), so only the kind and the line are shown.
_TEXT_FORMAT_MISTAKES = (
    ("has no field named", "unknown field"),
    ("does not have extensions", "unknown field (a [bracketed] name)"),
    ("codec can't decode", "bad escape in a string"),
    ("should not have multiple", "a field given more than once"),
    ("Expected identifier", "a field name was expected"),
    ("String missing ending quote", "a string without its closing quote"),
    ("Expected string", "a quoted string was expected"),
    ("parse integer", "an integer was expected"),
    ("parse float", "a number was expected"),
    ("parse bool", "true or false was expected"),
    ("Invalid field value", "an invalid value"),
)


def decode_error_text(exc: Exception) -> str:
    """Why binary protobuf could not be parsed: `Wire format was corrupt`."""
    reason = _DECODE_PREFIX_RE.sub("", str(exc)).replace("ckpttool.", "")
    return excerpt(reason or "not a valid message")


def text_format_error_text(exc: Exception) -> str:
    """A text-format ParseError as `line 1: unknown field`: where, and what kind of mistake, never
    the text found there."""
    message = str(exc)
    mistake = next((kind for wording, kind in _TEXT_FORMAT_MISTAKES if wording in message), "not valid text format")
    line = exc.GetLine() if hasattr(exc, "GetLine") else None
    return f"line {line}: {mistake}" if line else mistake
