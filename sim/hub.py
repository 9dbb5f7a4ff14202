"""A simulated Communications Hub: SMP server, flash slots and an MCUboot-like bootloader.

The hub follows docs/hub-protocol.md, held to what Zephyr 3.4's MCUmgr SMP server and MCUboot
do where that page leaves room (docs/simulator.md lists where). It is served on a byte stream
(`serve(port)`): a reader task takes bytes from the port only as fast as the wire delivers them
(`baud / 10` per second), decodes frames into at most `buf_count` receive buffers, and keeps
receiving while a worker answers the buffered requests in order (programming flash takes time;
that is what a pipelining host exploits). With console framing the bytes first go through
Zephyr's UART line buffers (`sim.uart_rx`). A writer task paces the responses the same way. A
port that paces bytes itself (a simulated USB device, `sim.usb_device`) serves the hub with a
`Wire` whose rate is None.

State that a real hub keeps in flash (`HubFlash`: slots, settings, and the unfinished upload on
a model with `upload_state="flash"`) survives `power_off()`; everything else (receive buffers,
the unlock nonce, a half-sent response, an upload's state on a `"ram"` model) is lost. Faults
(`sim.faults.Faults`) are injected from a seeded generator, so a run can be repeated.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import hmac
import logging
import math
import random
import secrets
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

import cbor2
from smp import error as smperr
from smp import header as smpheader
from smp import image_management as smpimg
from smp import message as smpmsg
from smp import os_management as smpos
from smp import packet as smppacket
from smp.exceptions import SMPException

from drivers import jig_group
from drivers.framing import (
    REQUEST_OPS,
    ConsoleFraming,
    FrameDecoder,
    Framing,
    RawFraming,
    SmpHeaderFields,
    parse_header,
)
from drivers.smp_codec import encode_error
from jigd.model import DeviceModel, Guid
from sim.faults import Faults
from sim.image_check import (
    FlashImage,
    ImageKey,
    inspect_image,
    signature_problem,
    zephyr_version,
)
from sim.pty_port import READ_CHUNK, Port
from sim.slot_hub import HubState, HubStateWatch
from sim.timing import Timing
from sim.uart_rx import TICK_S, LineBuffers, TickPacer

__all__ = ["HubFlash", "HubState", "SimHub", "SwapKind", "UploadRecord", "Wire", "framing_named"]

_LOGGER = logging.getLogger(__name__)

RX_READ_S: Final = 0.02  # bytes are taken from the port this much wire time at a time
RX_SLICE_BYTES: Final = 64  # and fed to the decoder in slices this big: a frame's arrival time
TX_WRITE_S: Final = 0.005  # responses are written in pieces of this much wire time
PACING_SLACK_S: Final = 0.005  # bytes within this of the previous ones follow them back to back
RX_IDLE_RESET_S: Final = 0.5  # a partial frame older than this is dropped (raw framing resync)
RESET_TX_TIMEOUT_S: Final = 2.0  # longest wait for the last response to leave before resetting
SWAP_STEPS: Final = 10  # the swap proceeds (and is resumed) in this many steps
_OS: Final = int(smpheader.GroupId.OS_MANAGEMENT)
_IMG: Final = int(smpheader.GroupId.IMAGE_MANAGEMENT)
_JIG: Final = jig_group.JIG_GROUP_ID
_READ: Final = int(smpheader.OP.READ)
_WRITE: Final = int(smpheader.OP.WRITE)
_OS_CMD = smpheader.CommandId.OSManagement
_IMG_CMD = smpheader.CommandId.ImageManagement
_JIG_CMD = jig_group.JigCommand
_MGMT_ERR = smperr.MGMT_ERR
_IMG_ERR = smpimg.IMG_MGMT_ERR
_SMP_HEADER: Final = struct.Struct("!BBHHBB")
_SMP_V1: Final = int(smpheader.Version.V1)  # the original protocol: errors are {rc} only
# A console line counts only if it starts with one of these (mcumgr_serial_process_frag).
_LINE_STARTS: Final = (smppacket.START_DELIMITER, smppacket.CONTINUE_DELIMITER)
IMAGE_HEADER_SIZE: Final = 32  # MCUboot's struct image_header
IMAGE_MAGIC: Final = struct.pack("<I", 0x96F3B83D)  # its ih_magic, little-endian
IMAGE_HASH_SIZE: Final = 32  # IMAGE_HASH_LEN: a SHA256 TLV
# Zephyr 3.4 answers a version-1 request's group error with the legacy MGMT_ERR code its group
# translates it to: img_mgmt.c's img_mgmt_translate_error_code (any other image code is
# EUNKNOWN) and the jig group's own (the Zephyr peer's app/jig_group).
_V1_IMAGE_ERRORS: Final[dict[int, int]] = {
    _IMG_ERR.NO_IMAGE: _MGMT_ERR.ENOENT,
    _IMG_ERR.NO_TLVS: _MGMT_ERR.ENOENT,
    _IMG_ERR.NO_FREE_SLOT: _MGMT_ERR.EBADSTATE,
    _IMG_ERR.CURRENT_VERSION_IS_NEWER: _MGMT_ERR.EBADSTATE,
    _IMG_ERR.IMAGE_ALREADY_PENDING: _MGMT_ERR.EBADSTATE,
    _IMG_ERR.NO_FREE_MEMORY: _MGMT_ERR.ENOMEM,
    _IMG_ERR.INVALID_SLOT: _MGMT_ERR.EINVAL,
    _IMG_ERR.INVALID_PAGE_OFFSET: _MGMT_ERR.EINVAL,
    _IMG_ERR.INVALID_OFFSET: _MGMT_ERR.EINVAL,
    _IMG_ERR.INVALID_LENGTH: _MGMT_ERR.EINVAL,
    _IMG_ERR.INVALID_IMAGE_HEADER: _MGMT_ERR.EINVAL,
    _IMG_ERR.INVALID_HASH: _MGMT_ERR.EINVAL,
    _IMG_ERR.INVALID_FLASH_ADDRESS: _MGMT_ERR.EINVAL,
}
_V1_JIG_ERRORS: Final[dict[int, int]] = {
    jig_group.JigMgmtErr.BAD_MAC: _MGMT_ERR.EACCESSDENIED,
    jig_group.JigMgmtErr.NO_CHALLENGE: _MGMT_ERR.EBADSTATE,
}
# Commands a locked hub refuses with EACCESSDENIED.
_GUARDED: Final = frozenset(
    {
        (_OS, int(_OS_CMD.RESET), _WRITE),
        (_IMG, int(_IMG_CMD.STATE), _WRITE),
        (_IMG, int(_IMG_CMD.UPLOAD), _WRITE),
    }
)

_M = TypeVar("_M", bound=smpmsg.Request)


class SwapKind(enum.StrEnum):
    TEST = "test"  # swap in the secondary image; revert at the next boot unless confirmed
    PERMANENT = "permanent"  # swap in the secondary image for good
    REVERT = "revert"  # swap back the image that was running before a test


@dataclass
class UploadRecord:
    """An upload into the secondary slot: its announced sha256 and length, and progress.

    The bytes programmed are in flash; the rest is the upload's state, which Zephyr 3.4 keeps in
    RAM (`g_img_mgmt_state`): a hub whose model has `upload_state="ram"` forgets the record at
    every reset and power loss, so the next upload starts over from offset 0.
    """

    sha: bytes | None
    length: int
    offset: int = 0
    data: bytearray = field(default_factory=bytearray)
    erased_sectors: set[int] = field(default_factory=set)

    @property
    def complete(self) -> bool:
        return self.offset >= self.length


@dataclass
class HubFlash:
    """Everything a hub keeps across power loss: slots, settings and (on a model that keeps it
    in flash) the unfinished upload."""

    primary: FlashImage
    primary_confirmed: bool = True
    secondary: FlashImage | None = None
    upload: UploadRecord | None = None  # lost at reset and power loss when upload_state="ram"
    pending: SwapKind | None = None  # TEST or PERMANENT, set by image state write
    revert_on_boot: bool = False  # the active image runs on test: revert it at the next boot
    swap: SwapKind | None = None  # a swap in progress (resumed at power-on)
    swap_steps_done: int = 0
    unlocked: bool = False
    bricked: bool = False


class _PowerLostError(Exception):
    """The hub's own supply failed (an injected fault): it goes off until powered on again."""


class _BadRequestError(Exception):
    """A request that does not parse as its command's message: answered with EINVAL."""


@dataclass(slots=True)
class _TxItem:
    epoch: int
    wire: bytes
    sent: asyncio.Future[None] | None


def framing_named(name: str, timing: Timing) -> Framing:
    """The hub side of a framing: takes requests only, frames that fit its `buf_size` buffer.

    As in Zephyr, a console packet (length, frame, CRC16) is decoded into one buffer, so a
    console frame may be 4 bytes shorter than a raw one.
    """
    if name == "raw":
        return RawFraming(max_frame=timing.buf_size, accept_ops=REQUEST_OPS)
    if name == "console":
        return ConsoleFraming(max_frame=timing.buf_size - ConsoleFraming().buffer_overhead)
    raise ValueError(f"unknown SMP framing {name!r}; use 'console' or 'raw'")


@dataclass(frozen=True, slots=True)
class Wire:
    """How the port a hub is served on carries its frames.

    `framing` turns frames into the port's bytes and back; `bytes_per_s` is the rate the hub
    paces its reads and writes at, or None when the port paces the bytes itself.
    """

    framing: Framing
    bytes_per_s: float | None


_Handler = Callable[[bytes, SmpHeaderFields], Awaitable[bytes]]


class SimHub(HubStateWatch):
    """One simulated hub. Serve it on a port with `serve()`; power it with `power_on()`."""

    def __init__(
        self,
        *,
        guid: Guid,
        model: DeviceModel,
        image: bytes | FlashImage,
        master_key: bytes,
        image_key: ImageKey,
        timing: Timing | None = None,
        framing: str = "raw",
        faults: Faults | None = None,
        locked: bool = True,
    ) -> None:
        super().__init__()
        self.guid = guid
        self.model = model
        self.timing = timing or Timing()
        self.framing: Framing = framing_named(framing, self.timing)
        self.faults = faults or Faults()
        self._image_key = image_key
        primary = image if isinstance(image, FlashImage) else inspect_image(image)
        self.flash = HubFlash(primary=primary, unlocked=not locked)
        # The hub holds only its device key, never its manufacturer's master key.
        unlock_master = master_key
        if self.faults.wrong_unlock_key:
            unlock_master = hashlib.sha256(b"jigsim wrong unlock key" + master_key).digest()
        self._device_key = jig_group.device_key(unlock_master, guid.to_bytes())
        # Fault decisions come from this generator, seeded per hub: runs repeat exactly.
        self._rng = random.Random(self.faults.seed)  # noqa: S311 - fault injection, not crypto
        self._fired: set[str] = set()  # one-shot faults that already happened
        self.name = f"hub {guid}"
        self.on_power_lost: Callable[[], None] | None = None
        # Called after every change of `powered` (power on, power off, injected brown-out).
        self.power_listeners: list[Callable[[], None]] = []
        self._wire = Wire(self.framing, self.timing.bytes_per_s)

        # RAM: lost at power off and reset.
        self._epoch = 0
        self._requests: asyncio.Queue[bytes] = asyncio.Queue()
        self._in_use = 0
        self._nonce: bytes | None = None
        self._reset_requested = False
        # Console framing's UART line buffers (their contents are RAM, their counters are not:
        # `line_rx.dropped_busy`, no free line buffer; `line_rx.dropped_long`, over 128 bytes).
        self.line_rx = LineBuffers(count=self.timing.rx_buf_count)

        self._powered = False
        self._tg: asyncio.TaskGroup | None = None
        self._session_task: asyncio.Task[None] | None = None
        self._txq: asyncio.Queue[_TxItem] = asyncio.Queue()

        # Counters, for tests and benchmarks.
        self.bytes_received = 0  # delivered to the decoder (after pacing)
        self.bytes_discarded = 0  # arrived while the hub was not listening
        self.bytes_sent = 0
        self.frames_received = 0
        self.frames_dropped_busy = 0  # arrived while every receive buffer was in use
        self.decoder_dropped_bytes = 0
        self.requests_handled = 0
        self.chunks_written = 0
        self.responses_dropped = 0
        self.responses_corrupted = 0
        self.boots = 0
        self.resets = 0
        self.swaps = 0
        self.images_rejected = 0
        self.power_losses = 0  # injected brown-outs

        self._handlers: dict[tuple[int, int, int], _Handler] = {
            (_OS, int(_OS_CMD.ECHO), _WRITE): self._echo,
            (_OS, int(_OS_CMD.RESET), _WRITE): self._reset,
            (_IMG, int(_IMG_CMD.STATE), _READ): self._state_read,
            (_IMG, int(_IMG_CMD.STATE), _WRITE): self._state_write,
            (_IMG, int(_IMG_CMD.UPLOAD), _WRITE): self._upload,
            (_JIG, int(_JIG_CMD.IDENTITY), _READ): self._identity,
            (_JIG, int(_JIG_CMD.UNLOCK), _READ): self._unlock_challenge,
            (_JIG, int(_JIG_CMD.UNLOCK), _WRITE): self._unlock,
            (_JIG, int(_JIG_CMD.LOCK), _WRITE): self._lock,
        }
        if self.timing.mcumgr_params:
            # Without it the command does not exist: ENOTSUP, as Zephyr 3.4 answers when built
            # without CONFIG_MCUMGR_GRP_OS_MCUMGR_PARAMS (its default).
            self._handlers[(_OS, int(_OS_CMD.MCUMGR_PARAMETERS), _READ)] = self._mcumgr_params
        self._known_commands = {(g, c) for g, c, _op in self._handlers}

    # ---- power and serving ------------------------------------------------------------------

    @property
    def powered(self) -> bool:
        return self._powered

    @property
    def lines_dropped(self) -> int:
        """Console lines the UART receiver dropped (no free line buffer, or too long)."""
        return self.line_rx.dropped

    async def serve(self, port: Port, wire: Wire | None = None) -> None:
        """Be connected to `port` until cancelled. Flash state stays with the hub.

        `wire` (default: the hub's own framing, paced at its timing's baud rate) says how the
        port carries frames.
        """
        if self._tg is not None:
            raise RuntimeError(f"{self.name} is already served on a port")
        self._wire = wire or Wire(self.framing, self.timing.bytes_per_s)
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                framing, rate = self._wire.framing, self._wire.bytes_per_s
                if framing.name == "console":
                    receiver = self._rx_lines_loop(port, framing, self._rx_bytes_per_tick(rate))
                elif rate is not None:
                    receiver = self._rx_loop(port, framing, rate)
                else:
                    receiver = self._rx_unpaced_loop(port, framing)
                tg.create_task(receiver, name=f"{self.name} rx")
                tg.create_task(self._tx_loop(port), name=f"{self.name} tx")
                if self._powered:
                    self._start_session()
        finally:
            self._tg = None
            self._stop_session()

    def power_on(self) -> None:
        """Apply power: the bootloader runs (resuming a swap), then the application starts."""
        if self._powered:
            return
        self._powered = True
        _LOGGER.debug("%s: power on", self.name)
        if self._tg is not None:
            self._start_session()
        self._power_changed()

    def power_off(self) -> None:
        """Remove power: silent at once, work in progress abandoned, RAM lost, flash kept."""
        if not self._powered:
            return
        self._powered = False
        _LOGGER.debug("%s: power off", self.name)
        self._stop_session()
        self._power_changed()

    def _power_changed(self) -> None:
        for listener in list(self.power_listeners):
            listener()

    def _start_session(self) -> None:
        assert self._tg is not None  # internal invariant
        self._new_epoch()
        self._set_state(HubState.BOOTING)
        self._session_task = self._tg.create_task(self._session(), name=f"{self.name} session")

    def _stop_session(self) -> None:
        task, self._session_task = self._session_task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        self._new_epoch()
        self._set_state(HubState.OFF)

    def _new_epoch(self) -> None:
        """Forget everything held in RAM: buffers, nonce, responses not yet sent, and the
        upload's state on a model that keeps it in RAM."""
        self._epoch += 1
        self._requests = asyncio.Queue()
        self._in_use = 0
        self._nonce = None
        self._reset_requested = False
        self.line_rx.clear()
        if self.timing.upload_state == "ram" and self.flash.upload is not None:
            _LOGGER.debug("%s: upload state lost with RAM", self.name)
            self.flash.upload = None

    def _brownout(self, where: str) -> None:
        self.power_losses += 1
        _LOGGER.info("%s: injected power loss during %s", self.name, where)
        self._powered = False
        self._stop_session()
        self._power_changed()
        if self.on_power_lost is not None:
            self.on_power_lost()

    async def _session(self) -> None:
        """One powered period: bootloader, application, and again after each reset."""
        cold = True
        try:
            while True:
                self._set_state(HubState.BOOTING)
                if not cold:
                    await asyncio.sleep(self.timing.reset_s)
                if not await self._bootloader():
                    self._set_state(HubState.BRICKED)
                    _LOGGER.info("%s: does not boot (bricked)", self.name)
                    return
                await asyncio.sleep(self.timing.boot_s)
                self._new_epoch()
                self._set_state(HubState.RUNNING)
                self.boots += 1
                _LOGGER.debug("%s: running %s", self.name, self.flash.primary.version)
                if not await self._run_application():
                    # Whatever was already queued still leaves; nothing more is answered.
                    self._set_state(HubState.HUNG)
                    _LOGGER.info("%s: hung (injected); needs a power cycle", self.name)
                    return
                self._new_epoch()
                self.resets += 1
                cold = False
        except _PowerLostError as exc:
            self._brownout(str(exc))

    # ---- bootloader ---------------------------------------------------------------------------

    async def _bootloader(self) -> bool:
        """MCUboot-like: check and swap a pending image, or revert an unconfirmed one."""
        flash = self.flash
        if flash.bricked:
            return False
        if flash.swap is None:
            if flash.revert_on_boot:
                # The image on test was not confirmed: it goes back, whatever else was asked.
                _LOGGER.info("%s: image was not confirmed: reverting", self.name)
                flash.swap, flash.swap_steps_done, flash.pending = SwapKind.REVERT, 0, None
            elif flash.pending is not None and flash.secondary is not None:
                problem = await self._pending_image_problem(flash.secondary)
                if problem is not None:
                    _LOGGER.info("%s: bootloader rejects the new image: %s", self.name, problem)
                    self.images_rejected += 1
                    flash.secondary = None
                    flash.pending = None
                else:
                    flash.swap, flash.swap_steps_done, flash.pending = flash.pending, 0, None
        if flash.swap is not None:
            await self._swap()
        return True

    async def _pending_image_problem(self, image: FlashImage) -> str | None:
        if self.faults.reject_image:
            return "rejected (injected fault)"
        problem = await asyncio.to_thread(signature_problem, image.data, self._image_key)
        if problem is not None:
            return problem
        active = self.flash.primary.version
        if image.version is None:
            return "image version does not fit a Firmware Version"
        if active is not None and image.version < active:
            return f"downgrade from {active} to {image.version}"
        return None

    async def _swap(self) -> None:
        flash = self.flash
        step_s = self.timing.swap_s / SWAP_STEPS
        while flash.swap_steps_done < SWAP_STEPS:
            if (
                self.faults.power_loss_during_swap
                and "swap" not in self._fired
                and flash.swap_steps_done >= SWAP_STEPS // 2
            ):
                self._fired.add("swap")
                raise _PowerLostError("swap")
            await asyncio.sleep(step_s)
            flash.swap_steps_done += 1
        kind = flash.swap
        flash.swap, flash.swap_steps_done = None, 0
        if flash.secondary is None:  # nothing to swap in: keep the active image
            return
        flash.primary, flash.secondary = flash.secondary, flash.primary
        flash.primary_confirmed = kind is not SwapKind.TEST
        flash.revert_on_boot = kind is SwapKind.TEST
        flash.upload = None
        self.swaps += 1
        _LOGGER.info("%s: swap (%s) done: %s active", self.name, kind, flash.primary.version)

    # ---- byte pacing --------------------------------------------------------------------------

    async def _rx_loop(self, port: Port, framing: Framing, rate: float) -> None:
        """Take bytes from the port as fast as the wire delivers them, on a virtual clock.

        Bytes are read at most `RX_READ_S` of wire time at a time; each read is placed on the
        clock right after the previous one (or now, if the line was idle) and the loop sleeps
        until the wire would have delivered it. A frame is handed on when its last byte would
        have arrived. Bytes that arrive while the hub is not running are discarded.
        """
        loop = asyncio.get_running_loop()
        read_bytes = max(RX_SLICE_BYTES, int(rate * RX_READ_S))
        next_free = 0.0
        decoder: FrameDecoder | None = None
        decoder_epoch = -1
        while True:
            data = await self._read(port, read_bytes, decoder)
            if data is None or not (taken := self._decoding(data, framing, decoder, decoder_epoch)):
                continue
            decoder, decoder_epoch = taken
            now = loop.time()
            start = next_free if now - next_free <= PACING_SLACK_S else now
            next_free = start + len(data) / rate
            for offset in range(0, len(data), RX_SLICE_BYTES):
                piece = data[offset : offset + RX_SLICE_BYTES]
                self.bytes_received += len(piece)
                frames = decoder.feed(piece)
                if not frames:
                    continue
                arrived = start + (offset + len(piece)) / rate
                if arrived > loop.time():
                    await asyncio.sleep(arrived - loop.time())
                if self._state is not HubState.RUNNING or decoder_epoch != self._epoch:
                    self.bytes_discarded += len(data) - offset - len(piece)
                    break
                for frame in frames:
                    self._accept(frame)
            if next_free > loop.time():
                await asyncio.sleep(next_free - loop.time())

    async def _rx_unpaced_loop(self, port: Port, framing: Framing) -> None:
        """As `_rx_loop`, for a port that paces the bytes itself: they are here when read."""
        decoder: FrameDecoder | None = None
        decoder_epoch = -1
        while True:
            data = await self._read(port, READ_CHUNK, decoder)
            if data is None or not (taken := self._decoding(data, framing, decoder, decoder_epoch)):
                continue
            decoder, decoder_epoch = taken
            self.bytes_received += len(data)
            for frame in decoder.feed(data):
                self._accept(frame)

    def _rx_bytes_per_tick(self, rate: float | None) -> float:
        """The console UART's read budget per tick: the model's, else the wire's (0: unpaced)."""
        if rate is None:
            return 0.0  # the port paces the bytes itself
        if self.timing.rx_bytes_per_tick is not None:
            return self.timing.rx_bytes_per_tick
        return rate * TICK_S

    async def _rx_lines_loop(self, port: Port, framing: Framing, per_tick: float) -> None:
        """Console framing: bytes read per 1 ms tick into Zephyr's line buffers (`sim.uart_rx`).

        Each read from the port is cut into the ticks that read it (`per_tick` bytes each, or
        all at once when 0). Lines dropped for want of a buffer are decided on that virtual
        clock; complete lines that start with a packet delimiter go to the decoder (any other
        line, such as a real line after stray bytes, is ignored), and a frame is handed on once
        the tick that completed it is over. A partial line keeps its buffer however long the
        line stays idle, as in Zephyr.
        """
        loop = asyncio.get_running_loop()
        pacer = TickPacer(per_tick)
        read_bytes = (
            READ_CHUNK if per_tick <= 0 else max(RX_SLICE_BYTES, int(per_tick * RX_READ_S / TICK_S))
        )
        lines = self.line_rx
        decoder: FrameDecoder | None = None
        decoder_epoch = -1
        while True:
            data = await self._read(port, read_bytes, None)
            if data is None or not (taken := self._decoding(data, framing, decoder, decoder_epoch)):
                continue
            decoder, decoder_epoch = taken
            arrival = math.floor(loop.time() / TICK_S) + 1  # read at the next tick
            offset = 0
            for tick, piece in pacer.split(data, arrival):
                offset += len(piece)
                self.bytes_received += len(piece)
                dropped = lines.dropped
                frames = [
                    frame
                    for line in lines.feed(piece, tick)
                    if line[:2] in _LINE_STARTS  # else ignored whole, as Zephyr does
                    for frame in decoder.feed(line)
                ]
                if lines.dropped != dropped:
                    _LOGGER.debug("%s: console line dropped (%d so far)", self.name, lines.dropped)
                    self._changed()
                if not frames:
                    continue
                processed = tick * TICK_S  # the lines read in a tick are processed right after it
                if processed > loop.time():
                    await asyncio.sleep(processed - loop.time())
                if self._state is not HubState.RUNNING or decoder_epoch != self._epoch:
                    self.bytes_discarded += len(data) - offset
                    break
                for frame in frames:
                    self._accept(frame)
            read_until = pacer.end_tick * TICK_S
            if read_until > loop.time():
                await asyncio.sleep(read_until - loop.time())

    async def _read(self, port: Port, size: int, decoder: FrameDecoder | None) -> bytes | None:
        """Up to `size` bytes from the port; None after RX_IDLE_RESET_S of silence, when a
        partial frame in `decoder` is dropped (a real UART driver's idle line reset)."""
        try:
            async with asyncio.timeout(RX_IDLE_RESET_S):
                return await port.read(size)
        except TimeoutError:
            if decoder is not None and decoder.reset():
                _LOGGER.debug("%s: dropped a partial frame after idle", self.name)
            return None

    def _decoding(
        self, data: bytes, framing: Framing, decoder: FrameDecoder | None, epoch: int
    ) -> tuple[FrameDecoder, int] | None:
        """The decoder for bytes just received, and its epoch: a new one after the hub was
        reset or power cycled. None when the hub is not running: the bytes are discarded."""
        if self._state is not HubState.RUNNING:
            self.bytes_discarded += len(data)
            return None
        if decoder is None or epoch != self._epoch:
            if decoder is not None:
                self.decoder_dropped_bytes += decoder.dropped_bytes
            return framing.decoder(), self._epoch
        return decoder, epoch

    def _accept(self, frame: bytes) -> None:
        self.frames_received += 1
        self._changed()
        if self._in_use >= self.timing.buf_count:
            self.frames_dropped_busy += 1
            _LOGGER.debug("%s: all %d buffers busy: frame dropped", self.name, self._in_use)
            return
        self._in_use += 1
        self._requests.put_nowait(frame)

    async def _tx_loop(self, port: Port) -> None:
        """Write responses as fast as the wire takes them: each piece of at most `TX_WRITE_S`
        of wire time is written when its last byte would have left."""
        loop = asyncio.get_running_loop()
        rate = self._wire.bytes_per_s
        piece_bytes = max(1, int(rate * TX_WRITE_S)) if rate else READ_CHUNK
        next_free = 0.0
        while True:
            item = await self._txq.get()
            try:
                for offset in range(0, len(item.wire), piece_bytes):
                    piece = item.wire[offset : offset + piece_bytes]
                    if rate is not None:
                        now = loop.time()
                        start = next_free if now - next_free <= PACING_SLACK_S else now
                        next_free = start + len(piece) / rate
                        if next_free > now:
                            await asyncio.sleep(next_free - now)
                    if item.epoch != self._epoch:
                        break  # power lost or reset: the rest of the response never leaves
                    await port.write(piece)
                    self.bytes_sent += len(piece)
            finally:
                port.frame_end()  # a USB device ends its transfer here, even a cut one
                if item.sent is not None and not item.sent.done():
                    item.sent.set_result(None)

    def _transmit(self, frame: bytes, sent: asyncio.Future[None] | None = None) -> None:
        faults = self.faults
        if faults.drop_response_rate and self._rng.random() < faults.drop_response_rate:
            self.responses_dropped += 1
            _LOGGER.debug("%s: response dropped (injected)", self.name)
            if sent is not None:
                sent.set_result(None)
            return
        wire = self._wire.framing.encode(frame)
        if faults.corrupt_rate and self._rng.random() < faults.corrupt_rate:
            at = self._rng.randrange(len(wire))
            flipped = wire[at] ^ self._rng.randrange(1, 256)
            wire = wire[:at] + bytes([flipped]) + wire[at + 1 :]
            self.responses_corrupted += 1
            _LOGGER.debug("%s: response byte %d corrupted (injected)", self.name, at)
        self._txq.put_nowait(_TxItem(self._epoch, wire, sent))

    # ---- application ----------------------------------------------------------------------------

    async def _run_application(self) -> bool:
        """Answer requests in order. Return True when reset, False when hung (injected).

        An answered reset takes effect `reset_delay_s` later, and each reset restarts that
        delay, as Zephyr's os_mgmt (re)starts its CONFIG_MCUMGR_GRP_OS_RESET_MS timer; until
        then the hub answers as before, as the old firmware. Work in progress when the delay
        ends is abandoned (a chunk being programmed is not written).
        """
        loop = asyncio.get_running_loop()
        requests, epoch = self._requests, self._epoch
        last_sent: asyncio.Future[None] | None = None  # the latest response, once a reset is due
        last_size = 0
        try:
            async with asyncio.timeout(None) as reset_timer:
                while True:
                    frame = await requests.get()
                    try:
                        reply = await self.handle_request(frame)
                    finally:
                        if epoch == self._epoch:
                            self._in_use -= 1
                    self.requests_handled += 1
                    if reply is None:
                        continue
                    if self._reset_requested or last_sent is not None:
                        last_sent, last_size = loop.create_future(), len(reply)
                    self._transmit(reply, last_sent)
                    if self._reset_requested:
                        self._reset_requested = False
                        reset_timer.reschedule(loop.time() + self.timing.reset_delay_s)
                        _LOGGER.info(
                            "%s: resetting in %.3f s", self.name, self.timing.reset_delay_s
                        )
                    if self._hangs_now():
                        if last_sent is None:
                            return False
                        await loop.create_future()  # hung, but the reset due still comes
        except TimeoutError:
            if not reset_timer.expired():
                raise
        if last_sent is not None:
            await self._sent_before_reset(last_sent, last_size)
        if self.faults.bricked_after_reset:
            self.flash.bricked = True
        _LOGGER.info("%s: reset", self.name)
        return True

    async def _sent_before_reset(self, sent: asyncio.Future[None], size: int) -> None:
        """Let the last response (of `size` bytes) leave: Zephyr sends a response before it
        takes the next request or reboots."""
        if sent.done():
            return
        wire_s = size * 3 / self.timing.bytes_per_s  # console framing at most 3x
        try:
            async with asyncio.timeout(wire_s + RESET_TX_TIMEOUT_S):
                await sent
        except TimeoutError:
            _LOGGER.debug("%s: last response not taken by the host", self.name)

    def _hangs_now(self) -> bool:
        """Whether the injected hang fires after the request just answered (once)."""
        hang_after = self.faults.hang_after_requests
        if hang_after is None or "hang" in self._fired or self.requests_handled < hang_after:
            return False
        self._fired.add("hang")
        return True

    async def handle_request(self, frame: bytes) -> bytes | None:
        """Answer one request frame as the application does (None: no answer is possible)."""
        fields = parse_header(frame)
        if fields is None or fields.op not in REQUEST_OPS:
            # A console frame passes its CRC whatever its header says; without a request
            # header there is nothing to answer.
            _LOGGER.debug("%s: frame without a request header dropped", self.name)
            return None
        key = (fields.group_id, fields.command_id, fields.op)
        handler = self._handlers.get(key)
        if handler is None:
            known = (fields.group_id, fields.command_id) in self._known_commands
            reason = "operation not supported" if known else "unknown command"
            return self._error(fields, _MGMT_ERR.ENOTSUP, reason=reason)
        if key in _GUARDED and not self.flash.unlocked:
            return self._error(fields, _MGMT_ERR.EACCESSDENIED, reason="locked")
        try:
            return await handler(frame, fields)
        except _BadRequestError as exc:
            _LOGGER.debug("%s: malformed request: %s", self.name, exc)
            return self._error(fields, _MGMT_ERR.EINVAL, reason="malformed request")

    def _error(
        self, fields: SmpHeaderFields, rc: int, *, group_rc: bool = False, reason: str = ""
    ) -> bytes:
        try:
            head = smpheader.Header(
                op=smpheader.OP(fields.op),
                version=smpheader.Version(fields.version),
                flags=smpheader.Flag(0),
                length=fields.length,
                group_id=fields.group_id,
                sequence=fields.sequence,
                command_id=fields.command_id,
            )
        except ValueError:
            # The smp package refuses command ids its own groups do not define, so an error
            # for such a command is built here, as encode_error would build it.
            body = cbor2.dumps({"rc": int(rc)}, canonical=True)
            packed = _SMP_HEADER.pack(
                (fields.version << 3) | (fields.op + 1),
                0,
                len(body),
                fields.group_id,
                fields.sequence,
                fields.command_id,
            )
            return packed + body
        return encode_error(head, int(rc), group_rc=group_rc, reason=reason)

    def _group_error(self, fields: SmpHeaderFields, rc: int) -> bytes:
        """A group error: `{err: {group, rc}}` to a version-2 request; to a version-1 request
        the MGMT_ERR code its group translates it to, as Zephyr 3.4 answers."""
        if fields.version != _SMP_V1:
            return self._error(fields, rc, group_rc=True)
        table = _V1_IMAGE_ERRORS if fields.group_id == _IMG else _V1_JIG_ERRORS
        return self._error(fields, table.get(rc, _MGMT_ERR.EUNKNOWN))

    @staticmethod
    def _parse(model: type[_M], frame: bytes) -> _M:
        try:
            return model.loads(frame)
        except (ValueError, TypeError, cbor2.CBORDecodeError, SMPException) as exc:
            raise _BadRequestError(f"{model.__name__}: {exc}") from exc

    @staticmethod
    def _reply(
        request: smpmsg.Request, response_type: type[smpmsg.Response], **fields: Any
    ) -> bytes:
        response = response_type(
            sequence=request.header.sequence,
            version=request.header.version,
            **fields,
        )
        return bytes(response)

    # ---- os group ---------------------------------------------------------------------------

    async def _echo(self, frame: bytes, fields: SmpHeaderFields) -> bytes:
        request = self._parse(smpos.EchoWriteRequest, frame)
        return self._reply(request, smpos.EchoWriteResponse, r=request.d)

    async def _reset(self, frame: bytes, fields: SmpHeaderFields) -> bytes:
        request = self._parse(smpos.ResetWriteRequest, frame)
        self._reset_requested = True
        return self._reply(request, smpos.ResetWriteResponse)

    async def _mcumgr_params(self, frame: bytes, fields: SmpHeaderFields) -> bytes:
        request = self._parse(smpos.MCUMgrParametersReadRequest, frame)
        return self._reply(
            request,
            smpos.MCUMgrParametersReadResponse,
            buf_size=self.timing.buf_size,
            buf_count=self.timing.buf_count,
        )

    # ---- image group --------------------------------------------------------------------------

    @staticmethod
    def _image_state(
        image: FlashImage | None, slot: int, **flags: bool
    ) -> smpimg.ImageState | None:
        """A slot's entry: its version and MCUboot hash (the SHA256 TLV), as img_mgmt reads
        them from the image header and TLVs; None (not listed) without a hash TLV."""
        if image is None or image.tlv_hash is None:
            return None
        return smpimg.ImageState(
            slot=slot,
            version=zephyr_version(image.version),
            hash=image.tlv_hash,
            bootable=True,
            **flags,
        )

    def _image_states(self) -> list[smpimg.ImageState]:
        flash = self.flash
        states = [
            self._image_state(
                flash.primary,
                0,
                pending=False,
                confirmed=flash.primary_confirmed,
                active=True,
                permanent=False,
            ),
            self._image_state(
                flash.secondary,
                1,
                pending=flash.pending is not None,
                confirmed=flash.revert_on_boot,  # the fallback of an image on test
                active=False,
                permanent=flash.pending is SwapKind.PERMANENT,
            ),
        ]
        return [state for state in states if state is not None]

    async def _state_read(self, frame: bytes, fields: SmpHeaderFields) -> bytes:
        request = self._parse(smpimg.ImageStatesReadRequest, frame)
        return self._reply(
            request, smpimg.ImageStatesReadResponse, images=self._image_states(), splitStatus=0
        )

    def _slot_of(self, digest: bytes) -> int | None:
        """The slot whose image's SHA256 TLV is `digest` (slot 0 first), as
        img_mgmt_find_by_hash; None when no slot holds it."""
        for slot, image in enumerate((self.flash.primary, self.flash.secondary)):
            if image is not None and image.tlv_hash == digest:
                return slot
        return None

    def _next_boot(self) -> tuple[int, str]:
        """img_mgmt_get_next_boot_slot: the slot the next boot runs, and how ("normal",
        "test" or "revert")."""
        flash = self.flash
        if flash.revert_on_boot:
            return 1, "revert"
        if flash.pending is SwapKind.TEST:
            return 1, "test"
        if flash.pending is SwapKind.PERMANENT:
            return 1, "normal"
        return 0, "normal"

    def _set_next_boot_refusal(self, slot: int, confirm: bool) -> int | None:
        """img_mgmt_set_next_boot_slot's checks (slot 0 is the active one): the image error
        code, 0 when there is nothing to do, None when the write goes ahead."""
        if not confirm and slot == 0:
            return int(_IMG_ERR.IMAGE_SETTING_TEST_TO_ACTIVE_DENIED)
        next_slot, kind = self._next_boot()
        if slot == next_slot and confirm == (kind != "test"):
            return 0  # already so: test the slot on test, confirm the slot that boots next
        already_pending = (
            kind == "test"
            or (kind == "normal" and next_slot != 0)  # a permanent swap is already due
            or (kind == "revert" and not confirm)
        )
        return int(_IMG_ERR.IMAGE_ALREADY_PENDING) if already_pending else None

    async def _state_write(self, frame: bytes, fields: SmpHeaderFields) -> bytes:
        """img_mgmt_state_write: the slot named by its image's SHA256 TLV (no hash with
        confirm: the active slot) is marked for test or permanent swap, or confirmed."""
        request = self._parse(smpimg.ImageStatesWriteRequest, frame)
        flash = self.flash
        confirm = bool(request.confirm)
        slot: int | None
        if not request.hash:
            if not confirm:
                return self._group_error(fields, _IMG_ERR.INVALID_HASH)  # test needs a hash
            slot = 0
        elif len(request.hash) != IMAGE_HASH_SIZE:
            return self._group_error(fields, _IMG_ERR.INVALID_HASH)
        elif (slot := self._slot_of(request.hash)) is None:
            # The image's sha256 is not its hash: only the SHA256 TLV names an image.
            return self._group_error(fields, _IMG_ERR.HASH_NOT_FOUND)
        refusal = self._set_next_boot_refusal(slot, confirm)
        if refusal:
            return self._group_error(fields, refusal)
        if refusal is None:
            if slot == 0:
                flash.primary_confirmed = True
                flash.revert_on_boot = False
            else:
                flash.pending = SwapKind.PERMANENT if confirm else SwapKind.TEST
        _LOGGER.debug("%s: image state written: pending %s", self.name, flash.pending)
        return self._reply(
            request, smpimg.ImageStatesWriteResponse, images=self._image_states(), splitStatus=0
        )

    def _flash_cost_s(self, upload: UploadRecord, offset: int, size: int) -> float:
        """Erase time of sectors touched for the first time plus program time of pages."""
        if size <= 0:
            return 0.0
        timing = self.timing
        last = offset + size - 1
        sectors = set(range(offset // timing.sector_size, last // timing.sector_size + 1))
        new_sectors = len(sectors - upload.erased_sectors)
        pages = last // timing.page_size - offset // timing.page_size + 1
        cost = new_sectors * timing.sector_erase_s + pages * timing.page_program_s
        return cost * self.faults.slow_flash_factor

    async def _upload(self, frame: bytes, fields: SmpHeaderFields) -> bytes:
        """img_mgmt_upload: offset 0 starts (or resumes) an upload into the secondary slot,
        the next chunks continue it; the last answer is `{off}` alone, as Zephyr 3.4 built
        without CONFIG_IMG_ENABLE_IMAGE_CHECK answers."""
        request = self._parse(smpimg.ImageUploadWriteRequest, frame)
        flash = self.flash
        if request.off == 0:
            early = self._upload_start(request, fields)
            if early is not None:
                return early
        record = flash.upload
        if record is None or request.off != record.offset:
            expected = 0 if record is None else record.offset
            return self._reply(request, smpimg.ImageUploadWriteResponse, off=expected)
        if record.offset + len(request.data) > record.length:
            return self._upload_refused(fields, _IMG_ERR.INVALID_IMAGE_DATA_OVERRUN)
        await self._program(record, request.data)
        if not record.complete:
            return self._reply(request, smpimg.ImageUploadWriteResponse, off=record.offset)
        # As Zephyr 3.4 (no CONFIG_IMG_ENABLE_IMAGE_CHECK): the announced sha only names the
        # upload for resume; a damaged image is the bootloader's to refuse.
        image = await asyncio.to_thread(inspect_image, bytes(record.data))
        flash.secondary = image
        _LOGGER.info("%s: upload of %s complete", self.name, image.version)
        return self._reply(request, smpimg.ImageUploadWriteResponse, off=record.offset)

    def _upload_refused(self, fields: SmpHeaderFields, rc: int) -> bytes:
        """An upload request refused by img_mgmt_upload_inspect: Zephyr forgets the upload
        in progress (img_mgmt_reset_upload) and answers the image error."""
        self.flash.upload = None
        return self._group_error(fields, rc)

    def _upload_start(
        self, request: smpimg.ImageUploadWriteRequest, fields: SmpHeaderFields
    ) -> bytes | None:
        """Offset 0, checked in img_mgmt_upload_inspect's order: the answer to a refused
        request, or to a resumed upload (the same `sha` as the upload in progress: its offset,
        nothing written); None when a new upload starts (write the chunk)."""
        flash = self.flash
        if request.image not in (None, 0):
            return self._error(fields, _MGMT_ERR.EINVAL, reason="only image 0")
        refusal = self._header_refusal(request)
        if refusal is not None:
            return self._upload_refused(fields, refusal)
        sha = request.sha or None
        record = flash.upload
        if sha is not None and record is not None and not record.complete and record.sha == sha:
            _LOGGER.info("%s: upload resumes at %d", self.name, record.offset)
            return self._reply(request, smpimg.ImageUploadWriteResponse, off=record.offset)
        refusal = self._slot_refusal(request)
        if refusal is not None:
            return self._upload_refused(fields, refusal)
        flash.upload = UploadRecord(sha=sha, length=request.len or 0)
        flash.secondary = None
        return None

    @staticmethod
    def _header_refusal(request: smpimg.ImageUploadWriteRequest) -> int | None:
        """What Zephyr refuses in a first chunk itself: too short to hold the MCUboot image
        header, no `len`, not MCUboot's magic, a `sha` over 32 bytes."""
        if len(request.data) < IMAGE_HEADER_SIZE:
            return int(_IMG_ERR.INVALID_IMAGE_HEADER)
        if request.len is None:
            return int(_IMG_ERR.INVALID_LENGTH)
        if request.data[: len(IMAGE_MAGIC)] != IMAGE_MAGIC:
            return int(_IMG_ERR.INVALID_IMAGE_HEADER_MAGIC)
        if request.sha is not None and len(request.sha) > IMAGE_HASH_SIZE:
            return int(_IMG_ERR.INVALID_HASH)
        return None

    def _slot_refusal(self, request: smpimg.ImageUploadWriteRequest) -> int | None:
        """Why a new upload has no slot: the secondary slot is in use, or too small."""
        flash = self.flash
        if flash.revert_on_boot or flash.pending is not None:
            # The secondary slot holds the fallback of the image on test, or the image the
            # next boot swaps in: img_mgmt_slot_in_use, so no slot to upload to.
            return int(_IMG_ERR.NO_FREE_SLOT)
        if (request.len or 0) > self.timing.slot_size:
            return int(_IMG_ERR.INVALID_IMAGE_TOO_LARGE)
        return None

    async def _program(self, record: UploadRecord, data: bytes) -> None:
        """Erase and program `data` at the record's offset, taking the flash's time."""
        cost_s = self._flash_cost_s(record, record.offset, len(data))
        loss_at = self.faults.power_loss_during_upload_at
        if (
            loss_at is not None
            and "upload" not in self._fired
            and record.offset + len(data) >= loss_at * record.length
        ):
            self._fired.add("upload")
            await asyncio.sleep(cost_s / 2)
            raise _PowerLostError(f"upload at offset {record.offset}")
        await asyncio.sleep(cost_s)
        # Programmed: from here on the bytes are in flash.
        timing = self.timing
        if data:
            last = record.offset + len(data) - 1
            record.erased_sectors.update(
                range(record.offset // timing.sector_size, last // timing.sector_size + 1)
            )
        record.data += data
        record.offset += len(data)
        self.chunks_written += 1
        self._changed()

    # ---- jig group ----------------------------------------------------------------------------

    async def _identity(self, frame: bytes, fields: SmpHeaderFields) -> bytes:
        request = self._parse(jig_group.IdentityReadRequest, frame)
        version = self.flash.primary.version
        return self._reply(
            request,
            jig_group.IdentityReadResponse,
            guid=self.guid.to_bytes(),
            manufacturer=self.model.manufacturer,
            model=self.model.model,
            firmware_version=version.value if version is not None else 0,
            locked=not self.flash.unlocked,
        )

    async def _unlock_challenge(self, frame: bytes, fields: SmpHeaderFields) -> bytes:
        request = self._parse(jig_group.UnlockChallengeRequest, frame)
        self._nonce = secrets.token_bytes(jig_group.NONCE_SIZE)
        return self._reply(request, jig_group.UnlockChallengeResponse, nonce=self._nonce)

    async def _unlock(self, frame: bytes, fields: SmpHeaderFields) -> bytes:
        request = self._parse(jig_group.UnlockWriteRequest, frame)
        nonce, self._nonce = self._nonce, None  # a nonce is good for one unlock write
        if nonce is None:
            return self._group_error(fields, jig_group.JigMgmtErr.NO_CHALLENGE)
        expected = jig_group.unlock_mac(self._device_key, nonce, self.guid.to_bytes())
        if not hmac.compare_digest(expected, request.mac):
            _LOGGER.info("%s: unlock refused: bad MAC", self.name)
            return self._group_error(fields, jig_group.JigMgmtErr.BAD_MAC)
        self.flash.unlocked = True
        _LOGGER.info("%s: unlocked", self.name)
        return self._reply(request, jig_group.UnlockWriteResponse)

    async def _lock(self, frame: bytes, fields: SmpHeaderFields) -> bytes:
        request = self._parse(jig_group.LockWriteRequest, frame)
        self.flash.unlocked = False
        _LOGGER.info("%s: locked", self.name)
        return self._reply(request, jig_group.LockWriteResponse)

    # ---- ground truth -------------------------------------------------------------------------

    def truth(self) -> dict[str, object]:
        """The hub's real state, for comparison with what a station recorded."""
        flash = self.flash
        version = flash.primary.version
        return {
            "guid": str(self.guid),
            "model": str(self.model),
            "active_version": str(version) if version is not None else None,
            "active_sha256": flash.primary.sha256.hex(),
            "active_image_hash": _hex(flash.primary.tlv_hash),
            "confirmed": flash.primary_confirmed,
            "locked": not flash.unlocked,
            "bricked": flash.bricked,
            "pending": flash.pending is not None,
            "secondary_sha256": flash.secondary.sha256.hex() if flash.secondary else None,
            "secondary_image_hash": _hex(flash.secondary.tlv_hash) if flash.secondary else None,
            "swap_in_progress": flash.swap is not None,
            "state": str(self._state),
            "faults": self.faults.names(),
            "rx_lines_dropped": self.lines_dropped,
        }


def _hex(digest: bytes | None) -> str | None:
    return digest.hex() if digest is not None else None
