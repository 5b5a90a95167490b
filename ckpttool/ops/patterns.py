"""User-supplied regular expressions (--filter, --regex, --drop, --keep):
compiled once, a bad one reported as a usage error naming its option."""
from __future__ import annotations

import re

from ckpttool.errors import UsageProblem


def compile_pattern(pattern: str, option: str) -> re.Pattern:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise UsageProblem(f"bad {option} regular expression {pattern!r}: {exc}") from None


def compile_optional(pattern: str | None, option: str) -> re.Pattern | None:
    return None if pattern is None else compile_pattern(pattern, option)
