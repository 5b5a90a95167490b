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
import math
import os
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from ckpttool.text import all_plain, base64_of, for_people, format_size, is_exact_text, replaced

SCHEMA_VERSION = 1
_settings = {"no_color": False}


def begin_invocation(no_color: bool) -> None:
    """Settings of one command run (tests run several in one process)."""
    _settings["no_color"] = no_color
    _settings["json_emitted"] = False


def _no_color() -> bool:
    return _settings["no_color"] or bool(os.environ.get("NO_COLOR"))


def console(stderr: bool = False, unbounded: bool = False):
    """A Rich console; `unbounded`: lines as long as they are (a tree of names: never wrapped)."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    # Piped output is read by programs and pagers: never wrap it at 80 columns.
    width = None if (stream.isatty() or os.environ.get("COLUMNS")) and not unbounded else 100_000
    return Console(stderr=stderr, markup=False, highlight=False, emoji=False, no_color=_no_color(),
                   soft_wrap=False, width=width)


def warn(message: str) -> None:
    """A warning on stderr, one line whatever names it holds (a directory named `x\nwarning: ...`
    must not forge a line of its own in a cron job's log)."""
    print(f"warning: {for_people(message, field=True)}", file=sys.stderr)


def hint(message: str) -> None:
    """What to try next, on stderr, as error hints are given."""
    print(f"hint: {for_people(message, field=True)}", file=sys.stderr)


def say(line: str) -> None:
    """A line for people on stderr (which checkpoints, what was chosen), one line whatever it names."""
    print(for_people(line, field=True), file=sys.stderr)


def warn_all(messages: Iterable[str]) -> None:
    for message in messages:
        warn(message)


def say_resolved(given: str, target, header: bool = True) -> None:
    """On stderr: which checkpoint a directory (or state file) given as TARGET stood for
    (`given -> given/model.ckpt-500`, with `header`), and how it had to be found."""
    if header and target.directory is not None:
        say(f"{given} -> {target.prefix}")
    warn_all(target.warnings)


def _float(value: float) -> float | str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


_PLAIN = (str, int, bool, type(None))


class RawJSON:
    """A value already encoded as emit_json encodes it in a pipe (compact: `, ` and `: `), spliced
    into the document as it is: `ls --json` of 100,000 checkpoints writes its rows as text, at a
    fraction of the cost of a dict each encoded by json (and walked by jsonable before). `plain()`
    gives the value itself, for what the text does not serve (indented output at a terminal, a
    name that is not UTF-8)."""

    __slots__ = ("text", "plain")

    def __init__(self, text: str, plain: Callable[[], Any]):
        self.text, self.plain = text, plain


def jsonable(value: Any) -> Any:
    """Convert numpy values, bytes, complex and non-finite floats to JSON-safe values."""
    kind = type(value)
    if kind in _PLAIN or kind is RawJSON:
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
    import json  # here: `latest DIR` prints without it (cli/quick.py)

    _settings["json_emitted"] = True
    payload = jsonable({"schema_version": SCHEMA_VERSION, "command": command, **document})
    # Indented for people at a terminal; compact (and far faster to encode) in pipes.
    indent = 2 if sys.stdout.isatty() else None
    text = None
    if indent is None:
        raw: list[str] = []
        token = f"\ue000raw-{os.urandom(8).hex()}-"  # no text of the document holds it by chance

        def splice(value: Any) -> str:
            if type(value) is not RawJSON:
                raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")
            raw.append(value.text)
            return f"{token}{len(raw) - 1}"

        text = json.dumps(payload, ensure_ascii=False, allow_nan=False, default=splice)
        if raw:
            first, *rest = text.split(f'"{token}')
            pieces = [first]
            for piece in rest:  # `N"` and what follows the N-th RawJSON
                number, after = piece.split('"', 1)
                pieces += (raw[int(number)], after)
            text = "".join(pieces)
    if text is None or not is_exact_text(text):
        payload = _without_raw(payload)
        text = json.dumps(payload, ensure_ascii=False, allow_nan=False, indent=indent)
        if not is_exact_text(text):  # rare: a name or path that is not UTF-8 somewhere
            text = json.dumps(_exact_names(payload), ensure_ascii=False, allow_nan=False, indent=indent)
    sys.stdout.write(text + "\n")


def _without_raw(value: Any) -> Any:
    """A jsonable document with each RawJSON replaced by its plain value."""
    if type(value) is RawJSON:
        return jsonable(value.plain())
    if type(value) is dict:
        return {k: _without_raw(v) for k, v in value.items()}
    if type(value) is list:
        return [_without_raw(v) for v in value]
    return value


# Times come from files (state-file timestamps, mtimes) and may lie beyond
# what a datetime holds (year 10000, NaN): those show as unknown.
_BAD_TIME = (ValueError, OverflowError, OSError)


# Seconds since 1970 before the year 10000: four-digit years, where time.strftime writes what
# isoformat does, at half the cost (`ls --json` of 100,000 checkpoints formats 200,000 times).
_STRFTIME_RANGE = 253402300800.0


# The time of day by table: `HH:` and `MM:SSZ` (Unix time counts no leap seconds: a day is 86,400
# of them, as gmtime has it), after the date, made once per day by strftime: a third of the cost
# of strftime per time.
_HOURS = [f"{hour:02d}:" for hour in range(24)]
_MINUTES_SECONDS = [f"{minute:02d}:{second:02d}Z" for minute in range(60) for second in range(60)]
_DATES: dict[int, str] = {}  # day since 1970 -> `YYYY-MM-DDT`
_DATES_KEPT = 4096


def iso_utc(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    # datetime rounds to microseconds: a fraction that rounds up to the next second takes its path.
    if 0.0 <= timestamp < _STRFTIME_RANGE and timestamp % 1.0 < 0.9999994:
        day, second = divmod(int(timestamp), 86400)
        date = _DATES.get(day)
        if date is None:
            if len(_DATES) >= _DATES_KEPT:
                _DATES.clear()
            date = _DATES[day] = time.strftime("%Y-%m-%dT", time.gmtime(day * 86400))
        return date + _HOURS[second // 3600] + _MINUTES_SECONDS[second % 3600]
    from datetime import datetime, timezone  # rare: the common times are formatted without it

    try:
        return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
    except _BAD_TIME:
        return None


def time_fields(field: str, timestamp: float | None) -> dict:
    """A time in JSON, both ways: `<field>` ISO-8601 UTC text, `<field>_epoch` Unix seconds."""
    if timestamp is not None and not math.isfinite(timestamp):
        timestamp = None
    return {field: iso_utc(timestamp), f"{field}_epoch": timestamp}


def local_time(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    from datetime import datetime

    try:
        return datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")
    except _BAD_TIME:
        return "-"


def human_bytes(size: int | None) -> str:
    return "-" if size is None else format_size(size)


def score_text(score: float | None) -> str:
    """A checkpoint's metric score in a table (`-`: none)."""
    return "-" if score is None else f"{score:.6g}"


def yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


def plural(count: int, noun: str, plural_form: str | None = None) -> str:
    """`1 variable`, `2 variables`, `0 variables` (`plural_form` for irregular nouns)."""
    return f"{count} {noun if count == 1 else plural_form or noun + 's'}"


def short_time(full: str) -> str:
    """A `local_time` string in short form for narrow tables, as `ls -l` does: the date and
    minute this year (`11-22 02:18`), the date alone for older ones (`2025-11-22`)."""
    if len(full) < 16:
        return full
    return full[5:16] if full[:4] == time.strftime("%Y") else full[:10]


# -- tables ---------------------------------------------------------------------------------
#
# Tables are laid out here rather than by Rich: Rich folds any cell mid-word to
# fit the terminal (`model.ck` / `pt-300`) and lays out cell by cell (minutes
# for 100,000 rows). To fit a narrow terminal, in this order: columns with a
# short form use it (times, statistics to 4 digits), the gap between columns
# narrows, lesser columns are dropped (`Column.drop`, lowest first), columns
# marked `stack` (statistics) leave the table for a `header value ...` line
# under each row, long text is wrapped at spaces.
# Names are never wrapped or cut: a name wider than its column is printed
# whole on a line of its own, the rest of its row on the next line.

NAME, PLAIN, TEXT = "name", "plain", "text"
_GAPS = (3, 2)
_TEXT_MIN = 24  # a wrapped text column is never made narrower than this


@dataclass(frozen=True)
class Column:
    header: str
    right: bool = False  # numbers
    kind: str = PLAIN  # NAME: never broken; TEXT: may be wrapped at spaces; PLAIN: kept whole
    drop: int = 0  # 0: always shown; else dropped to fit a narrow terminal, lowest first
    shorten: Callable[[str], str] | None = None  # a shorter form of a cell, used before dropping
    stack: bool = False  # when the table is still too wide: shown as `header value` under the row


def to_terminal() -> bool:
    """Whether what is printed goes to a terminal (a person reading), not a pipe or a file."""
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):  # no stdout, or closed
        return False


def terminal_width() -> int | None:
    """The width tables fit: $COLUMNS, else the terminal's; None (no limit) when stdout is piped."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdecimal() and int(columns) > 0:
        return int(columns)
    if sys.stdout.isatty():
        import shutil

        return shutil.get_terminal_size().columns
    return None


def _cell_width(text: str) -> int:
    if text.isascii():
        return len(text)
    from rich.cells import cell_len

    return cell_len(text)


def _natural(column: Column, cells: list[str]) -> int:
    if "".join(cells).isascii():  # each as wide as long
        return max(_cell_width(column.header), max(map(len, cells), default=0))
    return max([_cell_width(column.header)] + [_cell_width(cell) for cell in cells])


def _layout(columns: list[Column], cells: list[list[str]], width: int | None):
    """(shown column indexes, their widths, gap, stacked column indexes) for a terminal
    `width` (None: no limit)."""
    shown = list(range(len(columns)))
    natural = [_natural(c, col) for c, col in zip(columns, cells)]

    def need(gap: int) -> int:
        return sum(min(natural[i], _TEXT_MIN) if columns[i].kind == TEXT else natural[i]
                   for i in shown) + gap * (len(shown) - 1)

    gap = _GAPS[0]
    if width is None or need(gap) <= width:
        return shown, _widen_text(columns, shown, natural, gap, width), gap, []
    for i, column in enumerate(columns):
        if column.shorten is not None:
            cells[i] = [column.shorten(cell) for cell in cells[i]]
            natural[i] = _natural(column, cells[i])
    gap = _GAPS[1]
    for i in sorted((i for i, c in enumerate(columns) if c.drop), key=lambda i: columns[i].drop):
        if need(gap) <= width:
            break
        shown.remove(i)
    stacked = [i for i in shown if columns[i].stack] if need(gap) > width else []
    if stacked:  # the dropped columns that now fit come back, highest first
        dropped = [i for i in range(len(columns)) if i not in shown]
        shown = [i for i in shown if i not in stacked]
        for i in sorted(dropped, key=lambda i: -columns[i].drop):
            shown.append(i)
            if need(gap) > width:
                shown.remove(i)
        shown.sort()
    return shown, _widen_text(columns, shown, natural, gap, width), gap, stacked


def _widen_text(columns, shown, natural, gap, width):
    """Widths of the shown columns: natural, except that text columns share what is left
    (at least _TEXT_MIN each) and, when even that does not fit, name columns are narrowed
    (their longer names then overflow onto lines of their own)."""
    widths = {i: natural[i] for i in shown}
    if width is None:
        return widths
    text = [i for i in shown if columns[i].kind == TEXT]
    names = [i for i in shown if columns[i].kind == NAME]
    fixed = sum(natural[i] for i in shown if i not in text and i not in names) + gap * (len(shown) - 1)
    room = width - fixed
    text_min = sum(min(natural[i], _TEXT_MIN) for i in text)
    names_room = max(room - text_min, 0)
    for i in names:
        widths[i] = max(min(natural[i], names_room // len(names)), _cell_width(columns[i].header))
    room -= sum(widths[i] for i in names)
    for n, i in enumerate(text):
        widths[i] = max(min(natural[i], room // (len(text) - n)), min(natural[i], _TEXT_MIN))
        room -= widths[i]
    return widths


def _wrap(text: str, width: int) -> list[str]:
    if _cell_width(text) <= width:
        return [text]
    import textwrap

    return textwrap.wrap(text, width, break_long_words=False, break_on_hyphens=False) or [""]


def _pad(text: str, width: int, right: bool) -> str:
    space = " " * (width - _cell_width(text))
    return space + text if right else text + space


def _render_row(columns, shown, widths, gap, row) -> list[str]:
    """The lines of one row: usually one; more when text wraps or a name overflows."""
    lines, line, used = [], "", 0
    wrapped: dict[int, list[str]] = {}
    for n, i in enumerate(shown):
        column, cell, width = columns[i], row[i], widths[i]
        if n:
            line += " " * gap
            used += gap
        if column.kind == TEXT:
            wrapped[i] = _wrap(cell, width)
            cell = wrapped[i][0]
        if column.kind == NAME and _cell_width(cell) > width:
            if line.strip():  # a name after other cells: they end their line
                lines.append(line.rstrip())
            lines.append(" " * len(line) + cell)  # whole, on a line of its own
            line = " " * (used + width)
        else:
            line += _pad(cell, width, column.right)
        used += width
    lines.append(line.rstrip())
    for i, parts in wrapped.items():
        start = sum(widths[j] + gap for j in shown[: shown.index(i)])
        lines.extend(" " * start + part for part in parts[1:])
    return lines


def print_table(columns: Iterable[str | Column], rows: Iterable[Iterable[Any]], *, right: Iterable[str] = (),
                title: str | None = None) -> None:
    """A table for people, fitted to the terminal (see above). `columns`: Column
    descriptions, or headers (plain columns, right-aligned when named in `right`)."""
    right = set(right)
    columns = [c if isinstance(c, Column) else Column(c, right=c in right) for c in columns]
    # Column by column: a column of plain ASCII text (nearly every one) is shown as it is, without
    # a call per cell (prune's table of 100,000 checkpoints has half a million cells).
    cells = [list(map(str, column)) for column in zip(*rows)][: len(columns)]
    if not cells:
        return
    cells = [column if all_plain(column) else [for_people(cell, field=True) for cell in column] for column in cells]
    width = terminal_width()
    shown, widths, gap, stacked = _layout(columns, cells, width)
    header = [columns[i].header for i in shown]
    head = (" " * gap).join(_pad(h, widths[i], columns[i].right) for h, i in zip(header, shown)).rstrip()
    rule = "\u2500" * (sum(widths.values()) + gap * (len(shown) - 1))
    if sys.stdout.isatty() and os.environ.get("TERM") != "dumb":
        head = f"\x1b[1m{head}\x1b[0m"
    # a title is a run directory's or checkpoint's name from a listing: one line, as a field is
    out = ([for_people(title, field=True)] if title else []) + [head, rule]
    if not stacked and all(_natural(columns[i], cells[i]) <= widths[i] for i in shown):
        # Everything fits its column (the common case, and tables of 100,000 rows): one line a row.
        padded = [_pad_column(cells[i], widths[i], columns[i].right) for i in shown]
        out.extend(line.rstrip() for line in map((" " * gap).join, zip(*padded)))
    else:
        rows = [list(row) for row in zip(*cells)]
        for row in rows:
            out.extend(_render_row(columns, shown, widths, gap, row))
            if stacked:
                out.extend(_stacked_lines(columns, stacked, row, width))
    out.append("")
    sys.stdout.write("\n".join(out) + "\n")


def _pad_column(cells: list[str], width: int, right: bool) -> list[str]:
    if "".join(cells).isascii():  # as wide as long: str's own padding
        return [cell.rjust(width) for cell in cells] if right else [cell.ljust(width) for cell in cells]
    return [_pad(cell, width, right) for cell in cells]


def _stacked_lines(columns, stacked, row, width: int) -> list[str]:
    """The stacked cells of a row, `header value` pairs wrapped between pairs, indented."""
    pairs = [f"{columns[i].header} {row[i]}" for i in stacked if row[i]]
    lines, line = [], "   "
    for pair in pairs:
        if line.strip() and len(line) + 2 + len(pair) > width:
            lines.append(line)
            line = "   "
        line += ("  " if line.strip() else "") + pair
    return lines + ([line] if line.strip() else [])


def print_wrapped(lines: Iterable[str], indent: str = "") -> None:
    """Lines of prose (problems, notes) wrapped at spaces to the terminal, continued under
    `indent`; a name or path longer than a line is never cut."""
    width = terminal_width()
    if width is None:
        print_lines(lines)
        return
    import textwrap

    for line in lines:
        text = for_people(line, field=True)
        first = text[: len(text) - len(text.lstrip())]
        print_lines(textwrap.wrap(text, width, initial_indent="", subsequent_indent=first + indent,
                                  break_long_words=False, break_on_hyphens=False, drop_whitespace=True)
                    if text.strip() else [text])


def print_lines(lines: Iterable[str]) -> None:
    """Each one line: a tab or newline in it (a hostile name's) is escaped, so a script reading
    the output line by line gets exactly one line for each."""
    for line in lines:
        sys.stdout.write(for_people(line, field=True) + "\n")


def print_rows(rows: Iterable[tuple[str, ...]]) -> None:
    """Rows of fields joined by tabs, each field escaped as print_lines escapes a line."""
    for row in rows:
        sys.stdout.write("\t".join(for_people(field, field=True) for field in row) + "\n")
