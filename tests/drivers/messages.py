"""A pool of every SMP message the driver uses, as frames, for codec and client tests."""

from __future__ import annotations

import hashlib

from smp import header as smpheader
from smp import image_management as smpimg
from smp import message as smpmsg
from smp import os_management as smpos

from drivers import jig_group
from drivers.smp_codec import encode_error

GUID = bytes.fromhex("00db1234567890a0")
IMAGE_HASH = hashlib.sha256(b"image").digest()


def requests() -> list[smpmsg.Request]:
    """Every request the host sends."""
    return [
        smpos.EchoWriteRequest(d="hello", sequence=1),
        smpos.ResetWriteRequest(sequence=2),
        smpos.MCUMgrParametersReadRequest(sequence=3),
        smpimg.ImageStatesReadRequest(sequence=4),
        smpimg.ImageStatesWriteRequest(hash=IMAGE_HASH, confirm=False, sequence=5),
        smpimg.ImageStatesWriteRequest(confirm=True, sequence=6),
        smpimg.ImageUploadWriteRequest(
            off=0, data=bytes(range(256)) * 2, image=0, len=4096, sha=IMAGE_HASH, sequence=7
        ),
        smpimg.ImageUploadWriteRequest(off=512, data=b"\x00\xff" * 300, sequence=8),
        jig_group.IdentityReadRequest(sequence=9),
        jig_group.UnlockChallengeRequest(sequence=10),
        jig_group.UnlockWriteRequest(mac=bytes(32), sequence=11),
        jig_group.LockWriteRequest(sequence=12),
    ]


def _state(active: bool) -> smpimg.ImageState:
    return smpimg.ImageState(
        slot=0 if active else 1,
        version="4.0.0.7" if active else "4.1.0",
        hash=IMAGE_HASH,
        bootable=True,
        active=active,
        confirmed=active,
        pending=not active,
    )


def responses() -> list[smpmsg.Response]:
    """Every successful response the hub sends."""
    return [
        smpos.EchoWriteResponse(r="hello", sequence=1),
        smpos.ResetWriteResponse(sequence=2),
        smpos.MCUMgrParametersReadResponse(buf_size=2048, buf_count=4, sequence=3),
        smpimg.ImageStatesReadResponse(images=[_state(True), _state(False)], sequence=4),
        smpimg.ImageStatesWriteResponse(images=[_state(True), _state(False)], sequence=5),
        smpimg.ImageUploadWriteResponse(off=1024, sequence=7),
        smpimg.ImageUploadWriteResponse(off=4096, match=True, sequence=8),
        jig_group.IdentityReadResponse(
            guid=GUID,
            manufacturer=0x1086,
            model=0x57310102,
            firmware_version=0x04000007,
            locked=True,
            sequence=9,
        ),
        jig_group.UnlockChallengeResponse(nonce=bytes(range(16)), sequence=10),
        jig_group.UnlockWriteResponse(sequence=11),
        jig_group.LockWriteResponse(sequence=12),
    ]


def error_frames() -> list[bytes]:
    """Error responses, version 1 and 2, built as the hub builds them."""
    upload = smpimg.ImageUploadWriteRequest(off=0, data=b"x", sequence=20).header
    unlock = jig_group.UnlockWriteRequest(mac=bytes(32), sequence=21).header
    reset = smpos.ResetWriteRequest(sequence=22).header
    return [
        encode_error(upload, 11, group_rc=False, reason="locked"),
        encode_error(reset, 11, group_rc=False),
        encode_error(upload, int(smpimg.IMG_MGMT_ERR.INVALID_HASH), group_rc=True),
        encode_error(unlock, int(jig_group.JigMgmtErr.BAD_MAC), group_rc=True),
    ]


def response_frames() -> list[bytes]:
    return [bytes(m) for m in responses()] + error_frames()


def request_frames() -> list[bytes]:
    return [bytes(m) for m in requests()]


def op_of(frame: bytes) -> smpheader.OP:
    return smpheader.Header.loads(frame[:8]).op
