"""Deterministic manufacturer keys and signed MCUboot images for test stations and the simulator.

Keys are Ed25519, derived from a seed, so signatures (and so whole images) are the same on every
run. Images are built and signed by imgtool's library, as a manufacturer's build would do.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import imgtool.image
import imgtool.keys
import imgtool.version
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from jigd.model import DeviceModel, FirmwareVersion

__all__ = [
    "HEADER_SIZE",
    "MASTER_KEYS_FILE",
    "ManufacturerKeys",
    "make_manufacturer_keys",
    "make_signed_image",
    "write_keys",
]

HEADER_SIZE = 0x200
MASTER_KEYS_FILE = "master-keys.toml"
# What imgtool appends to an Ed25519-signed image: TLV info (4), SHA256 (4+32), KEYHASH (4+32)
# and ED25519 (4+64). Used to size the payload so the whole image is the size asked for.
_SIGNED_TLV_BYTES = 144
_UNSIGNED_TLV_BYTES = 40  # TLV info and SHA256 only


@dataclass(frozen=True, slots=True)
class ManufacturerKeys:
    """A manufacturer's image signing key and its unlock master key, derived from a seed."""

    manufacturer: int
    signing_key: Ed25519PrivateKey
    master_key: bytes

    @property
    def manufacturer_hex(self) -> str:
        return f"{self.manufacturer:04X}"

    def private_pem(self) -> bytes:
        """The signing key as unencrypted PKCS#8 PEM, as `imgtool keygen -t ed25519` writes."""
        return self.signing_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def public_pem(self) -> bytes:
        """The public key, as `imgtool getpub -e pem` prints it: a station's `keys/<mfr>.pem`."""
        pem: bytes = self.imgtool_key().get_public_pem()
        return pem

    def imgtool_key(self) -> imgtool.keys.Ed25519:
        return imgtool.keys.Ed25519(self.signing_key)


def _derive(purpose: str, manufacturer: int, seed: int) -> bytes:
    return hashlib.sha256(f"jigsim {purpose} {seed} {manufacturer:04X}".encode()).digest()


def make_manufacturer_keys(manufacturer: int, seed: int) -> ManufacturerKeys:
    """The keys of `manufacturer` (0-0xFFFF) for `seed`: the same on every run."""
    if not 0 <= manufacturer <= 0xFFFF:
        raise ValueError(f"manufacturer {manufacturer!r} does not fit in 2 octets")
    signing = Ed25519PrivateKey.from_private_bytes(_derive("signing key", manufacturer, seed))
    return ManufacturerKeys(
        manufacturer=manufacturer,
        signing_key=signing,
        master_key=_derive("unlock master key", manufacturer, seed),
    )


def _write_private(path: Path, data: bytes) -> None:
    """Write a secret: created 0600, and set to 0600 if it already existed."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as file:
        os.fchmod(file.fileno(), 0o600)
        file.write(data)


def write_keys(directory: Path, all_keys: Iterable[ManufacturerKeys]) -> list[Path]:
    """Write `<mfr>.signing.pem` (0600), `<mfr>.pem` and one `master-keys.toml` (0600).

    `master-keys.toml` holds one line per manufacturer, `"1086" = "<64 hex>"`, the form of the
    station's `secrets.master_keys_file`. Returns the paths written.
    """
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    lines = []
    for keys in all_keys:
        private = directory / f"{keys.manufacturer_hex}.signing.pem"
        _write_private(private, keys.private_pem())
        public = directory / f"{keys.manufacturer_hex}.pem"
        public.write_bytes(keys.public_pem())
        written += [private, public]
        lines.append(f'"{keys.manufacturer_hex}" = "{keys.master_key.hex()}"\n')
    master = directory / MASTER_KEYS_FILE
    _write_private(master, "".join(lines).encode("ascii"))
    written.append(master)
    return written


def make_signed_image(
    key: ManufacturerKeys | None,
    model: DeviceModel,
    version: FirmwareVersion,
    size: int,
    seed: int,
) -> bytes:
    """An MCUboot image of `size` bytes for `model` at `version`, signed with `key`.

    Header 0x200 bytes (padded by imgtool), payload bytes derived from the seed, model and
    version. `key` None gives an unsigned image (hash TLV only), which a bootloader rejects.
    The same arguments give the same bytes.
    """
    tlv_bytes = _UNSIGNED_TLV_BYTES if key is None else _SIGNED_TLV_BYTES
    payload_size = size - HEADER_SIZE - tlv_bytes
    if payload_size < 1:
        raise ValueError(f"an image of {size} bytes is too small; give at least 1 KiB")
    payload = hashlib.shake_256(f"jigsim payload {seed} {model} {version}".encode()).digest(
        payload_size
    )
    image = imgtool.image.Image(
        version=imgtool.version.decode_version(version.mcuboot_str()),
        header_size=HEADER_SIZE,
        pad_header=True,
    )
    with tempfile.TemporaryDirectory(prefix="jigsim-image-") as scratch:
        payload_path = Path(scratch) / "payload.bin"
        payload_path.write_bytes(payload)
        # imgtool prints progress ("sign the digest") to stdout; keep it out of ours.
        with contextlib.redirect_stdout(io.StringIO()):
            image.load(str(payload_path))
            image.create(None if key is None else key.imgtool_key(), "hash", None)
    return bytes(image.payload)
