"""SMP codecs: every message the driver uses round-trips through both framings, and the stream
decoders survive what a noisy cable does (garbage, splits, doubles, bad CRC, false starts)."""

from __future__ import annotations

import base64
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from smp import header as smpheader
from smp import image_management as smpimg
from smp import message as smpmsg
from smp import packet as smp_packet

from drivers import jig_group
from drivers.framing import (
    CONSOLE_LINE_MAX,
    REQUEST_OPS,
    RESPONSE_OPS,
    ConsoleDecoder,
    ConsoleFraming,
    FrameDecoder,
    Framing,
    RawDecoder,
    RawFraming,
    framing_for,
)
from tests.drivers.messages import (
    error_frames,
    request_frames,
    requests,
    response_frames,
    responses,
)

FRAMINGS: list[Framing] = [RawFraming(), ConsoleFraming()]


def _ids(framing: Framing) -> str:
    return framing.name


def feed_bytewise(decoder: FrameDecoder, data: bytes) -> list[bytes]:
    frames: list[bytes] = []
    for i in range(len(data)):
        frames += decoder.feed(data[i : i + 1])
    return frames


# --- round trips ----------------------------------------------------------------------------


@pytest.mark.parametrize("framing", FRAMINGS, ids=_ids)
@pytest.mark.parametrize("message", [*requests(), *responses()], ids=lambda m: type(m).__name__)
def test_every_message_round_trips_through_the_framing(
    framing: Framing, message: smpmsg.Request | smpmsg.Response
) -> None:
    frame = bytes(message)
    wire = framing.encode(frame)
    assert framing.wire_size(len(frame)) == len(wire)
    decoded = feed_bytewise(framing.decoder(), wire)
    assert decoded == [frame]
    again = type(message).loads(decoded[0])
    assert again.header == message.header
    assert again.model_dump(exclude={"smp_data"}) == message.model_dump(exclude={"smp_data"})


@pytest.mark.parametrize("framing", FRAMINGS, ids=_ids)
def test_error_responses_round_trip(framing: Framing) -> None:
    upload_v1, reset_v1, upload_v2, unlock_v2 = error_frames()
    for frame in error_frames():
        assert feed_bytewise(framing.decoder(), framing.encode(frame)) == [frame]

    v1 = smpimg.ImageManagementErrorV1.loads(upload_v1)
    assert v1.rc == 11
    assert v1.rsn == "locked"
    assert v1.header.op == smpheader.OP.WRITE_RSP
    assert v1.header.sequence == 20
    v2 = smpimg.ImageManagementErrorV2.loads(upload_v2)
    assert v2.err.group == 1
    assert v2.err.rc == smpimg.IMG_MGMT_ERR.INVALID_HASH
    jig = jig_group.JigErrorV2.loads(unlock_v2)
    assert jig.err.group == jig_group.JIG_GROUP_ID
    assert jig.err.rc == jig_group.JigMgmtErr.BAD_MAC
    assert smpheader.Header.loads(reset_v1[:8]).command_id == 5


def test_console_lines_are_at_most_127_bytes_and_delimited() -> None:
    frame = bytes(smpimg.ImageUploadWriteRequest(off=0, data=bytes(1500), sequence=1))
    wire = ConsoleFraming().encode(frame)
    lines = wire.split(b"\n")[:-1]
    assert len(lines) > 10
    assert lines[0][:2] == b"\x06\x09"
    assert all(line[:2] == b"\x04\x14" for line in lines[1:])
    assert all(len(line) + 1 <= CONSOLE_LINE_MAX for line in lines)


def test_raw_decoder_takes_only_the_ops_it_is_told() -> None:
    request, response = request_frames()[0], response_frames()[0]
    host = RawDecoder(accept_ops=RESPONSE_OPS)
    assert host.feed(request + response) == [response]
    assert host.dropped_bytes == len(request)
    hub = RawDecoder(accept_ops=REQUEST_OPS)
    assert hub.feed(response + request) == [request]
    assert hub.dropped_bytes == len(response)


def test_framing_for_names_and_rejects_unknown() -> None:
    assert framing_for("raw").name == "raw"
    assert framing_for("console").name == "console"
    with pytest.raises(ValueError, match="'usb'"):
        framing_for("usb")


# --- resynchronisation ----------------------------------------------------------------------

GARBAGE = b"boot: hello world\r\n\x00\xff\x17 log line\n"


@pytest.mark.parametrize("framing", FRAMINGS, ids=_ids)
def test_garbage_before_and_after_is_skipped_and_counted(framing: Framing) -> None:
    frame = response_frames()[0]
    decoder = framing.decoder()
    wire = GARBAGE + framing.encode(frame) + GARBAGE
    assert feed_bytewise(decoder, wire) == [frame]
    decoder.reset()
    assert decoder.dropped_bytes == 2 * len(GARBAGE)


@pytest.mark.parametrize("framing", FRAMINGS, ids=_ids)
def test_split_and_doubled_frames(framing: Framing) -> None:
    a, b = response_frames()[:2]
    wire = framing.encode(a) + framing.encode(b) + framing.encode(a)
    decoder = framing.decoder()
    cut = len(wire) // 3
    frames = decoder.feed(wire[:cut]) + decoder.feed(wire[cut : 2 * cut])
    frames += decoder.feed(wire[2 * cut :])
    assert frames == [a, b, a]
    assert decoder.dropped_bytes == 0
    # All at once, two copies in one read.
    assert framing.decoder().feed(wire + wire) == [a, b, a, a, b, a]


def test_console_bad_crc_drops_the_packet_and_the_next_one_decodes() -> None:
    frame = response_frames()[3]
    good = ConsoleFraming().encode(frame)
    packet = struct.pack("!H", len(frame) + 2) + frame + struct.pack("!H", 0x1234)
    bad = smp_packet.START_DELIMITER + base64.b64encode(packet) + b"\n"
    assert smp_packet.crc16_func(frame) != 0x1234
    decoder = ConsoleDecoder()
    assert decoder.feed(bad + good) == [frame]
    assert decoder.dropped_bytes == len(bad)


def test_console_corrupted_line_in_a_multi_line_packet_drops_only_that_packet() -> None:
    big = bytes(smpimg.ImageUploadWriteResponse(off=70000, sequence=3))
    frame = bytes(smpimg.ImageStatesReadResponse(images=[], sequence=4))
    long_frame = bytes(smpimg.ImageUploadWriteRequest(off=0, data=bytes(300), sequence=1))
    wire = bytearray(ConsoleFraming().encode(long_frame))
    wire[150] = ord("!")  # not base64: the line is bad
    decoder = ConsoleDecoder(max_frame=4096)
    out = decoder.feed(bytes(wire) + ConsoleFraming().encode(big) + ConsoleFraming().encode(frame))
    assert out == [big, frame]
    assert decoder.dropped_bytes > 0


def test_console_orphan_continuation_is_dropped() -> None:
    frame = response_frames()[0]
    orphan = b"\x04\x14QUJD\n"
    decoder = ConsoleDecoder()
    assert decoder.feed(orphan + ConsoleFraming().encode(frame)) == [frame]
    assert decoder.dropped_bytes == len(orphan)


@pytest.mark.parametrize(
    "noise",
    [
        b"\x06\x09",  # a start delimiter and nothing else
        b"\x06\x09abc",  # a start delimiter, then text with no newline
        b"log \x06\x09 \x04\x14 more log",  # both delimiters inside log text
        b"\x06\x09" + b"x" * 200,  # a false start longer than any line
        b"\x06\x09QUJD\n",  # a false start line that is valid base64
        b"\x06",  # half a delimiter right before the real one
    ],
)
def test_console_coincidental_start_bytes_do_not_hide_the_next_frame(noise: bytes) -> None:
    frame = response_frames()[2]
    decoder = ConsoleDecoder()
    assert decoder.feed(noise + ConsoleFraming().encode(frame)) == [frame]
    decoder.reset()
    assert decoder.dropped_bytes == len(noise)
    # The same, one byte at a time.
    decoder = ConsoleDecoder()
    assert feed_bytewise(decoder, noise + ConsoleFraming().encode(frame)) == [frame]


def _plausible_raw_header(length: int, op: int = 3) -> bytes:
    return struct.pack("!BBHHBB", (1 << 3) | op, 0, length, 1, 9, 1)


@pytest.mark.parametrize(
    "noise",
    [
        _plausible_raw_header(40) + b"\xa1",  # claims 40 body bytes, body is not one map
        _plausible_raw_header(3) + b"\xa0\x00\x00",  # a map followed by junk: not a frame
        _plausible_raw_header(1) + b"\x00",  # body is not a map
        _plausible_raw_header(0),  # empty body
        b"\x0b\x00\x00\x02\xa0",  # a truncated header start
    ],
)
def test_raw_plausible_header_in_garbage_does_not_swallow_the_next_frame(noise: bytes) -> None:
    frames = response_frames()[:3]
    wire = noise + b"".join(frames)
    decoder = RawDecoder(accept_ops=RESPONSE_OPS)
    assert decoder.feed(wire) == frames
    assert decoder.dropped_bytes == len(noise)
    decoder = RawDecoder(accept_ops=RESPONSE_OPS)
    assert feed_bytewise(decoder, wire) == frames
    assert decoder.dropped_bytes == len(noise)


def test_raw_false_header_claiming_more_than_arrives_is_cleared_by_reset() -> None:
    frame = response_frames()[0]
    decoder = RawDecoder(accept_ops=RESPONSE_OPS)
    noise = _plausible_raw_header(1000) + b"\xa1"
    assert decoder.feed(noise + frame) == []  # waiting: the header claims more bytes
    assert decoder.reset() == len(noise) + len(frame)
    assert decoder.feed(frame) == [frame]
    assert decoder.dropped_bytes == len(noise) + len(frame)


# --- bounded buffers ------------------------------------------------------------------------


def test_raw_decoder_buffer_never_exceeds_its_cap() -> None:
    cap = 512
    decoder = RawDecoder(max_frame=cap, accept_ops=RESPONSE_OPS)
    # Headers claiming up to the cap, over and over, never completed as valid CBOR.
    noise = (_plausible_raw_header(cap - 8) + b"\xbf" + bytes(range(1, 200))) * 50
    peak = 0
    for i in range(0, len(noise), 97):
        decoder.feed(noise[i : i + 97])
        peak = max(peak, len(decoder._buf))
    assert peak < cap
    # A header claiming more than the cap is never waited for.
    decoder = RawDecoder(max_frame=cap, accept_ops=RESPONSE_OPS)
    assert decoder.feed(_plausible_raw_header(cap) + b"\xa0" + bytes(cap)) == []
    assert len(decoder._buf) < 8


def test_console_decoder_holds_at_most_a_line_and_a_frame() -> None:
    cap = 1024
    decoder = ConsoleDecoder(max_frame=cap)
    # A packet that announces a length within the cap and then never ends properly.
    start = struct.pack("!H", cap) + bytes(60)
    line = b"\x06\x09" + base64.b64encode(start) + b"\n"
    cont = b"\x04\x14" + base64.b64encode(bytes(90)) + b"\n"
    peak_buf = peak_packet = 0
    stream = line + cont * 100 + b"\x06\x09" + b"A" * 5000  # and a line that never ends
    for i in range(0, len(stream), 61):
        decoder.feed(stream[i : i + 61])
        peak_buf = max(peak_buf, len(decoder._buf))
        peak_packet = max(peak_packet, len(decoder._packet or b""))
    assert peak_buf < CONSOLE_LINE_MAX
    assert peak_packet <= cap + 4 + 90
    one_mb = bytes(1 << 20)
    decoder.feed(one_mb)
    assert len(decoder._buf) <= 1


def test_oversized_console_length_is_rejected_at_once() -> None:
    decoder = ConsoleDecoder(max_frame=256)
    start = struct.pack("!H", 5000) + bytes(30)
    line = b"\x06\x09" + base64.b64encode(start) + b"\n"
    frame = response_frames()[0]
    assert decoder.feed(line + ConsoleFraming().encode(frame)) == [frame]
    assert decoder.dropped_bytes == len(line)


# --- property: garbage interleaved with frames ----------------------------------------------

POOL = response_frames()
RAW_CAP = max(len(f) for f in POOL) + 64


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.binary(max_size=60), st.sampled_from(range(len(POOL)))),
        min_size=1,
        max_size=8,
    ),
    st.binary(max_size=60),
    st.integers(min_value=1, max_value=64),
    st.sampled_from(["raw", "console"]),
)
def test_random_garbage_between_frames_never_hides_an_intact_frame(
    parts: list[tuple[bytes, int]], tail: bytes, chunk: int, name: str
) -> None:
    framing: Framing = (
        RawFraming(max_frame=RAW_CAP, accept_ops=RESPONSE_OPS)
        if name == "raw"
        else ConsoleFraming(max_frame=RAW_CAP)
    )
    decoder = framing.decoder()
    wire = b"".join(noise + framing.encode(POOL[i]) for noise, i in parts) + tail
    garbage = sum(len(noise) for noise, _ in parts) + len(tail)
    # Bytes that cannot start a frame, enough to complete any false header still waiting.
    padding = b"\x00" * RAW_CAP if name == "raw" else b"\n"
    stream = wire + padding
    frames: list[bytes] = []
    for i in range(0, len(stream), chunk):
        frames += decoder.feed(stream[i : i + chunk])
    decoder.reset()
    assert frames == [POOL[i] for _, i in parts]
    assert decoder.dropped_bytes == garbage + len(padding)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000), st.integers(min_value=1, max_value=300))
def test_pure_garbage_never_crashes_and_every_byte_is_accounted_for(
    noise: bytes, chunk: int
) -> None:
    raw = RawDecoder(max_frame=256)
    console = ConsoleDecoder(max_frame=256)
    raw_frames: list[bytes] = []
    console_frames: list[bytes] = []
    for i in range(0, len(noise), chunk):
        raw_frames += raw.feed(noise[i : i + chunk])
        console_frames += console.feed(noise[i : i + chunk])
    raw.reset()
    console.reset()
    assert raw.dropped_bytes + sum(len(f) for f in raw_frames) == len(noise)
    assert console.dropped_bytes <= len(noise)
    if not console_frames:
        assert console.dropped_bytes == len(noise)
