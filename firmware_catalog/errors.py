"""The catalog's one exception base and its typed subclasses.

Every message names the file and the entry (Device Model and Firmware Version) it is about, so
a person can go straight to what to fix.
"""

from __future__ import annotations

import enum
from pathlib import Path

from jigd.model import DeviceModel, FirmwareVersion, Stage

__all__ = [
    "CatalogError",
    "CatalogFileError",
    "EntryError",
    "ImageError",
    "SelectionCode",
    "SelectionError",
    "TrustedKeyError",
]


class CatalogError(Exception):
    """Base of every firmware catalog error."""


class CatalogFileError(CatalogError):
    """A catalog.json that cannot be used; `problems` lists each one, naming the entry."""

    def __init__(self, path: Path, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"{path}: {len(problems)} problem(s) in the catalog:\n{lines}")


class ImageError(CatalogError):
    """An image file refused by `add`, or one that no longer matches its catalog entry."""

    def __init__(self, path: Path, reason: str, entry: str | None = None) -> None:
        self.path = path
        self.reason = reason
        self.entry = entry
        where = f"{path}: {entry}" if entry else str(path)
        super().__init__(f"{where}: {reason}")


class TrustedKeyError(CatalogError):
    """A manufacturer's trusted key that is missing or unusable."""

    def __init__(self, path: Path, manufacturer: int, reason: str) -> None:
        self.path = path
        self.manufacturer = manufacturer
        self.reason = reason
        super().__init__(
            f"{path}: trusted key of manufacturer {manufacturer:04X}: {reason}; put the "
            "manufacturer's public key there, as `imgtool getpub -e pem` prints it"
        )


class EntryError(CatalogError):
    """An entry that is not there, or already there, when a command needs the opposite."""

    def __init__(self, path: Path, model: DeviceModel, version: FirmwareVersion, reason: str):
        self.path = path
        self.model = model
        self.version = version
        self.reason = reason
        super().__init__(f"{path}: {model} {version}: {reason}")


class SelectionCode(enum.StrEnum):
    """Why no firmware was selected: the failure code of stage `select`."""

    NO_FIRMWARE = "no_firmware"
    NEWER_THAN_CATALOG = "newer_than_catalog"
    # The latest entry is not trusted: it failed verification when the catalog was read, or a
    # flash failed because of its image (Catalog.untrusted)
    IMAGE_UNTRUSTED = "image_untrusted"


class SelectionError(CatalogError):
    """No firmware may be flashed to this hub: a failure of stage `select`."""

    stage = Stage.SELECT

    def __init__(
        self, code: SelectionCode, model: DeviceModel, running: FirmwareVersion, detail: str
    ) -> None:
        self.code = code
        self.model = model
        self.running = running
        self.detail = detail
        super().__init__(f"{code}: {detail}")
