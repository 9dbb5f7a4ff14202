"""`SimHub`: one simulated hub, its parts put together, with power, boots and counters.

A hub is served on a byte stream (`serve(port)`): its wire (`sim.hub.wire.WireIO`) decodes the
bytes into frames and keeps receiving, into at most `buf_count` receive buffers
(`sim.hub.smp_server.RequestBuffers`), while the application answers the buffered requests in
order with its SMP server (`sim.hub.smp_server.SmpServer`; programming flash takes time, which
is what a pipelining host exploits). At power-on and after every reset the bootloader
(`sim.hub.boot.Bootloader`) runs first. Faults (`sim.faults.Faults`) are decided by a seeded
`sim.faults.FaultInjector`, so a run can be repeated.

State that a real hub keeps in flash (`HubFlash`: slots, settings, and the unfinished upload on
a model with `upload_state="flash"`) survives `power_off()`; everything else (receive buffers,
the unlock nonce, a half-sent response, an upload's state on a `"ram"` model) is lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Final

from drivers import jig_group
from drivers.framing import Framing
from jigd.model import DeviceModel, Guid
from sim.faults import FaultInjector, Faults, PowerLostError
from sim.hub.boot import Bootloader
from sim.hub.flash import HubFlash
from sim.hub.smp_server import RequestBuffers, SmpServer
from sim.hub.wire import Wire, WireIO, framing_named
from sim.image_check import FlashImage, ImageKey, inspect_image
from sim.pty_port import Port
from sim.slot_hub import HubState, HubStateWatch
from sim.timing import Timing
from sim.uart_rx import LineBuffers

__all__ = ["SimHub"]

_LOGGER = logging.getLogger(__name__)

RESET_TX_TIMEOUT_S: Final = 2.0  # longest wait for the last response to leave before resetting


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
        self.name = f"hub {guid}"
        injector = FaultInjector(self.faults)
        self._faults = injector
        primary = image if isinstance(image, FlashImage) else inspect_image(image)
        self.flash = HubFlash(primary=primary, unlocked=not locked)
        self.on_power_lost: Callable[[], None] | None = None
        # Called after every change of `powered` (power on, power off, injected brown-out).
        self.power_listeners: list[Callable[[], None]] = []
        # Console framing's UART line buffers (their contents are RAM, their counters are not:
        # `line_rx.dropped_busy`, no free line buffer; `line_rx.dropped_long`, over 128 bytes).
        self.line_rx = LineBuffers(count=self.timing.rx_buf_count)

        # The parts.
        self._io = WireIO(
            self,
            wire=Wire(self.framing, self.timing.bytes_per_s),
            timing=self.timing,
            line_rx=self.line_rx,
            name=self.name,
        )
        # The hub holds only its device key, never its manufacturer's master key.
        device_key = jig_group.device_key(injector.unlock_master_key(master_key), guid.to_bytes())
        self.server = SmpServer(
            guid=guid,
            model=model,
            flash=self.flash,
            device_key=device_key,
            timing=self.timing,
            faults=injector,
            name=self.name,
            on_change=self._changed,
        )
        self._bootloader = Bootloader(
            self.flash, image_key=image_key, timing=self.timing, faults=injector, name=self.name
        )

        # RAM: lost at power off and reset.
        self._epoch = 0
        self._buffers = RequestBuffers(self.timing.buf_count)

        self._powered = False
        self._tg: asyncio.TaskGroup | None = None
        self._session_task: asyncio.Task[None] | None = None

        # Counters, for tests and benchmarks (more from the parts: the properties below).
        self.frames_received = 0
        self.frames_dropped_busy = 0  # arrived while every receive buffer was in use
        self.requests_handled = 0
        self.responses_dropped = 0
        self.responses_corrupted = 0
        self.boots = 0
        self.resets = 0
        self.power_losses = 0  # injected brown-outs

    # ---- counters of the parts ----------------------------------------------------------------

    @property
    def bytes_received(self) -> int:
        """Bytes delivered to the decoder (after pacing)."""
        return self._io.bytes_received

    @property
    def bytes_discarded(self) -> int:
        """Bytes that arrived while the hub was not listening."""
        return self._io.bytes_discarded

    @property
    def bytes_sent(self) -> int:
        return self._io.bytes_sent

    @property
    def decoder_dropped_bytes(self) -> int:
        return self._io.decoder_dropped_bytes

    @property
    def chunks_written(self) -> int:
        return self.server.images.chunks_written

    @property
    def swaps(self) -> int:
        return self._bootloader.swaps

    @property
    def images_rejected(self) -> int:
        return self._bootloader.images_rejected

    @property
    def lines_dropped(self) -> int:
        """Console lines the UART receiver dropped (no free line buffer, or too long)."""
        return self.line_rx.dropped

    @property
    def faults_fired(self) -> set[str]:
        """The one-shot faults (hang, power losses) that already struck this hub."""
        return self._faults.fired

    # ---- what the wire sees (sim.hub.wire.FrameSink) --------------------------------------------

    @property
    def epoch(self) -> int:
        """Changes whenever the hub loses its RAM: power off, power on, reset."""
        return self._epoch

    @property
    def listening(self) -> bool:
        return self._state is HubState.RUNNING

    def frame_received(self, frame: bytes) -> None:
        self.frames_received += 1
        self._changed()
        if not self._buffers.offer(frame):
            self.frames_dropped_busy += 1
            _LOGGER.debug("%s: all %d buffers busy: frame dropped", self.name, self._buffers.in_use)

    def wire_changed(self) -> None:
        self._changed()

    # ---- power and serving ------------------------------------------------------------------

    @property
    def powered(self) -> bool:
        return self._powered

    async def serve(self, port: Port, wire: Wire | None = None) -> None:
        """Be connected to `port` until cancelled. Flash state stays with the hub.

        `wire` (default: the hub's own framing, paced at its timing's baud rate) says how the
        port carries frames.
        """
        if self._tg is not None:
            raise RuntimeError(f"{self.name} is already served on a port")
        self._io.wire = wire or Wire(self.framing, self.timing.bytes_per_s)
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                tg.create_task(self._io.receive(port), name=f"{self.name} rx")
                tg.create_task(self._io.transmit(port), name=f"{self.name} tx")
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
        self._buffers = RequestBuffers(self.timing.buf_count)
        self.server.forget_ram()
        self.line_rx.clear()

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
                if not await self._bootloader.boot():
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
        except PowerLostError as exc:
            self._brownout(str(exc))

    # ---- application ----------------------------------------------------------------------------

    async def _run_application(self) -> bool:
        """Answer requests in order. Return True when reset, False when hung (injected).

        An answered reset takes effect `reset_delay_s` later, and each reset restarts that
        delay, as Zephyr's os_mgmt (re)starts its CONFIG_MCUMGR_GRP_OS_RESET_MS timer; until
        then the hub answers as before, as the old firmware. Work in progress when the delay
        ends is abandoned (a chunk being programmed is not written).
        """
        loop = asyncio.get_running_loop()
        buffers, server = self._buffers, self.server
        last_sent: asyncio.Future[None] | None = None  # the latest response, once a reset is due
        last_size = 0
        try:
            async with asyncio.timeout(None) as reset_timer:
                while True:
                    frame = await buffers.take()
                    try:
                        reply = await server.handle_request(frame)
                    finally:
                        buffers.release()
                    self.requests_handled += 1
                    if reply is None:
                        continue
                    if server.reset_requested or last_sent is not None:
                        last_sent, last_size = loop.create_future(), len(reply)
                    self._transmit(reply, last_sent)
                    if server.reset_requested:
                        server.reset_requested = False
                        reset_timer.reschedule(loop.time() + self.timing.reset_delay_s)
                        _LOGGER.info(
                            "%s: resetting in %.3f s", self.name, self.timing.reset_delay_s
                        )
                    if self._faults.hangs_now(self.requests_handled):
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

    def _transmit(self, frame: bytes, sent: asyncio.Future[None] | None = None) -> None:
        """Send a response, unless an injected fault drops it or flips one of its bytes."""
        if self._faults.drops_response():
            self.responses_dropped += 1
            _LOGGER.debug("%s: response dropped (injected)", self.name)
            if sent is not None:
                sent.set_result(None)
            return
        wire, corrupted_at = self._faults.corrupted(self._io.wire.framing.encode(frame))
        if corrupted_at is not None:
            self.responses_corrupted += 1
            _LOGGER.debug("%s: response byte %d corrupted (injected)", self.name, corrupted_at)
        self._io.send(wire, self._epoch, sent)

    async def handle_request(self, frame: bytes) -> bytes | None:
        """Answer one request frame as the application does (None: no answer is possible)."""
        return await self.server.handle_request(frame)

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
