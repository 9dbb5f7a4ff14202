"""A simulated hub's end of its wire: bytes paced in and out, frames decoded and encoded.

`WireIO` serves a hub (a `FrameSink`) on a byte stream (`sim.pty_port.Port`): its receiver
takes bytes from the port only as fast as the wire delivers them (`Wire.bytes_per_s`, `baud /
10` on a serial line), decodes them into frames and hands each on (`FrameSink.frame_received`)
when its last byte would have arrived; its transmitter writes the hub's responses at the same
pace. With console framing the bytes first go through Zephyr's UART line buffers
(`sim.uart_rx`), read once per 1 ms tick. A port that paces bytes itself (a simulated USB
device, `sim.usb_device`) is served with a `Wire` whose rate is None.

The hub's `epoch` changes whenever it loses its RAM (reset, power): bytes and frames of an
older epoch are dropped, and so is the rest of a response still being sent. While the hub is
not `listening` (off, booting, hung) received bytes are discarded.
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass
from typing import Final, Protocol

from smp import packet as smppacket

from drivers.framing import REQUEST_OPS, ConsoleFraming, FrameDecoder, Framing, RawFraming
from sim.pty_port import READ_CHUNK, Port
from sim.timing import Timing
from sim.uart_rx import TICK_S, LineBuffers, TickPacer

__all__ = ["FrameSink", "Wire", "WireIO", "framing_named"]

_LOGGER = logging.getLogger(__name__)

RX_READ_S: Final = 0.02  # bytes are taken from the port this much wire time at a time
RX_SLICE_BYTES: Final = 64  # and fed to the decoder in slices this big: a frame's arrival time
TX_WRITE_S: Final = 0.005  # responses are written in pieces of this much wire time
PACING_SLACK_S: Final = 0.005  # bytes within this of the previous ones follow them back to back
RX_IDLE_RESET_S: Final = 0.5  # a partial frame older than this is dropped (raw framing resync)
# A console line counts only if it starts with one of these (mcumgr_serial_process_frag).
_LINE_STARTS: Final = (smppacket.START_DELIMITER, smppacket.CONTINUE_DELIMITER)


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


class FrameSink(Protocol):
    """The hub a `WireIO` serves."""

    @property
    def epoch(self) -> int:
        """Changes whenever the hub loses its RAM (reset, power off, power on)."""
        ...

    @property
    def listening(self) -> bool:
        """The hub's application runs: received frames reach it."""
        ...

    def frame_received(self, frame: bytes) -> None:
        """A frame arrived (its last byte is in), while listening and in the current epoch."""
        ...

    def wire_changed(self) -> None:
        """A counter changed (a console line dropped): wake whoever waits on the hub."""
        ...


@dataclass(slots=True)
class _TxItem:
    epoch: int
    wire: bytes
    sent: asyncio.Future[None] | None


class WireIO:
    """A hub's receiver and transmitter: run `receive(port)` and `transmit(port)` as tasks.

    `wire` says how the port carries frames (set it before serving a port); `line_rx` are the
    console UART's line buffers (console framing only). Counters: `bytes_received` (delivered
    to the decoder, after pacing), `bytes_discarded` (arrived while the hub was not listening),
    `bytes_sent`, `decoder_dropped_bytes`.
    """

    def __init__(
        self, sink: FrameSink, *, wire: Wire, timing: Timing, line_rx: LineBuffers, name: str
    ) -> None:
        self.wire = wire
        self.line_rx = line_rx
        self._sink = sink
        self._timing = timing
        self._name = name
        self._txq: asyncio.Queue[_TxItem] = asyncio.Queue()
        self.bytes_received = 0
        self.bytes_discarded = 0
        self.bytes_sent = 0
        self.decoder_dropped_bytes = 0

    # ---- receiving ------------------------------------------------------------------------------

    async def receive(self, port: Port) -> None:
        """Read the port until cancelled, paced as `wire` says."""
        framing, rate = self.wire.framing, self.wire.bytes_per_s
        if framing.name == "console":
            await self._rx_lines_loop(port, framing, self._rx_bytes_per_tick(rate))
        elif rate is not None:
            await self._rx_loop(port, framing, rate)
        else:
            await self._rx_unpaced_loop(port, framing)

    async def _rx_loop(self, port: Port, framing: Framing, rate: float) -> None:
        """Take bytes from the port as fast as the wire delivers them, on a virtual clock.

        Bytes are read at most `RX_READ_S` of wire time at a time; each read is placed on the
        clock right after the previous one (or now, if the line was idle) and the loop sleeps
        until the wire would have delivered it. A frame is handed on when its last byte would
        have arrived. Bytes that arrive while the hub is not running are discarded.
        """
        loop = asyncio.get_running_loop()
        sink = self._sink
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
                if not sink.listening or decoder_epoch != sink.epoch:
                    self.bytes_discarded += len(data) - offset - len(piece)
                    break
                for frame in frames:
                    sink.frame_received(frame)
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
                self._sink.frame_received(frame)

    def _rx_bytes_per_tick(self, rate: float | None) -> float:
        """The console UART's read budget per tick: the model's, else the wire's (0: unpaced)."""
        if rate is None:
            return 0.0  # the port paces the bytes itself
        if self._timing.rx_bytes_per_tick is not None:
            return self._timing.rx_bytes_per_tick
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
        sink = self._sink
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
                    _LOGGER.debug("%s: console line dropped (%d so far)", self._name, lines.dropped)
                    sink.wire_changed()
                if not frames:
                    continue
                processed = tick * TICK_S  # the lines read in a tick are processed right after it
                if processed > loop.time():
                    await asyncio.sleep(processed - loop.time())
                if not sink.listening or decoder_epoch != sink.epoch:
                    self.bytes_discarded += len(data) - offset
                    break
                for frame in frames:
                    sink.frame_received(frame)
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
                _LOGGER.debug("%s: dropped a partial frame after idle", self._name)
            return None

    def _decoding(
        self, data: bytes, framing: Framing, decoder: FrameDecoder | None, epoch: int
    ) -> tuple[FrameDecoder, int] | None:
        """The decoder for bytes just received, and its epoch: a new one after the hub was
        reset or power cycled. None when the hub is not running: the bytes are discarded."""
        if not self._sink.listening:
            self.bytes_discarded += len(data)
            return None
        if decoder is None or epoch != self._sink.epoch:
            if decoder is not None:
                self.decoder_dropped_bytes += decoder.dropped_bytes
            return framing.decoder(), self._sink.epoch
        return decoder, epoch

    # ---- sending --------------------------------------------------------------------------------

    def send(self, wire: bytes, epoch: int, sent: asyncio.Future[None] | None = None) -> None:
        """Queue a response's bytes (already framed) for the transmitter; `sent` is set when
        they have left, or been cut off because the hub left `epoch`."""
        self._txq.put_nowait(_TxItem(epoch, wire, sent))

    async def transmit(self, port: Port) -> None:
        """Write responses as fast as the wire takes them: each piece of at most `TX_WRITE_S`
        of wire time is written when its last byte would have left."""
        loop = asyncio.get_running_loop()
        rate = self.wire.bytes_per_s
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
                    if item.epoch != self._sink.epoch:
                        break  # power lost or reset: the rest of the response never leaves
                    await port.write(piece)
                    self.bytes_sent += len(piece)
            finally:
                port.frame_end()  # a USB device ends its transfer here, even a cut one
                if item.sent is not None and not item.sent.done():
                    item.sent.set_result(None)
