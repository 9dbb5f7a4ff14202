"""Rig controller client: the ASCII line protocol of a rig's controller board.

The protocol is a contract: docs/architecture.md, "Rig controller".

    PING                     -> OK
    PRESENCE?                -> PRESENCE 10110000     (slot 1 first)
    POWER <n> ON|OFF         -> OK
    LED <n> OFF|GREEN|RED|AMBER|BLINK -> OK
    (unsolicited)            EVT INSERT <n> | EVT REMOVE <n>
    (any command)            -> ERR <reason>

One command is outstanding at a time (a lock), each bounded by a timeout. Event lines may arrive
at any moment, also between a command and its reply; they go to the `on_event` callback, or to a
bounded queue read with `next_event()`.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Final, Self

from drivers.errors import (
    PortOpenFailed,
    RigClosed,
    RigCommandFailed,
    RigError,
    RigProtocolError,
    RigTimeout,
)
from drivers.serial import CLOSE_TIMEOUT_S, OPEN_TIMEOUT_S, open_port
from jigd.model import LedColour

__all__ = [
    "COMMAND_TIMEOUT_S",
    "MAX_SLOTS",
    "RigController",
    "RigEvent",
    "RigEventKind",
]

_LOGGER = logging.getLogger(__name__)

COMMAND_TIMEOUT_S: Final = 1.0
QUEUE_WAIT_FACTOR: Final = 16  # a command may wait this many command timeouts for its turn
MAX_LINE: Final = 256  # longer lines are noise
EVENT_QUEUE_SIZE: Final = 256
MAX_SLOTS: Final = 8


class RigEventKind(enum.StrEnum):
    INSERT = "INSERT"
    REMOVE = "REMOVE"


@dataclass(frozen=True, slots=True)
class RigEvent:
    """A hub put into (`INSERT`) or taken out of (`REMOVE`) slot `slot`."""

    kind: RigEventKind
    slot: int


class _LineProtocol(asyncio.Protocol):
    def __init__(self, owner: RigController) -> None:
        self._owner = owner

    def data_received(self, data: bytes) -> None:
        self._owner._data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._owner._connection_lost(exc)


class RigController:
    """Client of one rig controller board. Build with `await RigController.open(...)`.

    Counters in `link_errors`: `bad_line` (overlong or unparsable), `unsolicited` (a reply with
    no command waiting), `events_dropped` (queue full), `timeout`, `port_error`.
    """

    def __init__(
        self,
        *,
        name: str,
        timeout_s: float = COMMAND_TIMEOUT_S,
        on_event: Callable[[RigEvent], None] | None = None,
        on_lost: Callable[[RigError], None] | None = None,
    ) -> None:
        self._name = name
        self._timeout_s = timeout_s
        self._on_event = on_event
        self._on_lost = on_lost
        self._events: asyncio.Queue[RigEvent] = asyncio.Queue(EVENT_QUEUE_SIZE)
        self._transport: asyncio.Transport | None = None
        self._lock = asyncio.Lock()
        self._waiter: asyncio.Future[str] | None = None
        self._buf = bytearray()
        self._discarding = False  # inside an overlong line, until its newline
        self._closing = False
        self._closed = asyncio.Event()
        self._link_errors: Counter[str] = Counter()

    @classmethod
    async def open(
        cls,
        port_url: str,
        baudrate: int = 115200,
        *,
        name: str | None = None,
        timeout_s: float = COMMAND_TIMEOUT_S,
        on_event: Callable[[RigEvent], None] | None = None,
        on_lost: Callable[[RigError], None] | None = None,
        open_timeout_s: float = OPEN_TIMEOUT_S,
    ) -> RigController:
        """Open the controller's port (device path or pyserial URL). Raises RigClosed."""
        rig = cls(name=name or port_url, timeout_s=timeout_s, on_event=on_event, on_lost=on_lost)
        try:
            transport = await open_port(
                port_url,
                baudrate,
                lambda: _LineProtocol(rig),
                name=rig.name,
                open_timeout_s=open_timeout_s,
            )
        except PortOpenFailed as exc:
            raise RigClosed(rig.name, f"cannot open {port_url}: {exc.detail}") from exc
        rig._transport = transport
        return rig

    @property
    def name(self) -> str:
        return self._name

    @property
    def is_closed(self) -> bool:
        return self._closing or self._closed.is_set()

    @property
    def link_errors(self) -> Counter[str]:
        return self._link_errors

    # -- commands ----------------------------------------------------------------------------

    async def ping(self) -> None:
        self._expect_ok("PING", await self._command("PING"))

    async def presence(self) -> tuple[bool, ...]:
        """Which slots hold a hub: index 0 is slot 1."""
        reply = await self._command("PRESENCE?")
        self._raise_if_err("PRESENCE?", reply)
        word, _, bits = reply.partition(" ")
        bits = bits.strip()
        if word != "PRESENCE" or not 1 <= len(bits) <= MAX_SLOTS or set(bits) - {"0", "1"}:
            raise RigProtocolError(self._name, "PRESENCE?", reply)
        return tuple(bit == "1" for bit in bits)

    async def power(self, slot: int, on: bool) -> None:
        command = f"POWER {_check_slot(slot)} {'ON' if on else 'OFF'}"
        self._expect_ok(command, await self._command(command))

    async def led(self, slot: int, colour: LedColour) -> None:
        command = f"LED {_check_slot(slot)} {LedColour(colour).value}"
        self._expect_ok(command, await self._command(command))

    async def next_event(self, timeout_s: float) -> RigEvent | None:
        """The next queued event (when no `on_event` callback is set), or None after timeout."""
        try:
            async with asyncio.timeout(timeout_s):
                return await self._events.get()
        except TimeoutError:
            return None

    async def close(self) -> None:
        """Close the port and wait (bounded) until it is released; idempotent."""
        transport = self._transport
        if transport is not None and not self.is_closed:
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
            _LOGGER.warning("%s: port did not close within %.3g s", self._name, CLOSE_TIMEOUT_S)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- internals ---------------------------------------------------------------------------

    async def _command(self, command: str) -> str:
        try:
            async with asyncio.timeout(self._timeout_s * QUEUE_WAIT_FACTOR):
                await self._lock.acquire()
        except TimeoutError as exc:
            raise RigTimeout(self._name, command, self._timeout_s * QUEUE_WAIT_FACTOR) from exc
        try:
            transport = self._transport
            if transport is None or self.is_closed:
                raise RigClosed(self._name, f"cannot send {command!r}: the port is closed")
            waiter: asyncio.Future[str] = asyncio.get_running_loop().create_future()
            self._waiter = waiter
            try:
                _LOGGER.debug("%s: > %s", self._name, command)
                transport.write(command.encode("ascii") + b"\n")
                async with asyncio.timeout(self._timeout_s):
                    return await waiter
            except TimeoutError as exc:
                self._link_errors["timeout"] += 1
                raise RigTimeout(self._name, command, self._timeout_s) from exc
            finally:
                self._waiter = None
                if not waiter.done():
                    waiter.cancel()
        finally:
            self._lock.release()

    def _raise_if_err(self, command: str, reply: str) -> None:
        if reply == "ERR" or reply.startswith("ERR "):
            raise RigCommandFailed(self._name, command, reply[4:].strip() or "no reason given")

    def _expect_ok(self, command: str, reply: str) -> None:
        self._raise_if_err(command, reply)
        if reply != "OK":
            raise RigProtocolError(self._name, command, reply)

    def _data_received(self, data: bytes) -> None:
        self._buf += data
        while True:
            end = self._buf.find(b"\n")
            if end < 0:
                if len(self._buf) > MAX_LINE:
                    self._link_errors["bad_line"] += 1
                    self._buf.clear()
                    self._discarding = True
                return
            raw = bytes(self._buf[:end])
            del self._buf[: end + 1]
            if self._discarding:  # the tail of an overlong line
                self._discarding = False
                continue
            if len(raw) > MAX_LINE:
                self._link_errors["bad_line"] += 1
                continue
            line = raw.decode("ascii", errors="replace").strip()
            if line:
                self._line(line)

    def _line(self, line: str) -> None:
        _LOGGER.debug("%s: < %s", self._name, line)
        if line.startswith("EVT "):
            self._event(line)
            return
        waiter = self._waiter
        if waiter is None or waiter.done():
            self._link_errors["unsolicited"] += 1
            _LOGGER.debug("%s: reply %r with no command waiting", self._name, line)
            return
        waiter.set_result(line)

    def _event(self, line: str) -> None:
        parts = line.split()
        try:
            kind = RigEventKind(parts[1])
            slot = int(parts[2])
        except (IndexError, ValueError):
            kind, slot = None, 0
        if kind is None or len(parts) != 3 or not 1 <= slot <= MAX_SLOTS:
            self._link_errors["bad_line"] += 1
            _LOGGER.warning("%s: ignored malformed event %r", self._name, line)
            return
        event = RigEvent(kind, slot)
        if self._on_event is not None:
            self._on_event(event)
            return
        try:
            self._events.put_nowait(event)
        except asyncio.QueueFull:
            self._link_errors["events_dropped"] += 1
            _LOGGER.warning("%s: event queue full, dropped %s %d", self._name, kind, slot)

    def _connection_lost(self, exc: Exception | None) -> None:
        expected = self._closing
        self._closing = True
        self._closed.set()
        reason = "closed by jigd" if expected else f"port lost: {exc or 'closed by the other side'}"
        error = RigClosed(self._name, reason)
        if exc is not None:
            error.__cause__ = exc
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
        if not expected:
            self._link_errors["port_error"] += 1
            _LOGGER.warning("%s: rig controller %s", self._name, reason)
            if self._on_lost is not None:
                self._on_lost(error)


def _check_slot(slot: int) -> int:
    if not 1 <= slot <= MAX_SLOTS:
        raise ValueError(f"slot {slot} is outside 1..{MAX_SLOTS}")
    return slot
