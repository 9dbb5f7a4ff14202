"""MCUboot image checks, through imgtool's library: signature, header version, size and hash.

imgtool does the MCUboot work (header, TLVs, signature); this module turns its results into
errors that name the file and say what is wrong.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import imgtool.image
import imgtool.keys
from cryptography.exceptions import UnsupportedAlgorithm

from firmware_catalog.errors import ImageError, TrustedKeyError
from jigd.model import FirmwareVersion, IdentifierError

__all__ = [
    "TrustedKey",
    "VerifiedImage",
    "check_image",
    "file_sha256",
    "load_trusted_key",
    "read_image_hash",
]

# imgtool's key objects are untyped; this names what they are used for.
TrustedKey = Any

_SIGNING_PUBLIC_KEYS = (
    imgtool.keys.Ed25519Public,
    imgtool.keys.ECDSA256P1Public,
    imgtool.keys.ECDSA384P1Public,
    imgtool.keys.RSAPublic,
)
_HASH_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class VerifiedImage:
    """What a signed image proved to be: header version, file size, file sha256, image hash.

    `image_hash` is MCUboot's: the SHA256 TLV over header, body and protected TLVs. A hub's
    image state names images by it; the upload's `sha` is the file's sha256.
    """

    version: FirmwareVersion
    size: int
    sha256: str
    image_hash: str


def load_trusted_key(path: Path, manufacturer: int) -> TrustedKey:
    """Load a manufacturer's public signing key (PEM); refuse private keys and non-signing keys."""
    if not path.is_file():
        raise TrustedKeyError(path, manufacturer, "no such file")
    try:
        key = imgtool.keys.load(str(path))
    except OSError as exc:
        raise TrustedKeyError(path, manufacturer, f"cannot read it: {exc.strerror}") from exc
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise TrustedKeyError(path, manufacturer, "not a PEM public key") from exc
    except Exception as exc:  # imgtool raises bare Exception for unsupported key types
        raise TrustedKeyError(path, manufacturer, f"unsupported key: {exc}") from exc
    if key is None or isinstance(key, imgtool.keys.PayloadSigner | imgtool.keys.DigestSigner):
        raise TrustedKeyError(
            path, manufacturer, "holds a private key; a station keeps only public keys"
        )
    if not isinstance(key, _SIGNING_PUBLIC_KEYS):
        raise TrustedKeyError(path, manufacturer, f"a {key.shortname()} key cannot verify images")
    return key


def file_sha256(path: Path) -> tuple[str, int]:
    """sha256 (hex) and size of a file, read in chunks."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as file:
        while chunk := file.read(_HASH_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


_VERIFY_REASONS = {
    "INVALID_MAGIC": "not an MCUboot image (no MCUboot header magic at the start)",
    "INVALID_TLV_INFO_MAGIC": (
        "not a complete MCUboot image (no TLV area after the image: truncated, or never signed)"
    ),
    "INVALID_HASH": "the MCUboot image hash does not match the contents: changed after signing",
    "KEY_MISMATCH": "the image hash algorithm does not fit the trusted key's type",
}
_BAD_SIGNATURE = (
    "no valid signature by the trusted key {key_path} (unsigned, or signed with another key, "
    "such as another manufacturer's)"
)


def check_image(
    path: Path, key: TrustedKey, key_path: Path, shown_as: Path | None = None
) -> VerifiedImage:
    """Verify a binary image's signature with `key`; read its header version, size and sha256.

    `shown_as` is the path to name in errors when `path` is a private copy being checked.
    """
    name = shown_as or path
    version, digest = _verify(path, key, name, _BAD_SIGNATURE.format(key_path=key_path))
    major, minor, revision, build = version
    try:
        firmware_version = FirmwareVersion.from_mcuboot(major, minor, revision, build)
    except IdentifierError as exc:
        raise ImageError(name, f"header version: {exc}") from None
    try:
        sha256, size = file_sha256(path)
    except OSError as exc:
        raise ImageError(name, f"cannot read it: {exc.strerror}") from exc
    return VerifiedImage(
        version=firmware_version, size=size, sha256=sha256, image_hash=digest.hex()
    )


def read_image_hash(path: Path) -> str:
    """MCUboot image hash (hex) of an image file, checked against its contents, no signature.

    Used to migrate catalog entries written before the catalog recorded image hashes; the
    signature is checked separately (`check_image`, `jigd catalog verify`).
    """
    if not path.is_file():
        raise ImageError(path, "is missing")
    _version, digest = _verify(path, None, path, "cannot be read as an MCUboot image")
    return digest.hex()


def _verify(
    path: Path, key: TrustedKey | None, name: Path, bad_signature: str
) -> tuple[tuple[int, int, int, int], bytes]:
    """imgtool's verify of `path` (signature too, if `key`): header version and image hash."""
    try:
        result, version, digest, _signature = imgtool.image.Image.verify(str(path), key)
    except struct.error:
        raise ImageError(name, "not an MCUboot image (too short, or truncated)") from None
    except OSError as exc:
        raise ImageError(name, f"cannot read it: {exc.strerror}") from exc
    if result.name != "OK":
        raise ImageError(name, _VERIFY_REASONS.get(result.name) or bad_signature)
    if not digest:
        # A "pure" signature (ed25519 over the whole image) carries no SHA256 TLV, so no hub
        # could name the image in its image state.
        raise ImageError(name, "has no SHA256 TLV (MCUboot image hash); sign it with a hash TLV")
    return version, bytes(digest)
