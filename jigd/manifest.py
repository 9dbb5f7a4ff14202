"""Batch manifest import: the sending party's CSV list of GUIDs, validated all or nothing.

The format is a contract (docs/architecture.md, "Batch manifest"; docs/manifest.md): UTF-8 with
or without a BOM, a header row, columns `guid` (required), `manufacturer`, `model`,
`firmware_version` (optional, as declared by the sending party). Every problem in the file is
collected and reported in one `ManifestError`, each as `FILE:LINE: field: message`, so a
technician fixes the file in one go; a file with any problem yields no rows at all.
"""

from __future__ import annotations

import csv
import io
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from drivers.untrusted import FIELD_LIMIT, printable
from jigd.model import DeviceModel, FirmwareVersion, Guid, IdentifierError

__all__ = [
    "COLUMNS",
    "REQUIRED_COLUMNS",
    "ManifestError",
    "ManifestProblem",
    "ManifestRow",
    "load_manifest",
    "parse_manifest",
]

_LOGGER = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("guid",)
COLUMNS = ("guid", "manufacturer", "model", "firmware_version")
_PAIRED = ("manufacturer", "model")
_EXAMPLE_HEADER = ",".join(COLUMNS)

_MANUFACTURER_RE = re.compile(r"[0-9A-Fa-f]{4}")
_MODEL_RE = re.compile(r"[0-9A-Fa-f]{8}")

# Field names for problems that belong to no single column.
FILE_FIELD = "(file)"
ROW_FIELD = "(row)"


@dataclass(frozen=True, slots=True)
class ManifestRow:
    """One listed hub: the GUID (canonical) and what the sending party declared about it."""

    line: int
    guid: Guid
    model: DeviceModel | None
    firmware_version: FirmwareVersion | None


@dataclass(frozen=True, slots=True)
class ManifestProblem:
    """One thing wrong with a manifest, located by file, line and field."""

    source: str
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = self.source if self.line is None else f"{self.source}:{self.line}"
        return f"{where}: {self.field}: {self.message}"


class ManifestError(Exception):
    """A manifest that cannot be imported; `problems` lists every one as `FILE:LINE: field: msg`.

    Nothing of the manifest was imported. `details` holds the same problems as structured values.
    """

    def __init__(self, source: str, problems: Sequence[ManifestProblem]) -> None:
        self.source = source
        self.details = tuple(problems)
        self.problems = [str(p) for p in self.details]
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(
            f"{source}: {len(self.problems)} problem(s) in the batch manifest; nothing was "
            f"imported. Fix the file and import it again:\n{lines}"
        )


def load_manifest(path: Path) -> list[ManifestRow]:
    """Read and validate a manifest file; raise ManifestError naming every problem."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        problem = ManifestProblem(
            str(path), None, FILE_FIELD, f"cannot read the file: {exc.strerror}"
        )
        raise ManifestError(str(path), [problem]) from exc
    return parse_manifest(data, str(path))


def parse_manifest(data: bytes, source: str) -> list[ManifestRow]:
    """Validate a manifest's bytes (`source` names it in errors); all rows or a ManifestError."""
    parser = _Parser(source)
    rows = parser.parse(data)
    if parser.problems:
        problems = sorted(parser.problems, key=lambda p: p.line or 0)
        _LOGGER.info("%s: manifest refused with %d problem(s)", source, len(problems))
        raise ManifestError(source, problems)
    _LOGGER.info("%s: manifest lists %d GUID(s)", source, len(rows))
    return rows


class _Parser:
    """Collects problems while walking the file once; never stops at the first one."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[ManifestProblem] = []

    def problem(self, line: int | None, field: str, message: str) -> None:
        # A field may be a header cell as written, a message quotes cells: the file's text,
        # shown escaped and capped (drivers/untrusted.py).
        self.problems.append(
            ManifestProblem(self.source, line, printable(field, FIELD_LIMIT), printable(message))
        )

    def parse(self, data: bytes) -> list[ManifestRow]:
        text = self._decode(data)
        # newline="" keeps line ends for the csv module, which then numbers lines as editors do.
        reader = csv.reader(io.StringIO(text, newline=""), strict=True)
        columns: dict[str, int] | None = None
        width = 0
        rows: list[ManifestRow] = []
        first_line: dict[Guid, int] = {}
        next_line = 1
        try:
            for record in reader:
                # A quoted field may span lines: a record starts where the previous one ended.
                line, next_line = next_line, reader.line_num + 1
                if not record or all(not field.strip() for field in record):
                    continue  # blank lines (often trailing) carry nothing
                if columns is None:
                    columns = self._header(record, line)
                    width = len(record)
                    continue
                row = self._row(record, line, columns, width)
                if row is None:
                    continue
                if row.guid in first_line:
                    self.problem(
                        line,
                        "guid",
                        f"{row.guid} is listed twice, on lines {first_line[row.guid]} and "
                        f"{line}; list each GUID once",
                    )
                    continue
                first_line[row.guid] = line
                rows.append(row)
        except csv.Error as exc:
            self.problem(
                reader.line_num,
                ROW_FIELD,
                f"not valid CSV ({exc}); the lines after it were not checked",
            )
        if columns is None and not self.problems:  # nothing but blanks, commas and quotes
            self.problem(
                1,
                FILE_FIELD,
                f"the file is empty; the first line must name the columns, e.g. {_EXAMPLE_HEADER}",
            )
        if columns is not None and not rows and not self.problems:
            self.problem(1, FILE_FIELD, "no GUIDs: the file has a header and no rows")
        return rows

    def _decode(self, data: bytes) -> str:
        """UTF-8, BOM optional; every line that is not UTF-8 is a problem of its own."""
        parts: list[str] = []
        # bytes.splitlines breaks at \n, \r and \r\n, as the csv reader counts lines; a UTF-8
        # multi-byte sequence never contains those bytes, so splitting first is safe.
        for number, raw in enumerate(data.splitlines(keepends=True), start=1):
            try:
                parts.append(raw.decode("utf-8"))
            except UnicodeDecodeError as exc:
                self.problem(
                    number,
                    FILE_FIELD,
                    f"not UTF-8 text: byte 0x{raw[exc.start]:02X} at column {exc.start + 1}; "
                    "save the manifest as UTF-8 (CSV UTF-8 in a spreadsheet)",
                )
                parts.append(raw.decode("utf-8", errors="replace"))
        text = "".join(parts)
        return text.removeprefix("\ufeff")

    def _header(self, record: list[str], line: int) -> dict[str, int]:
        columns: dict[str, int] = {}
        for index, raw_name in enumerate(record):
            name = raw_name.strip().lower()
            if name in columns:
                self.problem(line, name, f"column {name!r} appears twice in the header")
            elif name in COLUMNS:
                columns[name] = index
            elif not name:
                self.problem(
                    line,
                    f"column {index + 1}",
                    f"the header names no column here; the columns are {_column_list()}",
                )
            else:
                self.problem(
                    line,
                    raw_name.strip(),
                    f"unknown column {raw_name.strip()!r}; the columns are {_column_list()}",
                )
        for name in REQUIRED_COLUMNS:
            if name not in columns:
                self.problem(line, name, f"required column {name!r} is missing from the header")
        present = [name for name in _PAIRED if name in columns]
        if len(present) == 1:
            missing = next(name for name in _PAIRED if name not in columns)
            self.problem(
                line,
                missing,
                f"column {missing!r} is missing while {present[0]!r} is present; "
                "manufacturer and model go together: give both columns or neither",
            )
        return columns

    def _row(
        self, record: list[str], line: int, columns: dict[str, int], width: int
    ) -> ManifestRow | None:
        if len(record) != width:
            self.problem(
                line,
                ROW_FIELD,
                f"{len(record)} field(s) where the header has {width}; "
                "check for a missing or extra comma",
            )
            return None
        values = {name: record[index].strip() for name, index in columns.items()}
        count_before = len(self.problems)
        guid = self._guid(values, line)
        model = self._model(values, line)
        firmware = self._firmware(values, line)
        if guid is None or len(self.problems) != count_before:
            return None
        return ManifestRow(line=line, guid=guid, model=model, firmware_version=firmware)

    def _guid(self, values: dict[str, str], line: int) -> Guid | None:
        if "guid" not in values:
            return None
        text = values["guid"]
        if not text:
            self.problem(line, "guid", "empty; every row needs the hub's GUID")
            return None
        try:
            return Guid.parse(text)
        except IdentifierError as exc:
            self.problem(line, "guid", str(exc))
            return None

    def _model(self, values: dict[str, str], line: int) -> DeviceModel | None:
        if not all(name in values for name in _PAIRED):
            return None  # the header lacks one of the pair; that is reported once, on line 1
        manufacturer = values["manufacturer"]
        model = values["model"]
        if not manufacturer and not model:
            return None
        ok = True
        if not manufacturer:
            self.problem(
                line,
                "manufacturer",
                f"empty while model is {model!r}; give both manufacturer and model or neither",
            )
            ok = False
        elif not _MANUFACTURER_RE.fullmatch(manufacturer):
            self.problem(
                line,
                "manufacturer",
                f"manufacturer {manufacturer!r} is not a manufacturer code; "
                "write 4 hex characters, e.g. 1086",
            )
            ok = False
        if not model:
            self.problem(
                line,
                "model",
                f"empty while manufacturer is {manufacturer!r}; "
                "give both manufacturer and model or neither",
            )
            ok = False
        elif not _MODEL_RE.fullmatch(model):
            self.problem(
                line,
                "model",
                f"model {model!r} is not a model code; write 8 hex characters, e.g. 57310102",
            )
            ok = False
        if not ok:
            return None
        try:
            return DeviceModel.from_parts(manufacturer, model)
        except IdentifierError as exc:  # unreachable after the checks above, kept for safety
            self.problem(line, "model", str(exc))
            return None

    def _firmware(self, values: dict[str, str], line: int) -> FirmwareVersion | None:
        text = values.get("firmware_version", "")
        if not text:
            return None
        try:
            return FirmwareVersion.parse(text)
        except IdentifierError as exc:
            self.problem(line, "firmware_version", str(exc))
            return None


def _column_list() -> str:
    return ", ".join(f"{c} (required)" if c in REQUIRED_COLUMNS else c for c in COLUMNS)
