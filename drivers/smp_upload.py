"""SMP image upload: pipelined, resumable (docs/hub-protocol.md, "Upload, pipelining and resume").

Chunks are as large as the hub's `buf_size` allows for the whole request frame, and up to
`buf_count` of them are in flight, so the link never idles while the hub programs flash. The hub
processes requests in order and answers each with the next offset it expects:

- answer == the chunk's end: progress, keep the window full;
- answer != the chunk's end (resume at offset 0, a lost chunk, a restarted hub): drain what is
  in flight, then go on from the offset the hub reported last;
- no answer (timeout) or a garbled one: drain, then resend from the hub's offset.

A round without progress counts against `retries`; past that the upload fails with LinkTimeout
(the hub went silent) or UploadStalled (it answers but makes no progress).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from smp import header as smpheader
from smp import image_management as smpimg

from drivers.errors import ImageRejected, LinkTimeout, SmpError, UnexpectedResponse, UploadStalled
from drivers.framing import SMP_HEADER_SIZE
from drivers.smp_client import SmpClient

__all__ = [
    "MAX_WINDOW",
    "ProgressCallback",
    "SmpUpload",
    "UploadResult",
    "cbor_head_size",
    "max_chunk_data",
]

_LOGGER = logging.getLogger(__name__)

MAX_WINDOW: Final = 64  # never more upload requests in flight than this, whatever buf_count says
WIRE_ALLOWANCE: Final = 2  # a chunk's timeout covers this many full windows of wire time

ProgressCallback = Callable[[int, int], None]

# Image-group codes that mean "this image is refused", as opposed to a hub fault.
_IMAGE_REJECT_CODES: Final = frozenset(
    {
        smpimg.IMG_MGMT_ERR.INVALID_IMAGE_HEADER,
        smpimg.IMG_MGMT_ERR.INVALID_IMAGE_HEADER_MAGIC,
        smpimg.IMG_MGMT_ERR.INVALID_HASH,
        smpimg.IMG_MGMT_ERR.INVALID_FLASH_ADDRESS,
        smpimg.IMG_MGMT_ERR.CURRENT_VERSION_IS_NEWER,
        smpimg.IMG_MGMT_ERR.INVALID_IMAGE_VECTOR_TABLE,
        smpimg.IMG_MGMT_ERR.INVALID_IMAGE_TOO_LARGE,
        smpimg.IMG_MGMT_ERR.INVALID_IMAGE_DATA_OVERRUN,
    }
)


@dataclass(frozen=True, slots=True)
class UploadResult:
    """What an upload did: `bytes_sent` counts image bytes put on the link, resends included."""

    size: int
    bytes_sent: int
    resumed_from: int
    chunks: int
    duration_s: float
    retries: int = 0
    resyncs: int = 0
    match: bool | None = None


# --- chunking -------------------------------------------------------------------------------
#
# An upload request is an 8-byte SMP header and a CBOR map. Sizes of its parts (RFC 8949; the
# `smp` package encodes canonically, in shortest form):
#   map head                  1   (fewer than 24 entries)
#   "off"  key 1+3, value     head(off)
#   "data" key 1+4, value     head(n) + n
#   at off 0 only:
#   "len"   key 1+3, value    head(total)
#   "sha"   key 1+3, value    head(32) + 32 = 2 + 32
#   "image" key 1+5, value    1   (0)
# where head(v) is the size of a CBOR head carrying v: 1 below 24, 2 below 2^8, 3 below 2^16,
# 5 below 2^32, else 9. The chunk is the largest n with 8 + map <= buf_size.

_SHA_SIZE: Final = 32


def cbor_head_size(value: int) -> int:
    """Bytes of a CBOR head (major type + argument) carrying `value`."""
    if value < 24:
        return 1
    if value < 0x100:
        return 2
    if value < 0x10000:
        return 3
    if value < 0x1_0000_0000:
        return 5
    return 9


def _fixed_size(off: int, total: int) -> int:
    """CBOR bytes of the request other than the data bytes and their length head."""
    size = 1 + 4 + cbor_head_size(off) + 5
    if off == 0:
        size += 4 + cbor_head_size(total) + 4 + cbor_head_size(_SHA_SIZE) + _SHA_SIZE + 6 + 1
    return size


def max_chunk_data(buf_size: int, off: int, total: int) -> int:
    """Image bytes the upload request at `off` can carry within a `buf_size`-byte SMP frame."""
    budget = buf_size - SMP_HEADER_SIZE - _fixed_size(off, total)
    n = budget - 1
    while n > 0 and n + cbor_head_size(n) > budget:
        n -= 1
    return max(0, min(n, total - off))


# --- the upload -----------------------------------------------------------------------------


@dataclass(slots=True)
class _Chunk:
    off: int
    end: int
    future: asyncio.Future[smpimg.ImageUploadWriteResponse]


class SmpUpload:
    """One upload of one image over an SmpClient; `run()` it once."""

    def __init__(
        self,
        client: SmpClient,
        image: bytes | memoryview,
        *,
        buf_size: int,
        buf_count: int,
        timeout_s: float,
        retries: int,
        progress: ProgressCallback | None = None,
        name: str | None = None,
    ) -> None:
        view = memoryview(image)
        if view.ndim != 1 or view.itemsize != 1:
            view = view.cast("B")
        if len(view) == 0:
            raise ValueError("cannot upload an empty image")
        # The frame must fit the hub's buffer together with what the framing puts in it.
        buf_size -= client.transport.buffer_overhead
        if max_chunk_data(buf_size, 0, len(view)) < 1:
            raise ValueError(f"buf_size {buf_size} is too small for an upload request")
        self._client = client
        self._view = view
        self._total = len(view)
        self._sha = hashlib.sha256(view).digest()
        self._buf_size = buf_size
        self._window = max(1, min(buf_count, MAX_WINDOW))
        self._timeout_s = timeout_s + self._wire_allowance_s(client, buf_size, self._window)
        self._retries = retries
        self._progress = progress
        self._name = name or client.name
        self._inflight: deque[_Chunk] = deque()
        # The chunk taken off `_inflight` and being awaited: if the upload is cancelled then,
        # `_discard` must still settle its future.
        self._awaited: _Chunk | None = None
        self._send_off = 0
        self._latest = 0  # the offset the hub reported last (it processes in order)
        self._best = 0  # the highest offset the hub reported
        self._complete = False
        self._answered = False
        self._match: bool | None = None
        self._resumed_from = 0
        self._chunks = 0
        self._bytes_sent = 0
        self._timeouts = 0
        self._resyncs = 0

    @property
    def sha256(self) -> bytes:
        return self._sha

    @property
    def chunk_timeout_s(self) -> float:
        return self._timeout_s

    @staticmethod
    def _wire_allowance_s(client: SmpClient, buf_size: int, window: int) -> float:
        """Time a chunk may wait behind a full window of chunks on a slow line."""
        baud = client.transport.baudrate
        if not baud:
            return 0.0
        return WIRE_ALLOWANCE * window * client.transport.wire_size(buf_size) * 10 / baud

    async def run(self) -> UploadResult:
        loop = asyncio.get_running_loop()
        started = loop.time()
        failed_rounds = 0
        try:
            while not self._complete:
                self._fill()
                best_before = self._best
                failure = await self._next_answer()
                if failure is None:
                    continue
                await self._drain()
                self._send_off = self._latest
                if self._best > best_before or self._complete:
                    failed_rounds = 0
                    continue
                failed_rounds += 1
                if failed_rounds > self._retries:
                    self._give_up(failure, failed_rounds)
            await self._drain_quietly()
        finally:
            self._discard()
        duration = loop.time() - started
        _LOGGER.info(
            "%s: uploaded %d bytes in %.2f s (%d chunks, resumed from %d, %d timeouts, %d resyncs)",
            self._name,
            self._total,
            duration,
            self._chunks,
            self._resumed_from,
            self._timeouts,
            self._resyncs,
        )
        return UploadResult(
            size=self._total,
            bytes_sent=self._bytes_sent,
            resumed_from=self._resumed_from,
            chunks=self._chunks,
            duration_s=duration,
            retries=self._timeouts,
            resyncs=self._resyncs,
            match=self._match,
        )

    def _fill(self) -> None:
        """Send chunks until the window is full or the image is all sent.

        Until the hub has answered once, the window is one smaller: if it answers the first
        chunk with a resume offset, fewer than `buf_count` chunks it already had were resent.
        """
        window = self._window if self._answered else max(1, self._window - 1)
        while len(self._inflight) < window and self._send_off < self._total:
            chunk = self._send(self._send_off)
            self._inflight.append(chunk)
            self._chunks += 1
            self._bytes_sent += chunk.end - chunk.off
            self._send_off = chunk.end

    def _send(self, off: int) -> _Chunk:
        end = off + max_chunk_data(self._buf_size, off, self._total)
        data = bytes(self._view[off:end])  # copies this chunk only
        request = (
            smpimg.ImageUploadWriteRequest(
                off=0, data=data, image=0, len=self._total, sha=self._sha
            )
            if off == 0
            else smpimg.ImageUploadWriteRequest(off=off, data=data)
        )
        future = self._client.submit(
            request,
            smpimg.ImageUploadWriteResponse,
            self._timeout_s,
            what=f"image upload at offset {off}",
        )
        return _Chunk(off, end, future)

    async def _next_answer(self) -> Exception | None:
        """Await the oldest chunk; None if it went as planned, else why the round failed."""
        if not self._inflight:  # pragma: no cover - defensive: the loop always sends first
            raise UploadStalled(self._name, self._latest, self._total, 0)
        head = self._awaited = self._inflight.popleft()
        if not head.future.done() and await self._later_answer_first(head):
            # Answers come in order: one to a later chunk means the head's answer is lost
            # (the chunk or its answer was dropped). No need to wait for its timeout.
            head.future.cancel()
            self._timeouts += 1
            _LOGGER.debug("%s: answer to the chunk at %d was lost", self._name, head.off)
            return UploadStalled(self._name, self._latest, self._total, 1)
        try:
            rsp = await head.future
        except (LinkTimeout, UnexpectedResponse) as exc:
            self._timeouts += 1
            _LOGGER.debug("%s: upload chunk at %d failed: %s", self._name, head.off, exc)
            return exc
        except SmpError as exc:
            self._raise_rejection(exc, head.off)
            raise
        try:
            self._record(head, rsp)
        except UnexpectedResponse as exc:
            return exc
        if rsp.off == head.end or self._complete:
            return None
        self._resyncs += 1
        _LOGGER.debug(
            "%s: hub answered offset %s to the chunk at %d..%d; resynchronising",
            self._name,
            rsp.off,
            head.off,
            head.end,
        )
        return UploadStalled(self._name, self._latest, self._total, 1)

    async def _later_answer_first(self, head: _Chunk) -> bool:
        """Wait until the head chunk or any later one completes; True if a later one did.

        Bounded: the head's future always completes by its timeout.
        """
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def wake(_done: asyncio.Future[smpimg.ImageUploadWriteResponse]) -> None:
            if not waiter.done():
                waiter.set_result(None)

        watched = [head, *self._inflight]
        for chunk in watched:
            chunk.future.add_done_callback(wake)
        try:
            await waiter
        finally:
            for chunk in watched:
                chunk.future.remove_done_callback(wake)
        return not head.future.done()

    def _record(self, chunk: _Chunk, rsp: smpimg.ImageUploadWriteResponse) -> None:
        """Take in one answer: the hub's next expected offset, and `match` at the end."""
        off = rsp.off
        if off is None or off < 0 or off > self._total:
            raise UnexpectedResponse(
                self._name, "image upload", f"offset {off!r} outside 0..{self._total}"
            )
        if chunk.off == 0 and 0 < off != chunk.end and self._resumed_from == 0:
            self._resumed_from = off
            _LOGGER.info("%s: hub resumes the upload at offset %d", self._name, off)
        self._answered = True
        self._latest = off
        if off > self._best:
            self._best = off
            if self._progress is not None:
                self._progress(off, self._total)
        if rsp.match is False:
            raise ImageRejected(
                self._name, "image sha256 does not match what the hub received", offset=off
            )
        if off == self._total:
            self._complete = True
            self._match = rsp.match

    async def _drain(self) -> None:
        """Wait for every chunk still in flight, taking in the offsets the hub reports."""
        while self._inflight:
            chunk = self._awaited = self._inflight.popleft()
            if not chunk.future.done() and await self._later_answer_first(chunk):
                chunk.future.cancel()
                _LOGGER.debug("%s: answer to the chunk at %d was lost", self._name, chunk.off)
                continue
            try:
                rsp = await chunk.future
            except (LinkTimeout, UnexpectedResponse) as exc:
                _LOGGER.debug("%s: upload chunk at %d lost: %s", self._name, chunk.off, exc)
                continue
            except SmpError as exc:
                self._raise_rejection(exc, chunk.off)
                raise
            if not self._complete:
                try:
                    self._record(chunk, rsp)
                except UnexpectedResponse as exc:
                    _LOGGER.debug("%s: %s", self._name, exc)

    async def _drain_quietly(self) -> None:
        """After completion: let the hub answer what is still in flight; answers don't matter."""
        while self._inflight:
            chunk = self._awaited = self._inflight.popleft()
            try:
                await chunk.future
            except (LinkTimeout, UnexpectedResponse, SmpError) as exc:
                _LOGGER.debug("%s: surplus chunk at %d: %s", self._name, chunk.off, exc)

    def _discard(self) -> None:
        """Forget chunks still in flight (their late replies are counted as unsolicited)."""
        awaited = [self._awaited] if self._awaited is not None else []
        for chunk in (*awaited, *self._inflight):
            if not chunk.future.done():
                chunk.future.cancel()
            elif not chunk.future.cancelled():
                chunk.future.exception()  # retrieved: no "never retrieved" noise
        self._inflight.clear()
        self._awaited = None

    def _give_up(self, failure: Exception, rounds: int) -> None:
        if isinstance(failure, LinkTimeout):
            raise LinkTimeout(
                self._name,
                f"image upload at offset {self._latest}",
                failure.timeout_s,
                attempts=rounds,
            ) from failure
        raise UploadStalled(self._name, self._latest, self._total, rounds) from failure

    def _raise_rejection(self, exc: SmpError, off: int) -> None:
        """Raise ImageRejected if `exc` is an image-group code that refuses the image."""
        if exc.group == smpheader.GroupId.IMAGE_MANAGEMENT and exc.group_rc in _IMAGE_REJECT_CODES:
            reason = f"{exc.error_name or 'image error'} ({exc.group_rc})"
            raise ImageRejected(self._name, reason, offset=off) from exc
