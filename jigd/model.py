"""Shared vocabulary of jigd: identifiers, outcomes, stages and slot states.

Pure: no I/O. Identifiers parse the forms DOMAIN.md allows on input and always print the
canonical form, so whatever is stored or emitted compares equal byte for byte.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from functools import total_ordering
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer

__all__ = [
    "DeviceModel",
    "DeviceModelField",
    "FirmwareVersion",
    "FirmwareVersionField",
    "Guid",
    "GuidField",
    "IdentifierError",
    "LedColour",
    "Outcome",
    "SlotState",
    "Stage",
]


class IdentifierError(ValueError):
    """A GUID, Device Model or Firmware Version that does not parse; the message quotes it."""


_HEX_RE = re.compile(r"[0-9A-Fa-f]+")
_GUID_SEPARATED_RE = re.compile(r"[0-9A-Fa-f]{2}([-:])[0-9A-Fa-f]{2}(?:\1[0-9A-Fa-f]{2}){6}")
_GUID_FORM = (
    "8 octets of hex, e.g. 00-DB-12-34-56-78-90-A0, 00:db:12:34:56:78:90:a0 or 00DB1234567890A0"
)


def _is_hex(text: str, length: int) -> bool:
    return len(text) == length and _HEX_RE.fullmatch(text) is not None


@dataclass(frozen=True, slots=True, order=True)
class Guid:
    """A Communications Hub Device ID: an EUI-64, canonically `00-DB-12-34-56-78-90-A0`."""

    value: int

    def __post_init__(self) -> None:
        if not 0 <= self.value < 1 << 64:
            raise IdentifierError(f"GUID value {self.value!r} does not fit in 64 bits")

    @classmethod
    def parse(cls, text: str) -> Guid:
        """Parse a GUID with hyphens, colons or no separators, in either case."""
        if not isinstance(text, str):
            raise IdentifierError(f"GUID {text!r} is not text; a GUID is {_GUID_FORM}")
        stripped = text.strip()
        if _is_hex(stripped, 16) or _GUID_SEPARATED_RE.fullmatch(stripped):
            return cls(int(stripped.replace("-", "").replace(":", ""), 16))
        raise IdentifierError(f"GUID {text!r} is not a GUID; a GUID is {_GUID_FORM}")

    @classmethod
    def from_bytes(cls, data: bytes) -> Guid:
        """Read the 8 octets a hub reports, most significant first."""
        if len(data) != 8:
            raise IdentifierError(f"GUID bytes {data.hex()!r} are {len(data)} octets, not 8")
        return cls(int.from_bytes(data, "big"))

    def to_bytes(self) -> bytes:
        return self.value.to_bytes(8, "big")

    def __str__(self) -> str:
        return "-".join(f"{b:02X}" for b in self.to_bytes())

    def __repr__(self) -> str:
        return f"Guid('{self}')"


@dataclass(frozen=True, slots=True, order=True)
class DeviceModel:
    """A Device Model: ZigBee manufacturer code (2 octets) and model (4 octets), `1086/57310102`."""

    manufacturer: int
    model: int

    def __post_init__(self) -> None:
        if not 0 <= self.manufacturer <= 0xFFFF:
            raise IdentifierError(f"manufacturer {self.manufacturer!r} does not fit in 2 octets")
        if not 0 <= self.model <= 0xFFFFFFFF:
            raise IdentifierError(f"model {self.model!r} does not fit in 4 octets")

    @classmethod
    def parse(cls, text: str) -> DeviceModel:
        """Parse `MMMM/NNNNNNNN`: 4 hex characters, a slash, 8 hex characters."""
        if isinstance(text, str):
            manufacturer, sep, model = text.strip().partition("/")
            if sep and _is_hex(manufacturer, 4) and _is_hex(model, 8):
                return cls(int(manufacturer, 16), int(model, 16))
        raise IdentifierError(
            f"Device Model {text!r} is not a Device Model; write the manufacturer (4 hex) and "
            "model (8 hex) separated by a slash, e.g. 1086/57310102"
        )

    @classmethod
    def from_parts(cls, manufacturer: str, model: str) -> DeviceModel:
        """Build from the separate manufacturer and model columns of a manifest."""
        return cls.parse(f"{manufacturer.strip()}/{model.strip()}")

    @property
    def manufacturer_hex(self) -> str:
        return f"{self.manufacturer:04X}"

    @property
    def model_hex(self) -> str:
        return f"{self.model:08X}"

    def __str__(self) -> str:
        return f"{self.manufacturer_hex}/{self.model_hex}"

    def __repr__(self) -> str:
        return f"DeviceModel('{self}')"


@total_ordering
@dataclass(frozen=True, slots=True)
class FirmwareVersion:
    """A Firmware Version: 4 octets major.minor.revision.build, printed as 8 hex characters.

    Ordered numerically on the 32-bit value. `04000007` is the MCUboot image version `4.0.0+7`.
    """

    value: int

    def __post_init__(self) -> None:
        if not 0 <= self.value <= 0xFFFFFFFF:
            raise IdentifierError(f"firmware version {self.value!r} does not fit in 4 octets")

    @classmethod
    def parse(cls, text: str) -> FirmwareVersion:
        """Parse exactly 8 hex characters, e.g. `04000007`."""
        if isinstance(text, str) and _is_hex(text.strip(), 8):
            return cls(int(text.strip(), 16))
        raise IdentifierError(
            f"Firmware Version {text!r} is not a Firmware Version; write 8 hex characters, "
            "e.g. 04000007"
        )

    @classmethod
    def from_mcuboot(cls, major: int, minor: int, revision: int, build: int) -> FirmwareVersion:
        """Build from MCUboot's version fields; each must be 0-255 to fit our 4-octet form."""
        parts = {"major": major, "minor": minor, "revision": revision, "build": build}
        for name, part in parts.items():
            if not 0 <= part <= 0xFF:
                raise IdentifierError(
                    f"MCUboot version {major}.{minor}.{revision}+{build}: {name} {part} is "
                    "outside 0-255, so it has no Firmware Version"
                )
        return cls((major << 24) | (minor << 16) | (revision << 8) | build)

    @classmethod
    def parse_mcuboot(cls, text: str) -> FirmwareVersion:
        """Parse MCUboot's text form `major.minor.revision+build` (`+build` optional)."""
        match = re.fullmatch(r"(\d+)\.(\d+)\.(\d+)(?:\+(\d+))?", text.strip())
        if match is None:
            raise IdentifierError(
                f"MCUboot version {text!r} is not of the form major.minor.revision+build"
            )
        major, minor, revision, build = (int(g) if g else 0 for g in match.groups())
        return cls.from_mcuboot(major, minor, revision, build)

    @property
    def mcuboot(self) -> tuple[int, int, int, int]:
        """(major, minor, revision, build)."""
        v = self.value
        return (v >> 24) & 0xFF, (v >> 16) & 0xFF, (v >> 8) & 0xFF, v & 0xFF

    def mcuboot_str(self) -> str:
        major, minor, revision, build = self.mcuboot
        return f"{major}.{minor}.{revision}+{build}"

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, FirmwareVersion):
            return NotImplemented
        return self.value < other.value

    def __str__(self) -> str:
        return f"{self.value:08X}"

    def __repr__(self) -> str:
        return f"FirmwareVersion('{self}')"


def _coerce(kind: type[Any]) -> Any:
    def convert(value: Any) -> Any:
        if isinstance(value, kind):
            return value
        return kind.parse(value)

    return BeforeValidator(convert)


_TO_STR = PlainSerializer(str, return_type=str)

# Pydantic field types: accept the text forms, hold the typed value, serialise canonically.
GuidField = Annotated[Guid, _coerce(Guid), _TO_STR]
DeviceModelField = Annotated[DeviceModel, _coerce(DeviceModel), _TO_STR]
FirmwareVersionField = Annotated[FirmwareVersion, _coerce(FirmwareVersion), _TO_STR]


class Outcome(enum.StrEnum):
    """The one final outcome every GUID of a batch ends with.

    A contract: docs/architecture.md, "Per-GUID outcomes".
    """

    REFLASHED = "reflashed"
    ALREADY_CURRENT = "already_current"
    FAILED = "failed"
    NOT_RECEIVED = "not_received"


class Stage(enum.StrEnum):
    """Named stages of the flash procedure, in order."""

    IDENTIFY = "identify"
    AUTHORIZE = "authorize"
    SELECT = "select"
    CHECK_CURRENT = "check_current"
    UNLOCK = "unlock"
    UPLOAD = "upload"
    MARK_TEST = "mark_test"
    RESET = "reset"
    AWAIT_BOOT = "await_boot"
    VERIFY = "verify"
    CONFIRM = "confirm"
    LOCK = "lock"
    RECORD = "record"


class SlotState(enum.StrEnum):
    """What a slot is doing, as the control API, MQTT and `slot_state` metric show it."""

    OFFLINE = "offline"  # its rig is down
    EMPTY = "empty"
    BUSY = "busy"
    DONE = "done"  # GREEN: pull the hub
    FAILED = "failed"  # RED: set it aside
    REJECTED = "rejected"  # RED: not in an open batch, never written
    ATTENTION = "attention"  # BLINK: needs a person


class LedColour(enum.StrEnum):
    """LED states of the rig controller protocol."""

    OFF = "OFF"
    GREEN = "GREEN"
    RED = "RED"
    AMBER = "AMBER"
    BLINK = "BLINK"
