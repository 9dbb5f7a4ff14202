"""SMP frames on USB bulk endpoints: one frame per bulk transfer, ended by a short packet.

How a hub's vendor-specific USB interface carries SMP (docs/hub-protocol.md, "USB"):

- Each SMP frame (8-byte header + CBOR body, no framing bytes added) is one bulk transfer: full
  packets of wMaxPacketSize bytes, then a short packet. A frame whose length is a multiple of
  wMaxPacketSize is followed by a zero-length packet (ZLP), so a transfer always ends with a
  packet shorter than wMaxPacketSize and the receiver knows where it ends.
- The receiver checks each transfer against the SMP header's length field: a transfer that is
  not whole frames (truncated, corrupted length, trailing bytes) is dropped and counted. Every
  transfer boundary is a resynchronisation point, so one bad transfer never spoils the next.

pyusb (like libusb) hands a reader the bytes of one bulk read: all packets until a short packet,
or until the read's buffer is full. `TransferAssembler` turns such reads into transfers (a read
that came back with fewer bytes than asked for ended with a short packet; a full one may go on);
`TransferDecoder` turns transfers into frames; `split_packets` is what a sender puts on the bus.
The same classes serve the simulated device (`sim.usb_device`), with wMaxPacketSize as the read
size, because a device's OUT endpoint sees exactly that: packets, a short one ending a transfer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from drivers.framing import ALL_OPS, DEFAULT_MAX_FRAME, RawDecoder

__all__ = [
    "DEFAULT_MAX_TRANSFER",
    "FULL_SPEED_MAX_PACKET",
    "HIGH_SPEED_MAX_PACKET",
    "TransferAssembler",
    "TransferDecoder",
    "needs_zlp",
    "packet_count",
    "split_packets",
]

FULL_SPEED_MAX_PACKET: Final = 64  # wMaxPacketSize of a full-speed bulk endpoint
HIGH_SPEED_MAX_PACKET: Final = 512  # and of a high-speed one
DEFAULT_MAX_TRANSFER: Final = DEFAULT_MAX_FRAME


def needs_zlp(size: int, max_packet: int) -> bool:
    """Whether a transfer of `size` bytes must be followed by a zero-length packet.

    A transfer of 0 bytes is itself a ZLP and needs no other.
    """
    return size > 0 and size % max_packet == 0


def packet_count(size: int, max_packet: int) -> int:
    """Bulk packets (bus transactions) a transfer of `size` bytes takes, its ZLP included."""
    return size // max_packet + 1


def split_packets(data: bytes, max_packet: int, *, terminate: bool = True) -> list[bytes]:
    """The packets that carry `data` on a bulk endpoint of `max_packet` bytes.

    `terminate`: `data` is a whole transfer, so a ZLP follows when its length is a multiple of
    `max_packet`. Without it, the packets a host controller sends for one write that a later
    write may continue (libusb adds no ZLP by itself): empty data is still one ZLP.
    """
    if max_packet < 1:
        raise ValueError(f"max_packet must be at least 1, not {max_packet}")
    packets = [data[i : i + max_packet] for i in range(0, len(data), max_packet)]
    if not packets or (terminate and needs_zlp(len(data), max_packet)):
        packets.append(b"")
    return packets


@dataclass
class TransferAssembler:
    """Reassembles transfers from the chunks successive bulk reads return.

    Each chunk is what one read of `read_size` bytes gave: fewer bytes than `read_size` means a
    short packet (or a ZLP, an empty chunk) ended the transfer; exactly `read_size` means the
    buffer filled and the transfer may go on in the next read. A transfer longer than
    `max_transfer` is dropped (counted in `dropped_bytes` and `overflows`) up to its end.
    """

    read_size: int
    max_transfer: int = DEFAULT_MAX_TRANSFER
    dropped_bytes: int = 0
    overflows: int = 0
    _buf: bytearray = field(default_factory=bytearray)
    _discarding: bool = False

    def __post_init__(self) -> None:
        if self.read_size < 1:
            raise ValueError(f"read_size must be at least 1, not {self.read_size}")

    @property
    def pending(self) -> int:
        """Bytes of a transfer not finished yet."""
        return len(self._buf)

    def feed(self, chunk: bytes) -> bytes | None:
        """Take one read's bytes; return the transfer it finished, if it finished one."""
        if len(chunk) > self.read_size:
            raise ValueError(f"a read of {self.read_size} bytes returned {len(chunk)}")
        ended = len(chunk) < self.read_size
        if self._discarding:
            self.dropped_bytes += len(chunk)
            self._discarding = not ended
            return None
        self._buf += chunk
        if len(self._buf) > self.max_transfer:
            self.overflows += 1
            self.dropped_bytes += len(self._buf)
            self._buf.clear()
            self._discarding = not ended
            return None
        if not ended:
            return None
        transfer = bytes(self._buf)
        self._buf.clear()
        return transfer

    def reset(self) -> int:
        """Forget a transfer in progress (the link was reopened); return the bytes dropped."""
        n = len(self._buf)
        self.dropped_bytes += n
        self._buf.clear()
        self._discarding = False
        return n


@dataclass
class TransferDecoder:
    """Transfers to SMP frames: each transfer must be whole frames (jigd and hubs send one).

    Frames are found by the SMP header's length field and checked as the raw serial framing
    checks them (`drivers.framing.RawDecoder`: plausible header, an op this side expects, a body
    that is one CBOR map); whatever is left of a transfer is dropped. `bad_transfers` counts the
    transfers that had anything dropped, `dropped_bytes` the bytes.
    """

    max_frame: int = DEFAULT_MAX_FRAME
    accept_ops: frozenset[int] = ALL_OPS
    bad_transfers: int = 0
    _raw: RawDecoder = field(init=False)

    def __post_init__(self) -> None:
        self._raw = RawDecoder(max_frame=self.max_frame, accept_ops=self.accept_ops)

    @property
    def dropped_bytes(self) -> int:
        return self._raw.dropped_bytes

    def feed(self, transfer: bytes) -> list[bytes]:
        """The frames in one complete transfer."""
        before = self._raw.dropped_bytes
        frames = self._raw.feed(transfer)
        self._raw.reset()  # a frame never spans transfers: the rest is garbage
        if self._raw.dropped_bytes != before:
            self.bad_transfers += 1
        return frames
