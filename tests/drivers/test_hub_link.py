"""SmpHubLink over an in-memory link to a scripted hub: commands, unlock, pipelined and resumed
upload, recovery from lost chunks and restarts, and the chunking math."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from smp import image_management as smpimg

from drivers.errors import (
    AccessDenied,
    BootTimeout,
    ImageRejected,
    LinkTimeout,
    UnexpectedResponse,
    UnlockRefused,
)
from drivers.framing import ConsoleFraming
from drivers.hub_link import (
    FrameLimits,
    HubIdentity,
    LinkOptions,
    SmpHubLink,
    await_boot,
    parse_image_version,
)
from drivers.memory import memory_pair
from drivers.smp_client import SmpClient
from drivers.smp_upload import (
    GROW_AFTER_CHUNKS,
    PROBE_AFTER_CHUNKS,
    UploadSizing,
    cbor_head_size,
    max_chunk_data,
)
from jigd.model import DeviceModel, FirmwareVersion, Guid, IdentifierError
from sim.hub import UploadRecord
from tests.drivers.fake_hub import GUID, MASTER_KEY, FakeHub, mcuboot_like

FAST = LinkOptions(timeout_s=0.2, request_retries=2)


@asynccontextmanager
async def hub_link(
    options: LinkOptions = FAST, **hub_args: Any
) -> AsyncIterator[tuple[SmpHubLink, FakeHub]]:
    host, device = memory_pair(names=("rig1/slot2", "hub"))
    hub = FakeHub(device, **hub_args)
    link = SmpHubLink(SmpClient(host, timeout_s=options.timeout_s), options=options)
    try:
        yield link, hub
    finally:
        await link.close()
        hub.close()


def image_of(size: int) -> bytes:
    """`size` random bytes behind an MCUboot magic: a first chunk the hub takes."""
    return mcuboot_like(os.urandom(size - 32))


# --- commands -------------------------------------------------------------------------------


async def test_identify_unlock_lock() -> None:
    async with hub_link(locked=True) as (link, hub):
        identity = await link.identify()
        assert identity == HubIdentity(
            guid=Guid.from_bytes(GUID),
            model=DeviceModel(0x1086, 0x57310102),
            firmware_version=FirmwareVersion(0x01000000),
            locked=True,
        )
        await link.unlock(MASTER_KEY)
        assert not hub.locked
        assert (await link.identify()).locked is False
        await link.lock()
        assert hub.is_locked()
        assert await link.echo("ping") == "ping"
        assert await link.params() == (512, 4)


async def test_wrong_master_key_is_refused_without_showing_the_key() -> None:
    async with hub_link(locked=True) as (link, hub):
        wrong = b"w" * 32
        with pytest.raises(UnlockRefused) as caught:
            await link.unlock(wrong)
        assert caught.value.group_rc == 1
        assert caught.value.error_name == "BAD_MAC"
        assert caught.value.code == "unlock_refused"
        text = str(caught.value)
        assert "master key" in text
        assert wrong.hex() not in text
        assert "www" not in text
        assert hub.locked


async def test_locked_hub_denies_upload_state_write_and_reset() -> None:
    async with hub_link(locked=True) as (link, _hub):
        with pytest.raises(AccessDenied):
            await link.upload(image_of(1000))
        with pytest.raises(AccessDenied):
            await link.mark_test(b"\x00" * 32)
        with pytest.raises(AccessDenied):
            await link.reset()


async def test_image_state_parses_zephyr_versions() -> None:
    async with hub_link() as (link, hub):
        hub.hold_secondary(b"\x02" * 32)
        slots = await link.image_state()
        assert [s.slot for s in slots] == [0, 1]
        assert slots[0].version == FirmwareVersion(0x01000000)
        assert slots[0].active
        assert slots[0].confirmed
        assert slots[1].version == FirmwareVersion(0x04000007)
        assert slots[1].hash == b"\x02" * 32
        assert not slots[1].active
        assert (await link.confirm())[0].active
        assert (await link.mark_test(b"\x02" * 32))[1].hash == b"\x02" * 32
        await link.reset()
        assert hub.resets == 1


@pytest.mark.parametrize(
    ("text", "value"),
    [("4.0.0", 0x04000000), ("4.0.0.7", 0x04000007), ("1.2.3+4", 0x01020304), ("0.0.0", 0)],
)
def test_parse_image_version(text: str, value: int) -> None:
    assert parse_image_version(text) == FirmwareVersion(value)


@pytest.mark.parametrize("text", ["4.0", "4.0.0.0.1", "v4.0.0", "256.0.0", ""])
def test_parse_image_version_rejects(text: str) -> None:
    with pytest.raises(IdentifierError):
        parse_image_version(text)


async def test_await_boot_polls_until_the_hub_answers() -> None:
    async with hub_link() as (link, hub):
        hub.silent = True
        with pytest.raises(BootTimeout, match=r"did not boot: no answer to echo within 0\.3 s"):
            await await_boot(link, timeout_s=0.3, poll_timeout_s=0.05, poll_interval_s=0.01)
        hub.silent = False
        await await_boot(link, timeout_s=1.0, poll_timeout_s=0.1)
        identity = await link.identify()
        assert identity.guid == Guid.from_bytes(GUID)


async def test_boot_polls_are_no_link_errors_but_a_boot_past_its_limit_is() -> None:
    """Issue 14, defect 5: every unanswered poll of a boot wait counted as a link `timeout`
    (and its resends as `retry`): 123 for 8 healthy hubs. A booting hub is expected to be
    silent; only a boot wait that passes its limit counts, once, as `boot_timeout`."""
    async with hub_link() as (link, hub):
        hub.silent = True
        asyncio.get_running_loop().call_later(0.5, setattr, hub, "silent", False)
        await await_boot(link, timeout_s=2.0, poll_timeout_s=0.05, poll_interval_s=0.01)
        assert len(hub.frame_sizes) > 5  # it was polled while silent
        assert link.link_errors == {}
        hub.silent = True
        with pytest.raises(BootTimeout):
            await await_boot(link, timeout_s=0.3, poll_timeout_s=0.05, poll_interval_s=0.01)
        assert link.link_errors == {"boot_timeout": 1}
        with pytest.raises(LinkTimeout):  # a request of the procedure still counts
            await link.echo("are you there?")
        assert link.link_errors["timeout"] == FAST.request_retries + 1
        assert link.link_errors["retry"] == FAST.request_retries


async def test_bad_identity_is_an_unexpected_response() -> None:
    def short_guid(frame: bytes, reply: bytes) -> bytes:
        return reply.replace(GUID, GUID[:7] + b"") if frame[4:6] == b"\x00\x40" else reply

    async with hub_link() as (link, hub):
        hub.rewrite_reply = short_guid
        with pytest.raises(UnexpectedResponse):
            await link.identify()


# --- upload ---------------------------------------------------------------------------------


async def test_upload_is_pipelined_in_full_frames_and_verified() -> None:
    image = image_of(20_000)
    progress: list[tuple[int, int]] = []
    async with hub_link(buf_size=512, buf_count=4, handle_s=0.001) as (link, hub):
        result = await link.upload(image, lambda off, total: progress.append((off, total)))
        assert hub.upload is not None
        assert bytes(hub.upload.data) == image
        assert result.match is True
        assert result.size == result.bytes_sent == len(image)
        assert result.resumed_from == 0
        assert result.retries == result.resyncs == 0
        upload_frames = hub.frame_sizes[1:]  # after mcumgr_params
        assert max(upload_frames) <= 512
        assert all(size >= 511 for size in upload_frames[:-1])
        assert result.chunks == len(upload_frames)
        assert hub.dropped_busy == 0
        assert hub.max_queued == 4  # the window was used, and never overrun
        assert progress[-1] == (len(image), len(image))
        offsets = [off for off, _ in progress]
        assert offsets == sorted(set(offsets))


async def test_upload_accepts_a_memoryview_and_a_single_buffer_hub() -> None:
    image = image_of(3000)
    async with hub_link(buf_size=256, buf_count=1) as (link, hub):
        result = await link.upload(memoryview(image))
        assert hub.upload is not None
        assert bytes(hub.upload.data) == image
        assert result.match is True
        assert hub.max_queued == 1


async def test_upload_resumes_where_the_hub_got_to() -> None:
    image = image_of(30_000)
    already = 17_000
    async with hub_link(buf_size=512, buf_count=4) as (link, hub):
        hub.upload = UploadRecord(
            sha=hashlib.sha256(image).digest(),
            length=len(image),
            data=bytearray(image[:already]),
        )
        result = await link.upload(image)
        assert result.resumed_from == already
        assert bytes(hub.upload.data) == image
        chunk = max_chunk_data(512, 512, len(image))
        resent = result.bytes_sent - (len(image) - already)
        assert 0 < resent < 4 * chunk  # fewer than buf_count chunks it already had


async def test_a_different_unfinished_upload_is_started_over() -> None:
    image = image_of(5000)
    async with hub_link() as (link, hub):
        hub.upload = UploadRecord(sha=b"\x00" * 32, length=len(image), data=bytearray(2000))
        result = await link.upload(image)
        assert result.resumed_from == 0
        assert bytes(hub.upload.data) == image


@pytest.mark.parametrize("lost", ["request", "response"])
async def test_lost_chunk_is_resent_from_the_hubs_offset(lost: str) -> None:
    image = image_of(12_000)
    faults = {3, 4} if lost == "request" else {5}
    key = "drop_upload_requests" if lost == "request" else "drop_upload_responses"
    async with hub_link(FAST, buf_size=512, buf_count=4, **{key: faults}) as (link, hub):
        result = await link.upload(image)
        assert hub.upload is not None
        assert bytes(hub.upload.data) == image
        assert result.match is True
        assert result.retries >= 1
        if lost == "request":
            assert result.bytes_sent > len(image)  # the dropped chunks were sent again
        else:
            assert result.bytes_sent == len(image)  # the chunk was written: nothing resent
        assert result.duration_s < FAST.timeout_s  # a later answer told, no timeout waited


async def test_hub_that_forgets_the_upload_gets_it_again_from_zero() -> None:
    image = image_of(8000)
    async with hub_link(forget_upload_at=4000) as (link, hub):
        result = await link.upload(image)
        assert hub.upload is not None
        assert bytes(hub.upload.data) == image
        assert result.resyncs >= 1
        assert result.bytes_sent >= len(image) + 4000


async def test_silent_hub_fails_with_a_bounded_link_timeout() -> None:
    async with hub_link(LinkOptions(timeout_s=0.05, request_retries=2)) as (link, hub):
        await link.params()
        hub.drop_upload_requests = set(range(1000))
        with pytest.raises(LinkTimeout) as caught:
            await link.upload(image_of(5000))
        assert caught.value.attempts == 3
        assert "image upload" in str(caught.value)
        await asyncio.sleep(0)
        assert link.client.in_flight == 0


async def test_cancelled_upload_leaves_no_unsettled_chunk() -> None:
    """Cancelled while it waits for an answer (a drain, a rig going down), then the link closes:
    every chunk's future is settled, none reports an exception nobody retrieved."""
    loop = asyncio.get_running_loop()
    reports: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reports.append(context))
    try:
        async with hub_link(LinkOptions(timeout_s=5.0, request_retries=2)) as (link, hub):
            await link.params()
            hub.drop_upload_requests = set(range(1000))
            upload = asyncio.create_task(link.upload(image_of(20000)))
            await asyncio.sleep(0.1)
            upload.cancel()
            with pytest.raises(asyncio.CancelledError):
                await upload
        del upload
        gc.collect()
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(previous)
    assert [r["message"] for r in reports] == []


async def test_hash_mismatch_is_image_rejected() -> None:
    image = image_of(3000)

    def corrupt(frame: bytes) -> bytes:
        if frame[4:6] != b"\x00\x01" or frame[7] != 1:
            return frame
        req = smpimg.ImageUploadWriteRequest.loads(frame)
        if req.off != 0:
            return frame
        # Damage the first chunk (past the image header) as a bad cable would.
        data = req.data
        return frame.replace(data, data[:-1] + bytes([data[-1] ^ 0xFF]), 1)

    async with hub_link() as (link, hub):
        hub.rewrite_request = corrupt
        with pytest.raises(ImageRejected, match="INVALID_HASH") as caught:
            await link.upload(image)
        assert caught.value.code == "image_rejected"


async def test_match_false_is_image_rejected() -> None:
    async with hub_link(report_match=False) as (link, _hub):
        with pytest.raises(ImageRejected, match="sha256"):
            await link.upload(image_of(2000))


async def test_empty_image_is_refused() -> None:
    async with hub_link() as (link, _hub):
        with pytest.raises(ValueError, match="empty"):
            await link.upload(b"")


async def test_link_errors_merge_transport_client_and_retries() -> None:
    async with hub_link(LinkOptions(timeout_s=0.05, request_retries=1)) as (link, hub):
        hub.silent = True
        with pytest.raises(LinkTimeout):
            await link.echo("x")
        errors = link.link_errors
        assert errors["timeout"] == 2
        assert errors["retry"] == 1


# --- chunking math --------------------------------------------------------------------------


def _frame_size(off: int, n: int, total: int) -> int:
    if off == 0:
        req = smpimg.ImageUploadWriteRequest(
            off=0, data=bytes(n), image=0, len=total, sha=b"\x00" * 32
        )
    else:
        req = smpimg.ImageUploadWriteRequest(off=off, data=bytes(n))
    return len(req.BYTES)


@settings(max_examples=300, deadline=None)
@given(
    st.integers(min_value=128, max_value=9000),
    st.integers(min_value=1, max_value=2**32 - 1),
    st.data(),
)
def test_chunk_is_the_largest_that_fits_buf_size(
    buf_size: int, total: int, data: st.DataObject
) -> None:
    off = data.draw(st.one_of(st.just(0), st.integers(min_value=0, max_value=total - 1)))
    n = max_chunk_data(buf_size, off, total)
    assert 1 <= n <= total - off
    assert _frame_size(off, n, total) <= buf_size
    if n < total - off:
        assert _frame_size(off, n + 1, total) > buf_size


@pytest.mark.parametrize(
    ("value", "size"),
    [(0, 1), (23, 1), (24, 2), (255, 2), (256, 3), (65535, 3), (65536, 5), (2**32, 9)],
)
def test_cbor_head_size(value: int, size: int) -> None:
    assert cbor_head_size(value) == size


# --- adaptive sizing on console links ---------------------------------------------------------


def test_sizing_shrinks_on_loss_and_grows_back_to_a_cap() -> None:
    sizing = UploadSizing(max_window=4, max_lines=2, start_window=1)

    def answer(n: int) -> None:
        for _ in range(n):
            sizing.answered()

    answer(GROW_AFTER_CHUNKS)
    assert (sizing.lines, sizing.window) == (2, 2)
    answer(2 * GROW_AFTER_CHUNKS)
    assert sizing.window == 4
    assert sizing.drop()  # a window of 4 overran the hub: halve it, never 4 again (for now)
    assert (sizing.window, sizing.max_window) == (2, 3)
    answer(4 * GROW_AFTER_CHUNKS)
    assert sizing.window == 3  # grown back, to the cap
    # Losses at a window of one: two are noise, a third in a row halves the frame's lines.
    sizing = UploadSizing(max_window=4, max_lines=2, start_window=1)
    assert not sizing.drop()
    assert not sizing.drop()
    assert sizing.drop()
    assert (sizing.lines, sizing.max_lines) == (1, 1)
    assert sizing.drops == 3
    # A long run of answers probes one step further again.
    answer(PROBE_AFTER_CHUNKS * 2)
    assert sizing.max_lines == 2
    assert sizing.lines == 2


def test_links_without_lines_do_not_adapt() -> None:
    sizing = UploadSizing(max_window=4, max_lines=None)
    assert not sizing.drop()
    for _ in range(3 * GROW_AFTER_CHUNKS):
        sizing.answered()
    assert (sizing.window, sizing.lines, sizing.drops) == (4, None, 1)


async def test_console_frames_fit_the_line_buffers_and_the_first_holds_the_header() -> None:
    """With one line buffer, frames are one console line, except the first upload request: it
    carries `len` and `sha` too, and still at least the 32-byte MCUboot header (Zephyr refuses
    less), so it takes two lines."""
    host, device = memory_pair(framing=ConsoleFraming(), names=("rig1/slot2", "hub"))
    hub = FakeHub(device, buf_size=384)
    options = LinkOptions(timeout_s=0.5, limits=FrameLimits(line_buffers=1, mtu=None))
    link = SmpHubLink(SmpClient(host, timeout_s=options.timeout_s), options=options)
    try:
        image = image_of(3000)
        result = await link.upload(image)
    finally:
        await link.close()
        hub.close()
    assert hub.upload is not None
    assert bytes(hub.upload.data) == image
    one_line = ConsoleFraming().max_frame_in_lines(1)
    assert one_line is not None
    first = hub.upload_requests[0]
    assert first[0] == 0
    assert first[1] >= 32
    upload_frames = hub.frame_sizes[-len(hub.upload_requests) :]
    assert upload_frames[0] > one_line
    assert max(upload_frames[1:]) <= one_line
    assert (result.frame_lines, result.frame_size, result.drops) == (1, one_line, 0)
    assert result.window == 4  # started at one; the hub answered every request: grown to 4
    assert "1-line frames" in link.sizing_report()
