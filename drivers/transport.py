"""The frame transport interface: what the SMP client needs from a link, whatever carries it.

A transport sends whole SMP frames and hands whole received frames to one listener; how frames
travel (serial framings, USB transfers, memory) is its business. `SerialTransport` and
`MemoryTransport` and `UsbTransport` implement it, on `TransportBase` for what they keep alike.
"""

from __future__ import annotations

from collections import Counter
from typing import Protocol

from drivers.errors import LinkError

__all__ = ["FrameListener", "FrameTransport", "TransportBase"]


class FrameListener(Protocol):
    """Receives what a transport gets, on the event loop."""

    def frame_received(self, frame: bytes) -> None:
        """A complete SMP frame (header + CBOR body) arrived."""
        ...

    def connection_lost(self, error: LinkError) -> None:
        """The link is gone for good; `error` says why (LinkClosed after a clean close)."""
        ...


class FrameTransport(Protocol):
    """A link that carries SMP frames both ways."""

    @property
    def name(self) -> str:
        """Label for messages and logs (slot label or port URL)."""
        ...

    @property
    def baudrate(self) -> int | None:
        """Line speed in baud, or None where there is no such thing."""
        ...

    @property
    def is_closed(self) -> bool: ...

    @property
    def bytes_sent(self) -> int: ...

    @property
    def bytes_received(self) -> int: ...

    @property
    def bytes_dropped(self) -> int:
        """Received bytes the decoder discarded as noise or corrupt frames."""
        ...

    @property
    def link_errors(self) -> Counter[str]:
        """Link faults by kind (metric `link_errors_total{kind}`)."""
        ...

    def wire_size(self, frame_size: int) -> int:
        """Bytes a frame of `frame_size` bytes takes on the wire."""
        ...

    @property
    def buffer_overhead(self) -> int:
        """Bytes of the hub's SMP buffer the transport's framing uses besides the frame."""
        ...

    def max_frame_in_lines(self, lines: int) -> int | None:
        """Largest frame that fits `lines` console lines; None when the link has no lines."""
        ...

    def set_listener(self, listener: FrameListener | None) -> None:
        """Deliver received frames and the loss of the link to `listener`."""
        ...

    def send(self, frame: bytes) -> None:
        """Queue one SMP frame for sending; raises LinkClosed if the link is closed."""
        ...

    async def close(self) -> None:
        """Close the link and wait (bounded) until it is closed; idempotent."""
        ...


class TransportBase:
    """What every transport keeps alike: its name, byte counters, link faults, its listener."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._listener: FrameListener | None = None
        self._bytes_sent = 0
        self._bytes_received = 0
        self._link_errors: Counter[str] = Counter()

    @property
    def name(self) -> str:
        return self._name

    @property
    def bytes_sent(self) -> int:
        return self._bytes_sent

    @property
    def bytes_received(self) -> int:
        return self._bytes_received

    @property
    def link_errors(self) -> Counter[str]:
        return self._link_errors

    def set_listener(self, listener: FrameListener | None) -> None:
        self._listener = listener
