"""The simulator's SMP server on the far side of an in-memory transport, with test switches.

`FakeHub` serves `sim.hub.SmpServer` (the one the simulated hubs run) on a `MemoryTransport`:
requests wait in `buf_count` receive buffers (`sim.hub.RequestBuffers`; one arriving while all
are held is dropped) and are answered in order, each after `handle_s`, with no wire pacing,
power or boots. The server checks a completed upload against its `sha` and says `match`
(`image_check`), and flash takes no time. What a test scripts is done around the server, never
instead of it: dropping upload requests or their answers, a hub that answers nothing, a `match`
that lies, a hub that forgets its upload, or any rewrite of a request or an answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Callable

from smp import header as smpheader
from smp import image_management as smpimg

from drivers import jig_group
from drivers.errors import LinkError
from drivers.framing import parse_header
from drivers.memory import MemoryTransport
from jigd.model import DeviceModel, FirmwareVersion, Guid
from sim.hub import IMAGE_MAGIC, HubFlash, RequestBuffers, SmpServer, UploadRecord
from sim.image_check import FlashImage
from sim.timing import Timing

GUID = bytes.fromhex("00db000000000042")
MASTER_KEY = b"m" * 32
MODEL = DeviceModel(0x1086, 0x57310102)
ACTIVE_HASH = b"\x01" * 32  # the MCUboot hash of the image in slot 0
_UPLOAD = (int(smpheader.GroupId.IMAGE_MANAGEMENT), int(smpheader.CommandId.ImageManagement.UPLOAD))

# A test's rewrite of a request frame (before the server), or of an answer (request, answer).
RequestRewrite = Callable[[bytes], bytes]
ReplyRewrite = Callable[[bytes, bytes], bytes]


def mcuboot_like(payload: bytes) -> bytes:
    """`payload` behind a 32-byte header with MCUboot's magic: what a hub takes as a first
    chunk (the rest of the header is zero: no version, no TLVs)."""
    return IMAGE_MAGIC + bytes(28) + payload


def _slot_image(version: int, image_hash: bytes) -> FlashImage:
    """A slot holding an image the hub reports as `version` with MCUboot hash `image_hash`."""
    return FlashImage(
        data=b"",
        sha256=hashlib.sha256(b"").digest(),
        version=FirmwareVersion(version),
        tlv_hash=image_hash,
    )


class FakeHub:
    """A hub's SMP server listening on `end`; the keyword arguments are the test's switches."""

    def __init__(
        self,
        end: MemoryTransport,
        *,
        buf_size: int = 512,
        buf_count: int = 4,
        handle_s: float = 0.0,
        locked: bool = False,
        drop_upload_requests: set[int] | None = None,
        drop_upload_responses: set[int] | None = None,
        report_match: bool = True,
        forget_upload_at: int | None = None,
    ) -> None:
        self.end = end
        self.handle_s = handle_s
        # Scripted faults, by index of upload request (the first is 0).
        self.drop_upload_requests = drop_upload_requests or set()
        self.drop_upload_responses = drop_upload_responses or set()
        self.silent = False  # answer nothing (hung)
        self.report_match = report_match  # False: the last upload answer says `match: false`
        self.forget_upload_at = forget_upload_at  # forget the record when it reaches this offset
        self.rewrite_request: RequestRewrite | None = None
        self.rewrite_reply: ReplyRewrite | None = None
        # Observations.
        self.upload_requests: list[tuple[int, int]] = []  # (off, data length)
        self.frame_sizes: list[int] = []
        self.dropped_busy = 0
        self.resets = 0  # resets answered
        flash = HubFlash(primary=_slot_image(0x01000000, ACTIVE_HASH), unlocked=not locked)
        timing = Timing(buf_size=buf_size, buf_count=buf_count, sector_erase_s=0, page_program_s=0)
        self.server = SmpServer(
            guid=Guid.from_bytes(GUID),
            model=MODEL,
            flash=flash,
            device_key=jig_group.device_key(MASTER_KEY, GUID),
            timing=timing,
            image_check=True,
            name="fake hub",
        )
        self._buffers = RequestBuffers(buf_count)
        self._worker: asyncio.Task[None] | None = None
        self._uploads_seen = 0
        end.set_listener(self)

    # ---- state, as a test sees it ---------------------------------------------------------------

    @property
    def flash(self) -> HubFlash:
        return self.server.flash

    @property
    def locked(self) -> bool:
        return not self.flash.unlocked

    def is_locked(self) -> bool:
        return self.locked

    @property
    def upload(self) -> UploadRecord | None:
        return self.flash.upload

    @upload.setter
    def upload(self, record: UploadRecord | None) -> None:
        self.flash.upload = record

    @property
    def max_queued(self) -> int:
        """The most requests ever waiting in the receive buffers at once."""
        return self._buffers.most_in_use

    def hold_secondary(self, image_hash: bytes, version: int = 0x04000007) -> None:
        """Slot 1 holds a complete image with MCUboot hash `image_hash`."""
        self.flash.secondary = _slot_image(version, image_hash)

    def close(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.cancel()

    # ---- FrameListener ------------------------------------------------------------------------

    def frame_received(self, frame: bytes) -> None:
        self.frame_sizes.append(len(frame))
        if not self._buffers.offer(frame):
            self.dropped_busy += 1
            return
        if self._worker is None:
            loop = asyncio.get_running_loop()
            self._worker = loop.create_task(self._answer_requests(), name="fake hub")

    def connection_lost(self, error: LinkError) -> None:
        self.close()

    # ---- the application ----------------------------------------------------------------------

    async def _answer_requests(self) -> None:
        buffers = self._buffers
        while True:
            frame = await buffers.take()
            try:
                await asyncio.sleep(self.handle_s)
                reply = await self._handle(frame)
            finally:
                buffers.release()
            if reply is not None and not self.silent and not self.end.is_closed:
                self.end.send(reply)

    async def _handle(self, frame: bytes) -> bytes | None:
        upload = self._upload_index(frame)
        if upload in self.drop_upload_requests:
            return None
        if self.rewrite_request is not None:
            frame = self.rewrite_request(frame)
        reply = await self.server.handle_request(frame)
        if reply is None:
            return None
        if self.server.reset_requested:  # answered; this hub does not reset
            self.server.reset_requested = False
            self.resets += 1
        if upload is not None:
            if upload in self.drop_upload_responses:
                return None
            reply = self._scripted_upload_reply(reply)
        if self.rewrite_reply is not None:
            reply = self.rewrite_reply(frame, reply)
        return reply

    def _upload_index(self, frame: bytes) -> int | None:
        """The index of an upload request among those received (noted in `upload_requests`),
        None for any other request."""
        fields = parse_header(frame)
        if fields is None or (fields.group_id, fields.command_id) != _UPLOAD:
            return None
        with contextlib.suppress(ValueError):
            request = smpimg.ImageUploadWriteRequest.loads(frame)
            self.upload_requests.append((request.off, len(request.data)))
        self._uploads_seen += 1
        return self._uploads_seen - 1

    def _scripted_upload_reply(self, reply: bytes) -> bytes:
        """The server's answer to an upload request, after `forget_upload_at` and
        `report_match`."""
        try:
            answer = smpimg.ImageUploadWriteResponse.loads(reply)
        except ValueError:
            return reply  # an error answer
        if answer.off is None:
            return reply
        record = self.flash.upload
        forget = self.forget_upload_at
        if forget is not None and record is not None and record.offset >= forget:
            self.forget_upload_at = None
            self.flash.upload = None
            return bytes(smpimg.ImageUploadWriteResponse(off=0, sequence=answer.header.sequence))
        if answer.match is not None and not self.report_match:
            return bytes(
                smpimg.ImageUploadWriteResponse(
                    off=answer.off, match=False, sequence=answer.header.sequence
                )
            )
        return reply
