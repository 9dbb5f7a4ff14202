"""A small scripted SMP hub on the far side of an in-memory transport, for unit tests.

It follows docs/hub-protocol.md closely enough to exercise the host: requests are processed in
order, one at a time, each after `handle_s`; a request that arrives while `buf_count` are queued
is dropped; uploads resume by sha; a wrong offset is answered with the expected one. Faults are
switches a test flips. No tasks: timers only, cancelled by `close()`.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from smp import error as smperror
from smp import header as smpheader
from smp import image_management as smpimg
from smp import os_management as smpos

from drivers import jig_group
from drivers.errors import LinkError
from drivers.framing import parse_header
from drivers.memory import MemoryTransport
from drivers.smp_codec import encode_error

_Handler = Callable[[bytes, smpheader.Header], bytes | None]
_GUARDED = frozenset({(1, 1, 2), (1, 0, 2), (0, 5, 2)})
GUID = bytes.fromhex("00db000000000042")
MASTER_KEY = b"m" * 32


@dataclass
class Upload:
    sha: bytes | None
    length: int
    data: bytearray = field(default_factory=bytearray)

    @property
    def offset(self) -> int:
        return len(self.data)


@dataclass
class FakeHub:
    end: MemoryTransport
    buf_size: int = 512
    buf_count: int = 4
    handle_s: float = 0.0
    locked: bool = False
    # faults
    drop_upload_requests: set[int] = field(default_factory=set)  # by index of upload request
    drop_upload_responses: set[int] = field(default_factory=set)
    silent: bool = False  # answer nothing (hung)
    report_match: bool | None = True
    forget_upload_at: int | None = None  # forget the record when it reaches this offset
    # state
    upload: Upload | None = None
    secondary_sha: bytes | None = None
    nonce: bytes | None = None
    # observations
    upload_requests: list[tuple[int, int]] = field(default_factory=list)  # (off, data length)
    frame_sizes: list[int] = field(default_factory=list)
    dropped_busy: int = 0
    max_queued: int = 0
    resets: int = 0
    _queue: deque[bytes] = field(default_factory=deque)
    _timer: asyncio.TimerHandle | None = None
    _uploads_seen: int = 0

    def __post_init__(self) -> None:
        self.end.set_listener(self)

    def is_locked(self) -> bool:
        return self.locked

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # FrameListener
    def frame_received(self, frame: bytes) -> None:
        self.frame_sizes.append(len(frame))
        if len(self._queue) >= self.buf_count:
            self.dropped_busy += 1
            return
        self._queue.append(frame)
        self.max_queued = max(self.max_queued, len(self._queue))
        self._schedule()

    def connection_lost(self, error: LinkError) -> None:
        self.close()

    def _schedule(self) -> None:
        if self._timer is None and self._queue:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self.handle_s, self._process)

    def _process(self) -> None:
        self._timer = None
        frame = self._queue.popleft()
        reply = self._handle(frame)
        if reply is not None and not self.silent and not self.end.is_closed:
            self.end.send(reply)
        self._schedule()

    def _handle(self, frame: bytes) -> bytes | None:
        fields = parse_header(frame)
        assert fields is not None
        head = smpheader.Header.loads(frame[:8])
        key = (fields.group_id, fields.command_id, fields.op)
        if key in _GUARDED and self.locked:
            return encode_error(
                head, smperror.MGMT_ERR.EACCESSDENIED, group_rc=False, reason="locked"
            )
        handler = self._handlers().get(key)
        if handler is None:
            return encode_error(head, smperror.MGMT_ERR.ENOTSUP, group_rc=False)
        return handler(frame, head)

    def _handlers(
        self,
    ) -> dict[tuple[int, int, int], Callable[[bytes, smpheader.Header], bytes | None]]:
        jig = jig_group.JIG_GROUP_ID
        return {
            (0, 0, 2): self._echo,
            (0, 5, 2): self._reset,
            (0, 6, 0): self._params,
            (1, 0, 0): self._state,
            (1, 0, 2): self._state,
            (1, 1, 2): self._upload,
            (jig, 0, 0): self._identity,
            (jig, 1, 0): self._challenge,
            (jig, 1, 2): self._unlock,
            (jig, 2, 2): self._lock,
        }

    def _echo(self, frame: bytes, head: smpheader.Header) -> bytes:
        req = smpos.EchoWriteRequest.loads(frame)
        return bytes(smpos.EchoWriteResponse(r=req.d, sequence=head.sequence))

    def _reset(self, frame: bytes, head: smpheader.Header) -> bytes:
        self.resets += 1
        return bytes(smpos.ResetWriteResponse(sequence=head.sequence))

    def _params(self, frame: bytes, head: smpheader.Header) -> bytes:
        return bytes(
            smpos.MCUMgrParametersReadResponse(
                buf_size=self.buf_size, buf_count=self.buf_count, sequence=head.sequence
            )
        )

    def _state(self, frame: bytes, head: smpheader.Header) -> bytes:
        return bytes(smpimg.ImageStatesReadResponse(images=self._states(), sequence=head.sequence))

    def _identity(self, frame: bytes, head: smpheader.Header) -> bytes:
        return bytes(
            jig_group.IdentityReadResponse(
                guid=GUID,
                manufacturer=0x1086,
                model=0x57310102,
                firmware_version=0x01000000,
                locked=self.locked,
                sequence=head.sequence,
            )
        )

    def _challenge(self, frame: bytes, head: smpheader.Header) -> bytes:
        self.nonce = hashlib.sha256(b"nonce%d" % head.sequence).digest()[:16]
        return bytes(jig_group.UnlockChallengeResponse(nonce=self.nonce, sequence=head.sequence))

    def _unlock(self, frame: bytes, head: smpheader.Header) -> bytes:
        req = jig_group.UnlockWriteRequest.loads(frame)
        if self.nonce is None:
            return encode_error(head, jig_group.JigMgmtErr.NO_CHALLENGE, group_rc=True)
        expected = jig_group.unlock_mac(jig_group.device_key(MASTER_KEY, GUID), self.nonce, GUID)
        self.nonce = None
        if req.mac != expected:
            return encode_error(head, jig_group.JigMgmtErr.BAD_MAC, group_rc=True)
        self.locked = False
        return bytes(jig_group.UnlockWriteResponse(sequence=head.sequence))

    def _lock(self, frame: bytes, head: smpheader.Header) -> bytes:
        self.locked = True
        return bytes(jig_group.LockWriteResponse(sequence=head.sequence))

    def _states(self) -> list[smpimg.ImageState]:
        states = [
            smpimg.ImageState(
                slot=0, version="1.0.0", hash=b"\x01" * 32, active=True, confirmed=True
            )
        ]
        if self.secondary_sha is not None:
            states.append(smpimg.ImageState(slot=1, version="4.0.0.7", hash=self.secondary_sha))
        return states

    def _upload(self, frame: bytes, head: smpheader.Header) -> bytes | None:
        index = self._uploads_seen
        self._uploads_seen += 1
        req = smpimg.ImageUploadWriteRequest.loads(frame)
        self.upload_requests.append((req.off, len(req.data)))
        if index in self.drop_upload_requests:
            return None
        reply = self._upload_reply(req, head)
        if index in self.drop_upload_responses:
            return None
        return reply

    def _upload_reply(self, req: smpimg.ImageUploadWriteRequest, head: smpheader.Header) -> bytes:
        seq = head.sequence
        if req.off == 0:
            record = self.upload
            if (
                record is not None
                and 0 < record.offset < record.length
                and record.sha == req.sha
                and record.length == req.len
            ):
                return bytes(smpimg.ImageUploadWriteResponse(off=record.offset, sequence=seq))
            self.upload = Upload(sha=req.sha, length=req.len or 0)
            self.secondary_sha = None
        record = self.upload
        if record is None or req.off != record.offset:
            expected = 0 if record is None else record.offset
            return bytes(smpimg.ImageUploadWriteResponse(off=expected, sequence=seq))
        record.data += req.data
        if self.forget_upload_at is not None and record.offset >= self.forget_upload_at:
            self.forget_upload_at = None
            self.upload = None
            return bytes(smpimg.ImageUploadWriteResponse(off=0, sequence=seq))
        if record.offset < record.length:
            return bytes(smpimg.ImageUploadWriteResponse(off=record.offset, sequence=seq))
        digest = hashlib.sha256(record.data).digest()
        if record.sha is not None and digest != record.sha:
            self.upload = None
            return encode_error(head, smpimg.IMG_MGMT_ERR.INVALID_HASH, group_rc=True)
        self.secondary_sha = digest
        return bytes(
            smpimg.ImageUploadWriteResponse(
                off=record.offset, match=self.report_match, sequence=seq
            )
        )
