"""Text from outside jigd (a hub, a rig controller, a manifest, a control-API client), made safe
to show: control characters escaped visibly, length capped, spreadsheet formulas neutralised.

Such text is data, never markup for a terminal, a log reader or a spreadsheet. A hub's SMP
error `rsn` may hold a newline followed by a forged log line, ANSI escapes that repaint a
terminal, a bidi override (U+202E) that reverses what follows, a NUL, a lone surrogate, or 10 kB;
a manifest cell may start with `=` and run as a formula when fault-analysis.csv is opened.

- `printable(text)`: every character that `str.isprintable` refuses (C0 and C1 controls with
  CR, LF, TAB, ESC and DEL; format characters such as the bidi overrides and zero-width
  characters; line and paragraph separators; surrogates; unassigned and private-use code points;
  white space other than the plain space) is written as its Python escape (`\\n`, `\\x1b`,
  `\\u202e`, `\\udcff`), and the result is cut to `limit` characters with a visible marker.
  Printable text, ASCII or not, comes back unchanged (the same object). Backslashes are left as
  they are, so an escape that was already there stays readable, and `printable` of its own
  result changes nothing.
- `csv_cell(text)`: `printable`, then a leading `'` when the cell starts with `=`, `+`, `-`,
  `@`, TAB or CR (OWASP's rule against CSV injection); the csv module quotes the rest.
- `PrintableFormatter`: a logging formatter whose every record is one line whatever its
  message holds (`jigd run` logs through it); a traceback keeps its own line breaks, each of
  its lines made printable (exception messages of the drivers are printable already).

Caps (characters, after escaping): `FIELD_LIMIT` (256) for one value quoted inside a message
(an SMP `rsn`, a rig controller's reason, a manifest's column name); `MESSAGE_LIMIT` (4096) for a
whole message: an error's text, a log line, a CSV cell. Ordinary messages are far shorter, so
the caps only ever cut hostile input.

This module lives in `drivers/` because the driver layer, which may import only `jigd.model`
(docs/architecture.md, "Import rules"), is where a hub's text enters; the daemon imports it too.
"""

from __future__ import annotations

import logging
from types import TracebackType
from typing import Final

__all__ = [
    "FIELD_LIMIT",
    "MESSAGE_LIMIT",
    "PrintableFormatter",
    "csv_cell",
    "printable",
]

FIELD_LIMIT: Final = 256
MESSAGE_LIMIT: Final = 4096

_ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None]
_SHORT_ESCAPES: Final = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}
_FORMULA_STARTS: Final = ("=", "+", "-", "@", "\t", "\r")


def _escape(char: str) -> str:
    if char.isprintable():
        return char
    short = _SHORT_ESCAPES.get(char)
    if short is not None:
        return short
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


_MARKER_ROOM: Final = 32  # "...[N more]" with N up to 20 digits


def printable(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """`text` with every non-printable character escaped, at most `limit` characters: when cut,
    it ends with the marker `...[N more]` (N characters of `text` left out), within the limit.
    Printable text within the limit is returned as it is. `limit` is at least 64."""
    limit = max(limit, 2 * _MARKER_ROOM)
    if text.isprintable() and len(text) <= limit:
        return text
    budget = limit - _MARKER_ROOM  # what is kept of a text that has to be cut
    out: list[str] = []
    size = 0
    kept = 0  # characters of `text` that fit in the budget
    for char in text:
        piece = _escape(char)
        size += len(piece)
        if size > limit:
            return "".join(out[:kept]) + f"...[{len(text) - kept} more]"
        if size <= budget:
            kept += 1
        out.append(piece)
    return "".join(out)


def csv_cell(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """`text` as a spreadsheet must see it: printable, capped, and never a formula."""
    cell = printable(text, limit - 1)
    return "'" + cell if text.startswith(_FORMULA_STARTS) else cell


def _each_line(text: str) -> str:
    return "\n".join(printable(line) for line in text.split("\n"))


class PrintableFormatter(logging.Formatter):
    """A log formatter that writes each record's message as one printable, capped line."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        record.message = printable(record.message)
        return super().formatMessage(record)

    def formatException(self, ei: _ExcInfo) -> str:  # noqa: N802 - logging's name
        return _each_line(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:  # noqa: N802 - logging's name
        return _each_line(super().formatStack(stack_info))
