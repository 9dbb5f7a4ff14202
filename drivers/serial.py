"""Serial transport: SMP frames over a serial port (device path or pyserial URL) with asyncio.

The port is opened with pyserial's `serial_for_url` semantics through pyserial-asyncio-fast, so a
slot's `port` may be `/dev/ttyUSB3`, `/dev/jig/rig1/slot3`, `socket://host:port` or
`rfc2217://host:port`. Received bytes go through the slot's framing decoder; a partial frame left
in the decoder with no byte arriving for `idle_reset_s` is dropped and counted, so a line glitch
never glues itself to the next frame. When the port closes or fails, the listener hears about it
once, with a typed `LinkClosed`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Final

import serial  # pyserial: `import serial` inside drivers/serial.py is the top-level package
import serial_asyncio_fast

from drivers.errors import LinkClosed, PortOpenFailed
from drivers.framing import RESPONSE_OPS, FrameDecoder, Framing, framing_for
from drivers.transport import TransportBase

__all__ = [
    "CLOSE_TIMEOUT_S",
    "IDLE_RESET_S",
    "OPEN_TIMEOUT_S",
    "SerialTransport",
    "open",
    "open_port",
]

_LOGGER = logging.getLogger(__name__)

IDLE_RESET_S: Final = 0.2  # a partial frame older than this with a silent line is noise
IDLE_RESET_BYTE_TIMES: Final = 64  # at slow baud rates, wait at least this many byte times
OPEN_TIMEOUT_S: Final = 5.0
CLOSE_TIMEOUT_S: Final = 2.0


async def open_port(
    url: str,
    baudrate: int,
    protocol_factory: Callable[[], asyncio.Protocol],
    *,
    name: str | None = None,
    open_timeout_s: float = OPEN_TIMEOUT_S,
) -> asyncio.Transport:
    """Open `url` as pyserial's `serial_for_url` would, bound to an asyncio protocol.

    Plain device paths are opened exclusively (a second station process on the same hub would
    interleave requests). Raises PortOpenFailed naming the port.
    """
    label = name or url
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(open_timeout_s):
            if url.startswith("socket://"):  # the library makes a socket transport for it
                transport, _ = await serial_asyncio_fast.create_serial_connection(
                    loop, protocol_factory, url, baudrate=baudrate
                )
            else:
                port = await asyncio.to_thread(_open_serial, url, baudrate)
                transport = _PortTransport(loop, protocol_factory(), port)
    except TimeoutError as exc:
        raise PortOpenFailed(label, url, f"no connection within {open_timeout_s:.3g} s") from exc
    except (OSError, ValueError, serial.SerialException) as exc:
        raise PortOpenFailed(label, url, str(exc) or type(exc).__name__) from exc
    if not isinstance(transport, asyncio.Transport):  # pragma: no cover - library contract
        raise PortOpenFailed(label, url, f"unexpected transport {type(transport).__name__}")
    return transport


def _open_serial(url: str, baudrate: int) -> serial.Serial:
    """The port, as serial_asyncio_fast's `create_serial_connection` opens it (exclusively for
    a plain device path: a second station process on the same hub would interleave requests)."""
    if "://" in url:
        return serial.serial_for_url(url, baudrate=baudrate)
    return serial.serial_for_url(url, baudrate=baudrate, exclusive=True)


class _PortTransport(serial_asyncio_fast.SerialTransport):
    """pyserial-asyncio-fast's transport, where a port that fails under a write (a pty whose
    simulator died, a USB serial adapter pulled, a rig controller powered off) is a lost
    connection like any other: the protocol's `connection_lost(exc)` reports it in one line,
    instead of asyncio's "Fatal write error on serial transport" with a traceback first."""

    def _fatal_error(
        self, exc: BaseException, message: str = "Fatal error on serial transport"
    ) -> None:
        if not isinstance(exc, (serial.SerialException, OSError)):
            super()._fatal_error(exc, message)  # a bug, not the port: keep the traceback
            return
        _LOGGER.debug("serial port failed (%s): %s", type(exc).__name__, exc)
        self._abort(exc)


class _StreamProtocol(asyncio.Protocol):
    """Adapter from asyncio's protocol callbacks to the SerialTransport that owns it."""

    def __init__(self, owner: SerialTransport) -> None:
        self._owner = owner

    def data_received(self, data: bytes) -> None:
        self._owner._data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._owner._connection_lost(exc)


class SerialTransport(TransportBase):
    """A `FrameTransport` over a serial port with console or raw SMP framing.

    Build it with `await open(...)`. Counters: `bytes_sent`, `bytes_received`, `bytes_dropped`
    (decoder), `link_errors` by kind (`garbage`, `idle_reset`, `port_error`, `no_listener`).
    """

    def __init__(
        self,
        *,
        url: str,
        name: str,
        baudrate: int,
        framing: Framing,
        idle_reset_s: float,
    ) -> None:
        self._url = url
        super().__init__(name)
        self._baudrate = baudrate
        self._framing = framing
        self._decoder: FrameDecoder = framing.decoder()
        self._idle_reset_s = idle_reset_s
        self._transport: asyncio.Transport | None = None
        self._closing = False
        self._closed = asyncio.Event()
        self._idle_timer: asyncio.TimerHandle | None = None
        self._last_rx = 0.0

    # -- FrameTransport ----------------------------------------------------------------------

    @property
    def url(self) -> str:
        return self._url

    @property
    def baudrate(self) -> int | None:
        return self._baudrate

    @property
    def framing(self) -> Framing:
        return self._framing

    @property
    def is_closed(self) -> bool:
        return self._closing or self._closed.is_set()

    @property
    def bytes_dropped(self) -> int:
        return self._decoder.dropped_bytes

    def wire_size(self, frame_size: int) -> int:
        return self._framing.wire_size(frame_size)

    @property
    def buffer_overhead(self) -> int:
        return self._framing.buffer_overhead

    def max_frame_in_lines(self, lines: int) -> int | None:
        return self._framing.max_frame_in_lines(lines)

    def send(self, frame: bytes) -> None:
        transport = self._transport
        if transport is None or self.is_closed or transport.is_closing():
            raise LinkClosed(self._name, "cannot send: the port is closed")
        data = self._framing.encode(frame)
        if _LOGGER.isEnabledFor(logging.DEBUG):
            _LOGGER.debug("%s: tx %d bytes %s", self._name, len(data), data[:64].hex())
        transport.write(data)
        self._bytes_sent += len(data)

    async def close(self) -> None:
        """Close the port (pending output is discarded) and wait until it is released."""
        transport = self._transport
        if transport is not None and not self._closing and not self._closed.is_set():
            self._closing = True
            if not transport.is_closing():  # a failed port is already being closed
                transport.abort()
        if transport is None:
            self._closed.set()
            return
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await self._closed.wait()
        except TimeoutError:
            _LOGGER.warning(
                "%s: port did not report closed within %.3g s", self._name, CLOSE_TIMEOUT_S
            )

    # -- asyncio callbacks -------------------------------------------------------------------

    def _attach(self, transport: asyncio.Transport) -> None:
        self._transport = transport

    def _data_received(self, data: bytes) -> None:
        self._bytes_received += len(data)
        if _LOGGER.isEnabledFor(logging.DEBUG):
            _LOGGER.debug("%s: rx %d bytes %s", self._name, len(data), data[:64].hex())
        loop = asyncio.get_running_loop()
        self._last_rx = loop.time()
        if self._idle_timer is None:
            self._idle_timer = loop.call_at(self._last_rx + self._idle_reset_s, self._idle_check)
        dropped_before = self._decoder.dropped_bytes
        frames = self._decoder.feed(data)
        if self._decoder.dropped_bytes != dropped_before:
            self._link_errors["garbage"] += 1
        for frame in frames:
            listener = self._listener
            if listener is None:
                self._link_errors["no_listener"] += 1
                _LOGGER.debug("%s: frame with no listener dropped", self._name)
                continue
            listener.frame_received(frame)

    def _idle_check(self) -> None:
        """Drop a partial frame once the line has been silent for `idle_reset_s`."""
        self._idle_timer = None
        loop = asyncio.get_running_loop()
        due = self._last_rx + self._idle_reset_s
        if loop.time() < due:
            self._idle_timer = loop.call_at(due, self._idle_check)
            return
        before = self._decoder.dropped_bytes
        self._decoder.reset()
        dropped = self._decoder.dropped_bytes - before
        if dropped:
            self._link_errors["idle_reset"] += 1
            _LOGGER.debug("%s: line idle, dropped %d bytes of a partial frame", self._name, dropped)

    def _connection_lost(self, exc: Exception | None) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        if self._closing:
            reason = "closed by jigd"
        elif exc is not None:
            self._link_errors["port_error"] += 1
            reason = f"port error: {exc}"
            _LOGGER.warning("%s: port failed: %s", self._name, exc)
        else:
            self._link_errors["port_error"] += 1
            reason = "the port closed"
            _LOGGER.warning("%s: port closed by the other side", self._name)
        self._closing = True
        self._closed.set()
        listener = self._listener
        if listener is not None:
            error = LinkClosed(self._name, reason)
            if exc is not None:
                error.__cause__ = exc
            listener.connection_lost(error)


async def open(
    port_url: str,
    baudrate: int,
    framing: str | Framing,
    *,
    name: str | None = None,
    idle_reset_s: float | None = None,
    open_timeout_s: float = OPEN_TIMEOUT_S,
) -> SerialTransport:
    """Open a serial SMP link on `port_url` (device path or pyserial URL).

    `framing` is a name (`raw`, `console`) or a Framing; raw decoders take only response ops, as
    a host must. `name` labels messages and logs (default: the URL).
    """
    if isinstance(framing, str):
        framing = framing_for(framing, accept_ops=RESPONSE_OPS)
    if idle_reset_s is None:
        idle_reset_s = max(IDLE_RESET_S, IDLE_RESET_BYTE_TIMES * 10 / baudrate)
    link = SerialTransport(
        url=port_url,
        name=name or port_url,
        baudrate=baudrate,
        framing=framing,
        idle_reset_s=idle_reset_s,
    )
    transport = await open_port(
        port_url,
        baudrate,
        lambda: _StreamProtocol(link),
        name=link.name,
        open_timeout_s=open_timeout_s,
    )
    link._attach(transport)
    _LOGGER.debug(
        "%s: opened %s at %d baud, %s framing", link.name, port_url, baudrate, framing.name
    )
    return link
