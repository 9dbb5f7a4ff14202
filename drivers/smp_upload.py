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

Frame size and window adapt (`UploadSizing`). A hub's receiver may be smaller than its
`mcumgr_params` say: Zephyr's UART transport takes console lines into a few 128-byte line
buffers (`CONFIG_UART_MCUMGR_RX_BUF_COUNT`, default 2) and drops a line that finds none free,
and takes frames of at most `CONFIG_MCUMGR_TRANSPORT_UART_MTU` bytes. So on a console link a
frame uses at most as many lines as the hub has line buffers, the window starts at one, a lost
request halves the window (then sheds a line from the frame) and caps it below what failed, and
a run of answered requests grows the window back up to that cap.
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
from drivers.framing import DEFAULT_MAX_FRAME, SMP_HEADER_SIZE
from drivers.smp_client import SmpClient

__all__ = [
    "GROW_AFTER_CHUNKS",
    "MAX_WINDOW",
    "MIN_FIRST_CHUNK",
    "FrameLimits",
    "ProgressCallback",
    "SmpUpload",
    "UploadResult",
    "UploadSizing",
    "cbor_head_size",
    "max_chunk_data",
    "new_sizing",
]

_LOGGER = logging.getLogger(__name__)

MAX_WINDOW: Final = 64  # never more upload requests in flight than this, whatever buf_count says
WIRE_ALLOWANCE: Final = 2  # a chunk's timeout covers this many full windows of wire time
GROW_AFTER_CHUNKS: Final = 8  # answered requests in a row before the window grows by one
# A capped window is tried one larger again after this many answered requests in a row; each
# probe that overruns the hub doubles the wait, up to MAX_PROBE_AFTER_CHUNKS.
PROBE_AFTER_CHUNKS: Final = 64
MAX_PROBE_AFTER_CHUNKS: Final = 4096
LOSSES_TO_SHED_LINES: Final = 3  # losses in a row at a window of one before frames get shorter
# Zephyr's img_mgmt reads the whole 32-byte MCUboot image header from the first chunk and answers
# INVALID_IMAGE_HEADER (22) to a shorter one.
MIN_FIRST_CHUNK: Final = 32

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
    """What an upload did: `bytes_sent` counts image bytes put on the link, resends included.

    `retries` counts requests resent because they (or their answers) were lost, `timeouts`
    those of them noticed only by their timeout (the others by a later answer). `frame_size`,
    `frame_lines` and `window` are what the sizing settled on at the end (lines only on a
    console link); `drops` counts the losses the sizing took into account.
    """

    size: int
    bytes_sent: int
    resumed_from: int
    chunks: int
    duration_s: float
    retries: int = 0
    resyncs: int = 0
    match: bool | None = None
    frame_size: int = 0
    frame_lines: int | None = None
    window: int = 1
    drops: int = 0
    timeouts: int = 0


@dataclass(frozen=True, slots=True)
class FrameLimits:
    """What a hub's SMP receiver takes, besides `mcumgr_params` (config per slot and model).

    `line_buffers`: console lines the receiver holds at once (Zephyr's
    CONFIG_UART_MCUMGR_RX_BUF_COUNT, default 2); a frame never uses more lines, and only a hub
    that keeps up gets more than one frame in flight. None: no line limit. `mtu`: largest SMP
    frame (Zephyr's CONFIG_MCUMGR_TRANSPORT_UART_MTU, default 256); None: `buf_size` only.
    Neither applies to a link without console lines (raw framing, USB) but `mtu` does.
    """

    line_buffers: int | None = 2
    mtu: int | None = 256


class UploadSizing:
    """The adaptive frame size (in console lines) and window of one link.

    A link keeps one for its life, so the next upload on it starts where the last one settled.
    `drop()` after a lost request: halve the window and cap it below the size that failed (a
    window that overran the hub once would again). At a window of one, a single loss is noise
    (one frame of at most `line_buffers` lines cannot overrun them); a third in a row
    (`LOSSES_TO_SHED_LINES`: an overrun loses every frame, noise rarely three running) halves
    the lines of a frame. `answered()` after an in-order answer: every `grow_after` of them in a
    row give back a shed line, else grow the window by one, up to its cap; a long run
    (`PROBE_AFTER_CHUNKS`, doubled by each overrun) raises the cap by one again, so noise
    cannot shrink it for good.

    Only a link with console lines adapts (`max_lines` not None): there a lost request means
    the hub's line buffers overran. Without lines (raw framing, USB) the hub's `buf_count`
    buffers are the limit the window already respects, and a loss is noise on the line, which
    a smaller window would only slow down.
    """

    def __init__(
        self,
        *,
        max_window: int,
        max_lines: int | None,
        start_window: int | None = None,
        grow_after: int = GROW_AFTER_CHUNKS,
    ) -> None:
        self.max_window = max(1, min(max_window, MAX_WINDOW))
        self.max_lines = None if max_lines is None else max(1, max_lines)
        self.lines = self.max_lines
        self.window = self.max_window if start_window is None else max(1, start_window)
        self.window = min(self.window, self.max_window)
        self.drops = 0
        self._grow_after = max(1, grow_after)
        self._since_drop = 0  # answers since the last loss
        self._losses_at_one = 0
        self._window_limit = self.max_window
        self._lines_limit = self.max_lines
        self._probe_after = PROBE_AFTER_CHUNKS

    def answered(self) -> None:
        lines, max_lines, lines_limit = self.lines, self.max_lines, self._lines_limit
        if lines is None or max_lines is None or lines_limit is None:
            return  # not adaptive
        self._losses_at_one = 0
        self._since_drop += 1
        if self._since_drop % self._probe_after == 0:
            if max_lines < lines_limit:
                self.max_lines = max_lines = max_lines + 1
            elif self.max_window < self._window_limit:
                self.max_window += 1
        if self._since_drop % self._grow_after != 0:
            return
        if lines < max_lines:
            self.lines = lines + 1
        elif self.window < self.max_window:
            self.window += 1

    def drop(self) -> bool:
        """Take a lost request into account; True if what is sent at once got smaller."""
        self.drops += 1
        self._since_drop = 0
        if self.lines is None:
            return False
        if self.window > 1:
            self.max_window = self.window - 1
            self.window = max(1, self.window // 2)
            self._probe_after = min(2 * self._probe_after, MAX_PROBE_AFTER_CHUNKS)
            return True
        self._losses_at_one += 1
        if self._losses_at_one >= LOSSES_TO_SHED_LINES and self.lines > 1:
            self.max_lines = self.lines - 1
            self.lines = max(1, self.lines // 2)
            self._losses_at_one = 0
            self._probe_after = min(2 * self._probe_after, MAX_PROBE_AFTER_CHUNKS)
            return True
        return False

    def describe(self) -> str:
        lines = f"{self.lines}-line frames, " if self.lines is not None else ""
        return f"{lines}window {self.window} (cap {self.max_window}), {self.drops} dropped"


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


def new_sizing(client: SmpClient, buf_count: int, limits: FrameLimits) -> UploadSizing:
    """The starting sizing of a link: what `limits` and the hub's buffers allow.

    On a console link with line buffers, a frame takes at most `line_buffers` lines (and no more
    than a `buf_size` frame needs) and the window starts at what the line buffers hold; without
    lines (raw, USB) the window starts full, at `buf_count`.
    """
    transport = client.transport
    if limits.line_buffers is None or transport.max_frame_in_lines(1) is None:
        return UploadSizing(max_window=buf_count, max_lines=None)
    lines = 1
    while lines < limits.line_buffers and (transport.max_frame_in_lines(lines) or 0) < (
        limits.mtu or DEFAULT_MAX_FRAME
    ):
        lines += 1
    return UploadSizing(
        max_window=buf_count,
        max_lines=lines,
        start_window=max(1, limits.line_buffers // lines),
    )


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
        limits: FrameLimits | None = None,
        sizing: UploadSizing | None = None,
    ) -> None:
        view = memoryview(image)
        if view.ndim != 1 or view.itemsize != 1:
            view = view.cast("B")
        if len(view) == 0:
            raise ValueError("cannot upload an empty image")
        transport = client.transport
        limits = limits or FrameLimits(line_buffers=None, mtu=None)
        # The frame must fit the hub's buffer together with what the framing puts in it.
        buf_size -= transport.buffer_overhead
        if limits.mtu is not None:
            buf_size = min(buf_size, limits.mtu)
        if max_chunk_data(buf_size, 0, len(view)) < 1:
            raise ValueError(f"buf_size {buf_size} is too small for an upload request")
        self._client = client
        self._view = view
        self._total = len(view)
        self._sha = hashlib.sha256(view).digest()
        self._buf_size = buf_size
        self._sizing = sizing or new_sizing(client, buf_count, limits)
        largest = self.frame_budget(1) if self._sizing.lines is not None else buf_size
        self._timeout_s = timeout_s + self._wire_allowance_s(
            client, largest, self._sizing.max_window
        )
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
        self._shrunk = False
        self._timed_out = 0

    @property
    def sha256(self) -> bytes:
        return self._sha

    @property
    def sizing(self) -> UploadSizing:
        return self._sizing

    def frame_budget(self, off: int) -> int:
        """Largest request frame at `off`: the buffer, the MTU and the lines the sizing allows.

        The first request always gets room for the whole MCUboot image header, even if that
        takes more lines than the sizing allows (a hub refuses a shorter first chunk).
        """
        lines = self._sizing.lines
        if lines is None:
            return self._buf_size
        budget = min(self._buf_size, self._lines_budget(lines))
        while (
            off == 0
            and max_chunk_data(budget, 0, self._total) < min(MIN_FIRST_CHUNK, self._total)
            and budget < self._buf_size
        ):
            lines += 1
            budget = min(self._buf_size, self._lines_budget(lines))
        return budget

    def _lines_budget(self, lines: int) -> int:
        cap = self._client.transport.max_frame_in_lines(lines)
        return self._buf_size if cap is None else cap

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
                self._shrunk = False
                failure = await self._next_answer()
                if failure is None:
                    failed_rounds = 0
                    continue
                await self._drain()
                self._send_off = self._latest
                if self._best > best_before or self._complete or self._shrunk:
                    # Progress, or a smaller frame or window to try: not a failed round.
                    failed_rounds = 0
                    continue
                failed_rounds += 1
                if failed_rounds > self._retries:
                    self._give_up(failure, failed_rounds)
            await self._drain_quietly()
        finally:
            self._discard()
        duration = loop.time() - started
        sizing = self._sizing
        _LOGGER.info(
            "%s: uploaded %d bytes in %.2f s (%d chunks, resumed from %d, %d lost, %d timed "
            "out, %d resyncs); settled on %d-byte frames, %s",
            self._name,
            self._total,
            duration,
            self._chunks,
            self._resumed_from,
            self._timeouts,
            self._timed_out,
            self._resyncs,
            self.frame_budget(1),
            sizing.describe(),
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
            frame_size=self.frame_budget(1),
            frame_lines=sizing.lines,
            window=sizing.window,
            drops=sizing.drops,
            timeouts=self._timed_out,
        )

    def _fill(self) -> None:
        """Send chunks until the window is full or the image is all sent.

        Until the hub has answered once, the window is one smaller: if it answers the first
        chunk with a resume offset, fewer than `buf_count` chunks it already had were resent.
        """
        window = self._sizing.window
        if not self._answered:
            window = max(1, window - 1)
        while len(self._inflight) < window and self._send_off < self._total:
            chunk = self._send(self._send_off)
            self._inflight.append(chunk)
            self._chunks += 1
            self._bytes_sent += chunk.end - chunk.off
            self._send_off = chunk.end

    def _send(self, off: int) -> _Chunk:
        end = off + max_chunk_data(self.frame_budget(off), off, self._total)
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
            self._lost(head)
            return UploadStalled(self._name, self._latest, self._total, 1)
        try:
            rsp = await head.future
        except LinkTimeout as exc:
            self._timeouts += 1
            self._timed_out += 1
            self._lost(head)
            return exc
        except UnexpectedResponse as exc:
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
            self._sizing.answered()
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

    def _lost(self, chunk: _Chunk) -> None:
        """The hub lost a request (or its answer): shrink what is sent at once."""
        self._shrunk = self._sizing.drop()
        _LOGGER.debug(
            "%s: the request at %d was lost; now %s", self._name, chunk.off, self._sizing.describe()
        )

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
