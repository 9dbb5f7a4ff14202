"""What a simulated hub's bootloader knows about an image in one of its slots.

imgtool's library does the MCUboot work (header, TLVs, hash, signature). Its `verify` reads a
file, so the bytes go through a private temporary file; callers run these functions in a
worker thread (`asyncio.to_thread`) so that the event loop never waits on the disk.
"""

from __future__ import annotations

import hashlib
import struct
import tempfile
from dataclasses import dataclass
from typing import Any

import imgtool.image

from jigd.model import FirmwareVersion, IdentifierError

__all__ = ["FlashImage", "ImageKey", "inspect_image", "signature_problem", "zephyr_version"]

# imgtool's key objects are untyped; this names what they are used for.
ImageKey = Any


@dataclass(frozen=True, slots=True, eq=False)
class FlashImage:
    """A whole image held in a slot, with what the hub reports about it."""

    data: bytes
    sha256: bytes
    version: FirmwareVersion | None  # None when the header is not MCUboot's or does not fit
    tlv_hash: bytes | None  # MCUboot's SHA256 TLV (header, body, protected TLVs)

    @property
    def size(self) -> int:
        return len(self.data)


def _verify(data: bytes, key: ImageKey) -> tuple[str, tuple[int, int, int, int] | None, bytes]:
    with tempfile.NamedTemporaryFile(prefix="jigsim-slot-", suffix=".bin") as file:
        file.write(data)
        file.flush()
        try:
            result, version, digest, _signature = imgtool.image.Image.verify(file.name, key)
        except (struct.error, IndexError, ValueError):
            return "TRUNCATED", None, b""
    return str(result.name), version, digest or b""


def inspect_image(data: bytes) -> FlashImage:
    """Read an image's version and MCUboot hash (no signature check)."""
    result, version, digest = _verify(data, None)
    firmware: FirmwareVersion | None = None
    if result == "OK" and version is not None:
        try:
            firmware = FirmwareVersion.from_mcuboot(*version)
        except IdentifierError:
            firmware = None
    return FlashImage(
        data=data,
        sha256=hashlib.sha256(data).digest(),
        version=firmware,
        tlv_hash=digest if result == "OK" else None,
    )


def signature_problem(data: bytes, key: ImageKey) -> str | None:
    """Why the bootloader refuses the image under `key`, or None when it is signed by it."""
    result, _version, _digest = _verify(data, key)
    if result == "OK":
        return None
    return {
        "INVALID_MAGIC": "no MCUboot header",
        "INVALID_TLV_INFO_MAGIC": "no TLV area",
        "INVALID_HASH": "image hash does not match its contents",
        "KEY_MISMATCH": "hash type does not fit the image key",
        "INVALID_SIGNATURE": "not signed by the manufacturer's image key",
        "TRUNCATED": "truncated image",
    }.get(result, result.lower())


def zephyr_version(version: FirmwareVersion | None) -> str:
    """Zephyr's image-state version text: `4.0.0`, with `.build` when build is not 0."""
    if version is None:
        return "0.0.0"
    major, minor, revision, build = version.mcuboot
    text = f"{major}.{minor}.{revision}"
    return f"{text}.{build}" if build else text
