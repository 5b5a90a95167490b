"""Output for people (Rich tables, markup off) and for machines (one JSON document).

JSON conventions (DESIGN.md): `schema_version` and `command` first;
non-finite floats as "NaN"/"Infinity"/"-Infinity"; bytes as UTF-8 text when
valid, else {"base64": ...}; complex numbers as [re, im].

Names need not be valid UTF-8 (TensorFlow's SaveV2 stores any bytes; file
names are bytes too). Such a name never breaks the output:
- for people (tables, trees, `-q`, warnings) its undecodable bytes, and any
  control character, are shown escaped as `\\xNN`;
- in JSON a text field (`"name"`, `"from"`, `"prefix"` ...) holding one is
  given with U+FFFD in place of the bad bytes, plus a sibling field
  `"<field>_base64"` with the exact bytes (`"name_base64"`); elsewhere (an
  item of a list) it is text with U+FFFD.
"""
from __future__ import annotations

import base64
import json
import math
import os
import sys
from datetime import datetime, timezone
from typing import Any, Iterable

from ckpttool.formats.text import base64_of, for_people, is_exact_text, replaced

SCHEMA_VERSION = 1
_settings = {"no_color": False}


def begin_invocation(no_color: bool) -> None:
    """Settings of one command run (tests run several in one process)."""
    _settings["no_color"] = no_color
    _settings["json_emitted"] = False


def _no_color() -> bool:
    return _settings["no_color"] or bool(os.environ.get("NO_COLOR"))


def console(stderr: bool = False):
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    # Piped output is read by programs and pagers: never wrap it at 80 columns.
    width = None if stream.isatty() or os.environ.get("COLUMNS") else 100_000
    return Console(stderr=stderr, markup=False, highlight=False, emoji=False, no_color=_no_color(),
                   soft_wrap=False, width=width)


def warn(message: str) -> None:
    print(f"warning: {for_people(message)}", file=sys.stderr)


def warn_all(messages: Iterable[str]) -> None:
    for message in messages:
        warn(message)


def _float(value: float) -> float | str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


_PLAIN = (str, int, bool, type(None))


def jsonable(value: Any) -> Any:
    """Convert numpy values, bytes, complex and non-finite floats to JSON-safe values."""
    kind = type(value)
    if kind in _PLAIN:
        return value
    if kind is dict:
        # Plain members are kept without a call each: `ls --json` of 100,000
        # checkpoints holds over a million of them.
        return {k if type(k) is str else str(k): v if type(v) in _PLAIN else jsonable(v) for k, v in value.items()}
    if kind is list or kind is tuple:
        return [jsonable(v) for v in value]
    if kind is float:
        return _float(value)
    import numpy as np

    if isinstance(value, np.ndarray):
        if value.dtype.kind == "f" and np.isfinite(value).all():
            return value.tolist()  # the common case, without a Python call per element
        if value.dtype == object or value.dtype.kind in "cfSU":
            return [jsonable(v) for v in value] if value.ndim else jsonable(value.item())
        return value.tolist()
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, (complex, np.complexfloating)):
        return [_float(float(value.real)), _float(float(value.imag))]
    if isinstance(value, (float, np.floating)):
        return _float(float(value))
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def json_emitted() -> bool:
    """True once this run printed its JSON document (an error after it must not print a second)."""
    return _settings.get("json_emitted", False)


def _exact_names(value: Any) -> Any:
    """A jsonable document with every text that is not valid UTF-8 replaced (U+FFFD)
    and, in an object, joined by a `<field>_base64` sibling holding its exact bytes."""
    if isinstance(value, str):
        return replaced(value)
    if isinstance(value, list):
        return [_exact_names(v) for v in value]
    if not isinstance(value, dict):
        return value
    out = {}
    for key, item in value.items():
        key = replaced(key)
        if isinstance(item, str) and not is_exact_text(item):
            out[key] = replaced(item)
            out[key + "_base64"] = base64_of(item)
        else:
            out[key] = _exact_names(item)
    return out


def emit_json(command: str, document: dict) -> None:
    _settings["json_emitted"] = True
    payload = jsonable({"schema_version": SCHEMA_VERSION, "command": command, **document})
    # Indented for people at a terminal; compact (and far faster to encode) in pipes.
    indent = 2 if sys.stdout.isatty() else None
    text = json.dumps(payload, ensure_ascii=False, allow_nan=False, indent=indent)
    if not is_exact_text(text):  # rare: a name or path that is not UTF-8 somewhere
        text = json.dumps(_exact_names(payload), ensure_ascii=False, allow_nan=False, indent=indent)
    sys.stdout.write(text + "\n")


# Times come from files (state-file timestamps, mtimes) and may lie beyond
# what a datetime holds (year 10000, NaN): those show as unknown.
_BAD_TIME = (ValueError, OverflowError, OSError)


def iso_utc(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    try:
        return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
    except _BAD_TIME:
        return None


def local_time(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    try:
        return datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")
    except _BAD_TIME:
        return "-"


def human_bytes(size: int | None) -> str:
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"  # pragma: no cover


def yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


# Rich lays a table out cell by cell (minutes for 100,000 rows): longer tables
# are laid out here, in the same shape, one pass for the widths.
_RICH_TABLE_ROWS = 500


def print_table(columns: Iterable[str], rows: Iterable[Iterable[Any]], *, right: Iterable[str] = (),
                title: str | None = None) -> None:
    columns, right = list(columns), set(right)
    rows = [[for_people(str(cell)) for cell in row] for row in rows]
    if len(rows) > _RICH_TABLE_ROWS:
        _print_long_table(columns, rows, right, title)
        return
    from rich import box
    from rich.table import Table
    from rich.text import Text

    table = Table(box=box.SIMPLE_HEAD, title=title, title_justify="left", pad_edge=False)
    for column in columns:
        table.add_column(column, justify="right" if column in right else "left", overflow="fold")
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))
    console().print(table)


def _print_long_table(columns: list[str], rows: list[list[str]], right: set[str], title: str | None) -> None:
    from rich.cells import cell_len

    def width(text: str) -> int:
        return len(text) if text.isascii() else cell_len(text)

    widths = [width(column) for column in columns]
    for row in rows:
        widths = [max(w, width(cell)) for w, cell in zip(widths, row)]
    total = sum(widths) + 3 * (len(widths) - 1) + 2

    def line(cells) -> str:
        padded = [" " * (w - width(cell)) + cell if column in right else cell + " " * (w - width(cell))
                  for cell, w, column in zip(cells, widths, columns)]
        return " " + "   ".join(padded) + " "

    out = [for_people(title).ljust(total)] if title else []
    out += [" " * total, line(columns), " " + "\u2500" * (total - 2) + " "]
    out += [line(row) for row in rows]
    out.append(" " * total)
    sys.stdout.write("\n".join(out) + "\n")


def print_lines(lines: Iterable[str]) -> None:
    for line in lines:
        sys.stdout.write(for_people(line) + "\n")
