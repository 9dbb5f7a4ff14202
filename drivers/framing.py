"""SMP framings over a byte stream: Zephyr's console framing and raw framing.

Each framing turns an SMP frame (8-byte header + CBOR body) into bytes for the wire and back.
The decoders are pure and incremental: `feed()` takes whatever bytes arrived and returns the
complete frames found so far. They tell "need more bytes" (nothing returned, bytes kept) from
"corrupt input" (bytes dropped and counted in `dropped_bytes`, the decoder resynchronises on the
next plausible frame start) and never hold more than `max_buffer` bytes.

Encoding of console packets is the `smp` package's (`smp.packet.encode`). Its decoder is a
one-frame generator that raises on the first bad byte, with no resynchronisation and no bound on
input, which a station reading a noisy cable cannot use; so the stream decoders are written here.
"""

from __future__ import annotations

import binascii
import struct
from base64 import b64decode
from dataclasses import dataclass, field
from io import BytesIO
from typing import Final, Literal, Protocol

import cbor2
from smp import image_management as smpimg
from smp import packet as smp_packet

__all__ = [
    "ALL_OPS",
    "CONSOLE_LINE_MAX",
    "REQUEST_OPS",
    "RESPONSE_OPS",
    "ConsoleDecoder",
    "ConsoleFraming",
    "FrameDecoder",
    "Framing",
    "FramingName",
    "RawDecoder",
    "RawFraming",
    "framing_for",
    "parse_header",
    "upload_frame_sizes",
]

SMP_HEADER: Final = struct.Struct("!BBHHBB")
SMP_HEADER_SIZE: Final = SMP_HEADER.size
CONSOLE_LINE_MAX: Final = 127  # Zephyr's MCUMGR_SERIAL_MAX_FRAME: a console line incl. delimiters
START: Final = smp_packet.START_DELIMITER  # b"\x06\x09"
CONTINUE: Final = smp_packet.CONTINUE_DELIMITER  # b"\x04\x14"
_LF: Final = 0x0A
DEFAULT_MAX_FRAME: Final = 16 * 1024
ALL_OPS: Final = frozenset({0, 1, 2, 3})
REQUEST_OPS: Final = frozenset({0, 2})
RESPONSE_OPS: Final = frozenset({1, 3})

FramingName = Literal["console", "raw"]


@dataclass(frozen=True, slots=True)
class SmpHeaderFields:
    """The fields of an SMP header that framing needs to judge a frame."""

    op: int
    version: int
    flags: int
    length: int
    group_id: int
    sequence: int
    command_id: int


def parse_header(data: bytes | bytearray | memoryview) -> SmpHeaderFields | None:
    """Parse the first 8 bytes as an SMP header; None if they cannot be one."""
    if len(data) < SMP_HEADER_SIZE:
        return None
    ver_op, flags, length, group_id, sequence, command_id = SMP_HEADER.unpack_from(data)
    op = ver_op & 0b111
    version = (ver_op >> 3) & 0b11
    if ver_op >> 5 or op > 3 or version > 1:
        return None
    return SmpHeaderFields(op, version, flags, length, group_id, sequence, command_id)


def _is_cbor_map(body: bytes | bytearray | memoryview) -> bool:
    """True if `body` is exactly one CBOR map (`cbor2.loads` alone ignores trailing bytes)."""
    stream = BytesIO(body)
    try:
        item = cbor2.CBORDecoder(stream).decode()
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError, RecursionError):
        return False
    return isinstance(item, dict) and stream.tell() == len(body)


class FrameDecoder(Protocol):
    """Incremental decoder of one direction of one link."""

    dropped_bytes: int

    def feed(self, data: bytes) -> list[bytes]:
        """Take newly received bytes; return every complete frame now available."""
        ...

    def reset(self) -> int:
        """Forget any partial frame (link idle or reopened); return how many bytes that dropped."""
        ...


class Framing(Protocol):
    """How SMP frames travel on a byte stream."""

    @property
    def name(self) -> FramingName: ...

    def encode(self, frame: bytes) -> bytes: ...

    def decoder(self) -> FrameDecoder: ...

    def wire_size(self, frame_size: int) -> int:
        """Bytes on the wire for a frame of `frame_size` bytes (for the physical bound)."""
        ...

    @property
    def buffer_overhead(self) -> int:
        """Bytes of the hub's `buf_size` receive buffer the framing itself takes."""
        ...

    def max_frame_in_lines(self, lines: int) -> int | None:
        """Largest SMP frame that travels in `lines` console lines; None: no lines (raw)."""
        ...


@dataclass
class RawDecoder:
    """Raw framing: SMP frames back to back, delimited by the header's length field.

    With no checksum, a plausible header is one with valid op/version bits, an op this side
    expects (`accept_ops`: requests on a hub, responses on a host), zero flags and a length within
    `max_frame`, followed by a body that decodes as a CBOR map; anything else is skipped one
    byte at a time, so a frame that follows garbage is still found. A false header that claims
    more bytes than ever arrive is cleared by the transport's idle `reset()`.
    """

    max_frame: int = DEFAULT_MAX_FRAME
    accept_ops: frozenset[int] = ALL_OPS
    dropped_bytes: int = 0
    _buf: bytearray = field(default_factory=bytearray)

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        frames: list[bytes] = []
        while len(self._buf) >= SMP_HEADER_SIZE:
            header = parse_header(self._buf)
            if (
                header is None
                or header.op not in self.accept_ops
                or header.flags != 0
                or header.length > self.max_frame - SMP_HEADER_SIZE
                or (len(self._buf) > SMP_HEADER_SIZE and self._buf[SMP_HEADER_SIZE] >> 5 != 5)
            ):
                self._drop(1)
                continue
            end = SMP_HEADER_SIZE + header.length
            if len(self._buf) < end:
                break  # need more bytes
            if not _is_cbor_map(memoryview(self._buf)[SMP_HEADER_SIZE:end]):
                self._drop(1)
                continue
            frames.append(bytes(self._buf[:end]))
            del self._buf[:end]
        return frames

    def reset(self) -> int:
        n = len(self._buf)
        self._drop(n)
        return n

    def _drop(self, n: int) -> None:
        del self._buf[:n]
        self.dropped_bytes += n


@dataclass(frozen=True, slots=True)
class RawFraming:
    """Zephyr's raw UART SMP transport: frames sent as they are."""

    max_frame: int = DEFAULT_MAX_FRAME
    accept_ops: frozenset[int] = ALL_OPS
    name: FramingName = "raw"

    def encode(self, frame: bytes) -> bytes:
        return frame

    def decoder(self) -> RawDecoder:
        return RawDecoder(max_frame=self.max_frame, accept_ops=self.accept_ops)

    def wire_size(self, frame_size: int) -> int:
        return frame_size

    @property
    def buffer_overhead(self) -> int:
        return 0

    def max_frame_in_lines(self, lines: int) -> int | None:
        return None


@dataclass
class ConsoleDecoder:
    """Console framing: base64 lines starting 0x06 0x09 (first) or 0x04 0x14 (continuation).

    The decoded packet is a 2-byte big-endian length, the SMP frame and a CRC16/XMODEM of the
    frame; the length counts frame and CRC. Bytes between packets (console log output) are
    skipped and counted; a bad line, bad base64, bad CRC or an orphan continuation drops the
    packet being assembled.
    """

    max_frame: int = DEFAULT_MAX_FRAME
    dropped_bytes: int = 0
    _buf: bytearray = field(default_factory=bytearray)
    _packet: bytearray | None = None  # decoded bytes of the packet being assembled
    _packet_wire: int = 0  # wire bytes that packet used, counted as dropped if it fails

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        frames: list[bytes] = []
        while True:
            start = self._find_delimiter()
            if start < 0:
                # Keep a last byte that may be the first half of a delimiter.
                keep = 1 if self._buf[-1:] in (START[:1], CONTINUE[:1]) else 0
                self._drop_raw(len(self._buf) - keep)
                break
            self._drop_raw(start)
            end = self._buf.find(_LF, 2, CONSOLE_LINE_MAX)
            if end < 0:
                if len(self._buf) >= CONSOLE_LINE_MAX:
                    self._drop_raw(2)  # too long to be a line: not a real delimiter
                    self._fail_packet()
                    continue
                break  # need more bytes
            restart = self._last_delimiter(end)
            if restart > 0:
                # Base64 has no 0x06/0x04: a delimiter inside the line means what came before
                # it was log text with delimiter bytes in it, and the real line starts there.
                self._drop_raw(restart)
                continue
            line = bytes(self._buf[: end + 1])
            del self._buf[: end + 1]
            frame = self._take_line(line)
            if frame is not None:
                frames.append(frame)
        return frames

    def reset(self) -> int:
        n = len(self._buf)
        self._drop_raw(n)
        self._fail_packet()
        return n

    def _last_delimiter(self, end: int) -> int:
        """Position of the last delimiter that starts after position 0 and before `end`."""
        return max(self._buf.rfind(START, 1, end), self._buf.rfind(CONTINUE, 1, end))

    def _find_delimiter(self) -> int:
        a, b = self._buf.find(START), self._buf.find(CONTINUE)
        if a < 0:
            return b
        if b < 0:
            return a
        return min(a, b)

    def _take_line(self, line: bytes) -> bytes | None:
        is_start = line[:2] == START
        try:
            chunk = b64decode(line[2:-1], validate=True)
        except binascii.Error:
            self.dropped_bytes += len(line)
            if is_start:
                self._fail_packet()
            return None
        if is_start:
            self._fail_packet()  # a new packet abandons any half-assembled one
            self._packet = bytearray()
        elif self._packet is None:
            self.dropped_bytes += len(line)  # continuation with no packet to continue
            return None
        self._packet += chunk
        self._packet_wire += len(line)
        return self._complete()

    def _complete(self) -> bytes | None:
        pkt = self._packet
        if pkt is None or len(pkt) < 2:
            return None
        length = int.from_bytes(pkt[:2], "big")
        if length < SMP_HEADER_SIZE + 2 or length > self.max_frame + 2:
            self._fail_packet()
            return None
        if len(pkt) < 2 + length:
            return None
        if len(pkt) > 2 + length:
            self._fail_packet()
            return None
        frame, crc = bytes(pkt[2:-2]), int.from_bytes(pkt[-2:], "big")
        if smp_packet.crc16_func(frame) != crc:
            self._fail_packet()
            return None
        self._packet = None
        self._packet_wire = 0
        return frame

    def _fail_packet(self) -> None:
        if self._packet is not None:
            self.dropped_bytes += self._packet_wire
        self._packet = None
        self._packet_wire = 0

    def _drop_raw(self, n: int) -> None:
        if n > 0:
            del self._buf[:n]
            self.dropped_bytes += n


@dataclass(frozen=True, slots=True)
class ConsoleFraming:
    """Zephyr's UART/CDC-ACM console SMP transport (base64 + CRC16 lines of at most 127 bytes)."""

    line_length: int = CONSOLE_LINE_MAX
    max_frame: int = DEFAULT_MAX_FRAME
    name: FramingName = "console"

    def encode(self, frame: bytes) -> bytes:
        return b"".join(smp_packet.encode(frame, line_length=self.line_length))

    def decoder(self) -> ConsoleDecoder:
        return ConsoleDecoder(max_frame=self.max_frame)

    @property
    def _b64_per_line(self) -> int:
        return ((self.line_length - smp_packet.LINE_LENGTH_SUBTRACTOR) // 4) * 4

    def wire_size(self, frame_size: int) -> int:
        b64 = 4 * -(-(frame_size + 4) // 3)
        lines = -(-b64 // self._b64_per_line)
        return b64 + 3 * lines

    def max_frame_in_lines(self, lines: int) -> int | None:
        # A packet is length (2) + frame + CRC16 (2), base64'd and cut into lines: `lines`
        # lines carry 3/4 of their base64 characters as packet bytes.
        return max(0, lines * self._b64_per_line * 3 // 4 - 4)

    @property
    def buffer_overhead(self) -> int:
        # Zephyr decodes a console packet (length, frame, CRC16) into one SMP buffer, so a frame
        # may use only buf_size - 4 bytes of it; larger frames are dropped by the hub.
        return 4


def framing_for(name: str, *, accept_ops: frozenset[int] = ALL_OPS) -> Framing:
    """The framing a slot's config names; `accept_ops` narrows what a raw decoder takes."""
    if name == "raw":
        return RawFraming(accept_ops=accept_ops)
    if name == "console":
        return ConsoleFraming()
    raise ValueError(f"unknown SMP framing {name!r}; use 'console' or 'raw'")


def upload_frame_sizes(image_size: int, buf_size: int) -> list[int]:
    """Sizes of the SMP upload request frames of an `image_size`-byte image when each request
    frame fills `buf_size` bytes (the physical bound's and the capacity plan's wire time)."""
    # Overhead of a request frame with an empty data field and a worst-case (4-byte) offset; a
    # data field of n bytes adds n plus a 3-byte CBOR length for n < 65536.
    empty = len(bytes(smpimg.ImageUploadWriteRequest(off=0xFFFF_FFFF, data=b"")))
    per_frame = max(1, buf_size - empty - 3)
    full, rest = divmod(image_size, per_frame)
    return [buf_size] * full + ([empty + 3 + rest] if rest else [])
