"""In-memory frame transports: two connected ends, for unit tests and in-process simulation.

Frames sent on one end arrive at the other end's listener on a later turn of the event loop, as
they would from a port. With a `framing`, frames are encoded to bytes and decoded again on the
far side, fed `chunk_size` bytes at a time, so codecs are exercised too.
"""

from __future__ import annotations

import asyncio
import logging

from drivers.errors import LinkClosed
from drivers.framing import Framing
from drivers.transport import TransportBase

__all__ = ["MemoryTransport", "memory_pair"]

_LOGGER = logging.getLogger(__name__)


class MemoryTransport(TransportBase):
    """One end of an in-memory link; implements `FrameTransport`."""

    def __init__(
        self,
        name: str,
        *,
        framing: Framing | None = None,
        chunk_size: int | None = None,
        baudrate: int | None = None,
    ) -> None:
        super().__init__(name)
        self._framing = framing
        self._decoder = framing.decoder() if framing is not None else None
        self._chunk_size = chunk_size
        self._baudrate = baudrate
        self._peer: MemoryTransport | None = None
        self._closed = False
        self.frames_sent: list[bytes] = []  # every frame this end sent, for test assertions

    @property
    def baudrate(self) -> int | None:
        return self._baudrate

    @property
    def is_closed(self) -> bool:
        return self._closed

    @property
    def bytes_dropped(self) -> int:
        return self._decoder.dropped_bytes if self._decoder is not None else 0

    def wire_size(self, frame_size: int) -> int:
        return self._framing.wire_size(frame_size) if self._framing is not None else frame_size

    @property
    def buffer_overhead(self) -> int:
        return self._framing.buffer_overhead if self._framing is not None else 0

    def max_frame_in_lines(self, lines: int) -> int | None:
        return self._framing.max_frame_in_lines(lines) if self._framing is not None else None

    def send(self, frame: bytes) -> None:
        peer = self._peer
        if self._closed or peer is None:
            raise LinkClosed(self._name, "cannot send: the link is closed")
        self.frames_sent.append(frame)
        data = self._framing.encode(frame) if self._framing is not None else frame
        self._bytes_sent += len(data)
        asyncio.get_running_loop().call_soon(peer._receive, data)

    def send_bytes(self, data: bytes) -> None:
        """Put raw bytes (noise, hand-made frames) on the wire towards the peer."""
        peer = self._peer
        if self._closed or peer is None:
            raise LinkClosed(self._name, "cannot send: the link is closed")
        self._bytes_sent += len(data)
        asyncio.get_running_loop().call_soon(peer._receive, data)

    async def close(self) -> None:
        self.break_link("closed by jigd", "the other end closed the link")

    def break_link(self, reason: str, peer_reason: str | None = None) -> None:
        """Close both ends now, as a port failure would; each listener hears it once."""
        peer = self._peer
        self._shut(reason)
        if peer is not None:
            peer._shut(peer_reason or reason)

    def _shut(self, reason: str) -> None:
        if self._closed:
            return
        self._closed = True
        self._peer = None
        if self._listener is not None:
            self._listener.connection_lost(LinkClosed(self._name, reason))

    def _receive(self, data: bytes) -> None:
        if self._closed:
            return
        self._bytes_received += len(data)
        if self._decoder is None:
            self._deliver(data)
            return
        step = self._chunk_size or len(data) or 1
        for i in range(0, len(data), step):
            for frame in self._decoder.feed(data[i : i + step]):
                self._deliver(frame)

    def _deliver(self, frame: bytes) -> None:
        if self._listener is None:
            self._link_errors["no_listener"] += 1
            _LOGGER.debug("%s: frame with no listener dropped", self._name)
            return
        self._listener.frame_received(frame)


def memory_pair(
    *,
    framing: Framing | None = None,
    chunk_size: int | None = None,
    names: tuple[str, str] = ("host", "hub"),
    baudrate: int | None = None,
) -> tuple[MemoryTransport, MemoryTransport]:
    """Two connected ends: (host side, device side)."""
    a = MemoryTransport(names[0], framing=framing, chunk_size=chunk_size, baudrate=baudrate)
    b = MemoryTransport(names[1], framing=framing, chunk_size=chunk_size, baudrate=baudrate)
    a._peer, b._peer = b, a
    return a, b
