"""USB bulk packetisation (drivers/usb_bulk.py): frames split into packets with a ZLP where one
is due, bulk reads reassembled into transfers whatever the read size, and transfers that are
not whole frames dropped and counted without spoiling the next."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.framing import REQUEST_OPS, RESPONSE_OPS
from drivers.usb_bulk import (
    FULL_SPEED_MAX_PACKET,
    HIGH_SPEED_MAX_PACKET,
    TransferAssembler,
    TransferDecoder,
    needs_zlp,
    packet_count,
    split_packets,
)
from tests.drivers.messages import request_frames, response_frames

MPS = FULL_SPEED_MAX_PACKET


def bulk_reads(packets: list[bytes], read_size: int, max_packet: int) -> list[bytes]:
    """What successive bulk reads of `read_size` bytes return for these packets, as libusb
    returns them: packets until a short one or until the buffer is full."""
    reads: list[bytes] = []
    current = bytearray()
    for packet in packets:
        assert len(packet) <= read_size - len(current), "the read would overflow"
        current += packet
        if len(packet) < max_packet or len(current) == read_size:
            reads.append(bytes(current))
            current.clear()
    assert not current, "the packets do not end with a short packet"
    return reads


# --- packets ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "packets", "zlp"),
    [
        (0, [0], False),
        (1, [1], False),
        (63, [63], False),
        (64, [64, 0], True),
        (65, [64, 1], False),
        (128, [64, 64, 0], True),
        (200, [64, 64, 64, 8], False),
    ],
)
def test_split_packets_ends_every_transfer_with_a_short_packet(
    size: int, packets: list[int], zlp: bool
) -> None:
    data = bytes(range(256))[:size] if size <= 256 else bytes(size)
    split = split_packets(data, MPS)
    assert [len(p) for p in split] == packets
    assert b"".join(split) == data
    assert needs_zlp(size, MPS) is zlp
    assert packet_count(size, MPS) == len(packets)
    assert len(split[-1]) < MPS


def test_an_unterminated_write_is_split_without_a_zlp() -> None:
    assert [len(p) for p in split_packets(bytes(128), MPS, terminate=False)] == [64, 64]
    assert split_packets(b"", MPS, terminate=False) == [b""]  # an empty write is a ZLP
    with pytest.raises(ValueError, match="max_packet"):
        split_packets(b"x", 0)


# --- transfers from bulk reads ------------------------------------------------------------------


@pytest.mark.parametrize("read_size", [MPS, 2 * MPS, 5 * MPS, 16 * 1024])
@pytest.mark.parametrize("size", [1, 63, 64, 65, 127, 128, 129, 640, 2048, 2049])
def test_transfers_are_reassembled_from_reads_of_any_size(read_size: int, size: int) -> None:
    frame = bytes(i % 251 for i in range(size))
    assembler = TransferAssembler(read_size=read_size)
    got = [assembler.feed(r) for r in bulk_reads(split_packets(frame, MPS), read_size, MPS)]
    assert got[-1] == frame
    assert all(t is None for t in got[:-1])  # nothing before the short packet
    assert assembler.pending == 0
    assert assembler.dropped_bytes == 0


def test_a_zlp_read_ends_a_transfer_that_filled_the_buffer() -> None:
    assembler = TransferAssembler(read_size=128)
    assert assembler.feed(bytes(128)) is None  # full: maybe more to come
    assert assembler.pending == 128
    assert assembler.feed(b"") == bytes(128)  # the ZLP
    assert assembler.feed(b"") == b""  # a stray ZLP is an empty transfer


def test_a_runaway_transfer_is_dropped_up_to_its_end() -> None:
    assembler = TransferAssembler(read_size=64, max_transfer=128)
    assert [assembler.feed(bytes(64)) for _ in range(3)] == [None, None, None]
    assert assembler.overflows == 1
    assert assembler.feed(bytes(64)) is None  # still the same runaway transfer
    assert assembler.feed(b"end") is None  # its short packet ends it
    assert assembler.dropped_bytes == 4 * 64 + 3
    assert assembler.feed(b"next") == b"next"  # and the next transfer is whole


def test_a_read_larger_than_asked_for_is_a_bug() -> None:
    with pytest.raises(ValueError, match="returned 65"):
        TransferAssembler(read_size=64).feed(bytes(65))
    with pytest.raises(ValueError, match="read_size"):
        TransferAssembler(read_size=0)


def test_reset_drops_a_partial_transfer() -> None:
    assembler = TransferAssembler(read_size=64)
    assembler.feed(bytes(64))
    assert assembler.reset() == 64
    assert assembler.feed(b"abc") == b"abc"


# --- frames from transfers ----------------------------------------------------------------------


@pytest.mark.parametrize("frame", response_frames(), ids=lambda f: f[:8].hex())
def test_every_response_round_trips_through_packets(frame: bytes) -> None:
    assembler = TransferAssembler(read_size=MPS)  # the shortest read a host may use
    decoder = TransferDecoder(accept_ops=RESPONSE_OPS)
    frames: list[bytes] = []
    for chunk in bulk_reads(split_packets(frame, MPS), MPS, MPS):
        transfer = assembler.feed(chunk)
        if transfer is not None:
            frames += decoder.feed(transfer)
    assert frames == [frame]
    assert (decoder.bad_transfers, decoder.dropped_bytes) == (0, 0)


@given(
    st.lists(st.sampled_from(request_frames()), min_size=1, max_size=8),
    st.sampled_from([FULL_SPEED_MAX_PACKET, HIGH_SPEED_MAX_PACKET]),
    st.integers(min_value=1, max_value=40),
)
def test_frames_cross_any_packet_and_read_size(
    frames: list[bytes], max_packet: int, read_packets: int
) -> None:
    read_size = read_packets * max_packet
    assembler = TransferAssembler(read_size=read_size)
    decoder = TransferDecoder(accept_ops=REQUEST_OPS)
    packets = [p for frame in frames for p in split_packets(frame, max_packet)]
    got: list[bytes] = []
    for chunk in bulk_reads(packets, read_size, max_packet):
        transfer = assembler.feed(chunk)
        if transfer is not None:
            got += decoder.feed(transfer)
    assert got == frames
    assert decoder.bad_transfers == 0


def test_a_transfer_that_is_not_whole_frames_is_dropped_and_the_next_decodes() -> None:
    frame, other = response_frames()[:2]
    decoder = TransferDecoder(accept_ops=RESPONSE_OPS)
    assert decoder.feed(frame[:-1]) == []  # truncated: its header promises one byte more
    assert decoder.feed(frame + b"\x00\x01") == [frame]  # trailing garbage goes
    assert decoder.feed(b"\xff" * 40) == []  # no header at all
    corrupt = bytearray(frame)
    corrupt[2:4] = (len(frame)).to_bytes(2, "big")  # length field too long by 8
    assert decoder.feed(bytes(corrupt)) == []
    assert decoder.feed(frame + other) == [frame, other]  # two whole frames are fine
    assert decoder.feed(b"") == []  # a stray ZLP is nothing
    assert decoder.bad_transfers == 4
    assert decoder.dropped_bytes == (len(frame) - 1) + 2 + 40 + len(frame)


def test_a_host_drops_requests_and_a_hub_drops_responses() -> None:
    request, response = request_frames()[0], response_frames()[0]
    host = TransferDecoder(accept_ops=RESPONSE_OPS)
    assert host.feed(request) == []
    assert host.bad_transfers == 1
    hub = TransferDecoder(accept_ops=REQUEST_OPS)
    assert hub.feed(response) == []
    assert hub.feed(request) == [request]
