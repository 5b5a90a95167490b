"""protobuf's error texts as users should read them: about their file (a line
number, what was wrong), never naming our internal message types
(`ckpttool.CheckpointState`: the package that keeps our protos apart from
TensorFlow's) or echoing the line back."""
from __future__ import annotations

import re

from ckpttool.text import excerpt

_DECODE_PREFIX_RE = re.compile(r"^Error parsing message(?: with type '[\w.]+')?:? ?")
_LOCATION_RE = re.compile(r"^\d+:\d+ : ")
_ECHO_RE = re.compile(r"^'[^\n]*?': ")
_TEXT_FORMAT_WORDS = (
    (re.compile(r'Message type "[\w.]+" has no field named "([^"]*)"\.?'), r"unknown field `\1`"),
    (re.compile(r'Message type "[\w.]+" does not have extensions\.?'), "unknown field (a [bracketed] name)"),
    (re.compile(r"'unicodeescape' codec can't decode bytes in position .*"), "bad escape in a string"),
)


def decode_error_text(exc: Exception) -> str:
    """Why binary protobuf could not be parsed: `Wire format was corrupt`."""
    reason = _DECODE_PREFIX_RE.sub("", str(exc)).replace("ckpttool.", "")
    return excerpt(reason or "not a valid message")


def text_format_error_text(exc: Exception) -> str:
    """A text-format ParseError as `line 1: unknown field `garbage``."""
    message = _ECHO_RE.sub("", _LOCATION_RE.sub("", str(exc)), count=1)
    for pattern, replacement in _TEXT_FORMAT_WORDS:
        message = pattern.sub(replacement, message)
    message = message.replace("ckpttool.", "")
    line = exc.GetLine() if hasattr(exc, "GetLine") else None
    return excerpt(f"line {line}: {message}" if line else message)
