"""Catalog entries and the catalog.json format that holds them.

catalog.json is `{"schema": "jigd.catalog/2", "entries": [...]}`, entries sorted by Device
Model then Firmware Version so that a change shows as a small diff. Schema 2 added each entry's
MCUboot image hash (`image_hash`); a schema 1 file is read as it is and migrated on open
(`Catalog.reload`).
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from firmware_catalog.errors import CatalogFileError
from jigd.model import DeviceModel, FirmwareVersion, FirmwareVersionField

__all__ = [
    "CATALOG_SCHEMA",
    "CATALOG_SCHEMAS",
    "CatalogEntry",
    "Status",
    "dump_catalog",
    "parse_catalog",
    "validation_problems",
]

CATALOG_SCHEMA = "jigd.catalog/2"
CATALOG_SCHEMAS = ("jigd.catalog/1", CATALOG_SCHEMA)  # what parse_catalog reads

_SPEC_VERSION = Annotated[str, Field(pattern=r"^[0-9]+(\.[0-9]+)*$", max_length=16)]


class Status(enum.StrEnum):
    """Release status: only `production` is selected, `pilot` where a station allows it."""

    PRODUCTION = "production"
    PILOT = "pilot"
    WITHDRAWN = "withdrawn"


class CatalogEntry(BaseModel):
    """One firmware release for one Device Model, and the image that carries it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    manufacturer: Annotated[str, Field(pattern=r"^[0-9A-F]{4}$", description="4 hex, e.g. 1086")]
    model: Annotated[str, Field(pattern=r"^[0-9A-F]{8}$", description="8 hex, e.g. 57310102")]
    firmware_version: FirmwareVersionField
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$", description="of the image file")]
    image_hash: (
        Annotated[
            str,
            Field(
                pattern=r"^[0-9a-f]{64}$",
                description="MCUboot image hash: the image's SHA256 TLV (header, body and "
                "protected TLVs), by which a hub's image state names the image",
            ),
        ]
        | None
    ) = None
    size: Annotated[int, Field(gt=0, description="of the image file, in bytes")]
    status: Status
    released: date
    gbcs: _SPEC_VERSION | None = None
    chts: _SPEC_VERSION | None = None
    notes: Annotated[str, Field(max_length=1000)] = ""

    @classmethod
    def for_model(cls, device_model: DeviceModel, **fields: Any) -> CatalogEntry:
        """Build an entry from a DeviceModel and the other fields."""
        return cls(
            manufacturer=device_model.manufacturer_hex, model=device_model.model_hex, **fields
        )

    @property
    def device_model(self) -> DeviceModel:
        return DeviceModel(int(self.manufacturer, 16), int(self.model, 16))

    @property
    def key(self) -> tuple[DeviceModel, FirmwareVersion]:
        """What identifies an entry: no two entries share it."""
        return self.device_model, self.firmware_version

    @property
    def image_name(self) -> str:
        """The image's file name under images/: content-addressed."""
        return f"{self.sha256}.bin"

    def describe(self) -> str:
        return f"{self.device_model} {self.firmware_version}"


class _CatalogFile(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    schema_id: Literal["jigd.catalog/1", "jigd.catalog/2"] = Field(alias="schema")
    entries: list[CatalogEntry]


def _name_entry(raw: Any, index: int) -> str:
    """`entries[3] (1086/57310102 04000007)`, or just the index when the entry has no such keys."""
    name = f"entries[{index}]"
    if isinstance(raw, dict):
        mfr, model, version = raw.get("manufacturer"), raw.get("model"), raw.get("firmware_version")
        if isinstance(mfr, str) and isinstance(model, str) and isinstance(version, str):
            name += f" ({mfr}/{model} {version})"
    return name


def validation_problems(exc: ValidationError, raw: Any) -> list[str]:
    """Turn pydantic's errors into `entries[3] (1086/57310102 04000007).status: message`."""
    problems = []
    raw_entries = raw.get("entries") if isinstance(raw, dict) else None
    for error in exc.errors():
        loc = list(error["loc"])
        where = ""
        if (
            len(loc) >= 2
            and loc[0] == "entries"
            and isinstance(loc[1], int)
            and isinstance(raw_entries, list)
            and loc[1] < len(raw_entries)
        ):
            where = _name_entry(raw_entries[loc[1]], loc[1])
            loc = loc[2:]
        for part in loc:
            where += f"[{part}]" if isinstance(part, int) else (f".{part}" if where else part)
        problems.append(f"{where or '(top level)'}: {error['msg']}")
    return problems


def parse_catalog(path: Path, data: bytes) -> list[CatalogEntry]:
    """Validate catalog.json's bytes; raise CatalogFileError naming every bad entry."""
    try:
        raw = json.loads(data)
    except UnicodeDecodeError as exc:
        raise CatalogFileError(path, [f"not UTF-8 text at byte {exc.start}"]) from None
    except json.JSONDecodeError as exc:
        raise CatalogFileError(
            path, [f"not valid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"]
        ) from None
    except RecursionError:
        raise CatalogFileError(path, ["not usable JSON: nested too deeply to read"]) from None
    except ValueError:  # the only other one json.loads raises: an integer of over 4300 digits
        raise CatalogFileError(path, ["not usable JSON: a number too long to read"]) from None
    try:
        entries = _CatalogFile.model_validate(raw).entries
    except ValidationError as exc:
        raise CatalogFileError(path, validation_problems(exc, raw)) from None
    seen: dict[tuple[DeviceModel, FirmwareVersion], int] = {}
    problems = []
    for index, entry in enumerate(entries):
        first = seen.setdefault(entry.key, index)
        if first != index:
            problems.append(
                f"entries[{index}] ({entry.describe()}): the same Device Model and Firmware "
                f"Version as entries[{first}]; keep one"
            )
    if problems:
        raise CatalogFileError(path, problems)
    return entries


def dump_catalog(entries: Iterable[CatalogEntry]) -> bytes:
    """Serialise entries as catalog.json, sorted, ending with a newline."""
    ordered = sorted(entries, key=lambda e: e.key)
    document = {
        "schema": CATALOG_SCHEMA,
        "entries": [e.model_dump(mode="json") for e in ordered],
    }
    return (json.dumps(document, indent=2) + "\n").encode("utf-8")
