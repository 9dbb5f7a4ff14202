"""SMP vendor group 64 "jig": identity, unlock and lock of a Communications Hub.

Our definition (docs/smp-jig-group.md), built on the `smp` package's message models so that
it encodes like every other SMP group. The unlock is a challenge-response:

    device_key = HMAC-SHA256(master_key, guid)
    mac        = HMAC-SHA256(device_key, nonce || guid)

with one master key per manufacturer. A locked hub answers image upload, image state write and
reset with SMP error EACCESSDENIED.
"""

from __future__ import annotations

import hashlib
import hmac
from enum import IntEnum, unique
from typing import Final

from smp import error, message

__all__ = [
    "JIG_GROUP_ID",
    "NONCE_SIZE",
    "IdentityReadRequest",
    "IdentityReadResponse",
    "JigCommand",
    "JigErrorV1",
    "JigErrorV2",
    "JigMgmtErr",
    "LockWriteRequest",
    "LockWriteResponse",
    "UnlockChallengeRequest",
    "UnlockChallengeResponse",
    "UnlockWriteRequest",
    "UnlockWriteResponse",
    "device_key",
    "unlock_mac",
]

JIG_GROUP_ID: Final = 64
NONCE_SIZE: Final = 16
MAC_SIZE: Final = 32


@unique
class JigCommand(IntEnum):
    IDENTITY = 0
    UNLOCK = 1
    LOCK = 2


@unique
class JigMgmtErr(IntEnum):
    """Group-specific error codes of the jig group (SMP version 2 `err.rc`)."""

    OK = 0
    BAD_MAC = 1  # the unlock MAC did not match: wrong master key, or a stale nonce
    NO_CHALLENGE = 2  # unlock write without a fresh challenge read first


class IdentityReadRequest(message.ReadRequest):
    """Ask the hub who it is."""

    _GROUP_ID = JIG_GROUP_ID
    _COMMAND_ID = JigCommand.IDENTITY


class IdentityReadResponse(message.ReadResponse):
    """The hub's identity and lock state."""

    _GROUP_ID = JIG_GROUP_ID
    _COMMAND_ID = JigCommand.IDENTITY

    guid: bytes
    manufacturer: int
    model: int
    firmware_version: int
    locked: bool


class UnlockChallengeRequest(message.ReadRequest):
    """Read a fresh unlock nonce."""

    _GROUP_ID = JIG_GROUP_ID
    _COMMAND_ID = JigCommand.UNLOCK


class UnlockChallengeResponse(message.ReadResponse):
    _GROUP_ID = JIG_GROUP_ID
    _COMMAND_ID = JigCommand.UNLOCK

    nonce: bytes


class UnlockWriteRequest(message.WriteRequest):
    """Answer the challenge with the MAC."""

    _GROUP_ID = JIG_GROUP_ID
    _COMMAND_ID = JigCommand.UNLOCK

    mac: bytes


class UnlockWriteResponse(message.WriteResponse):
    _GROUP_ID = JIG_GROUP_ID
    _COMMAND_ID = JigCommand.UNLOCK


class LockWriteRequest(message.WriteRequest):
    """Lock the hub's maintenance interface again."""

    _GROUP_ID = JIG_GROUP_ID
    _COMMAND_ID = JigCommand.LOCK


class LockWriteResponse(message.WriteResponse):
    _GROUP_ID = JIG_GROUP_ID
    _COMMAND_ID = JigCommand.LOCK


class JigErrorV1(error.ErrorV1):
    """Parse-only: build error responses with `drivers.smp_codec.encode_error`."""

    _GROUP_ID = JIG_GROUP_ID


class JigErrorV2(error.ErrorV2[JigMgmtErr]):
    """Parse-only: build error responses with `drivers.smp_codec.encode_error`."""

    _GROUP_ID = JIG_GROUP_ID


def device_key(master_key: bytes, guid: bytes) -> bytes:
    """The hub's own key, derived from its manufacturer's master key and its GUID."""
    return hmac.new(master_key, guid, hashlib.sha256).digest()


def unlock_mac(key: bytes, nonce: bytes, guid: bytes) -> bytes:
    """The answer to an unlock challenge, computed with the hub's device key."""
    return hmac.new(key, nonce + guid, hashlib.sha256).digest()
