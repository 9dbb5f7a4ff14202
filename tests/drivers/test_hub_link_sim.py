"""End to end over a real pty and over the simulated USB bus: the `smp` driver flashes a
simulated hub (serial raw and console framing, USB bulk transfers), and resumes an upload cut by
a power loss. `transport` and `framing` come from tests/drivers/conftest.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

import pytest

from drivers.errors import DeviceDisconnected, LinkError, LinkTimeout
from drivers.hub_link import LinkOptions, SmpHubLink, await_boot, await_reset
from drivers.registry import load_driver
from drivers.smp_upload import max_chunk_data
from jigd.model import FirmwareVersion
from sim.harness import HubHandle, running_hub
from sim.hub import HubState
from sim.timing import Timing
from tests.drivers.helpers import HubLinks

TIMING: Final = Timing(
    baud=921_600,
    sector_erase_s=0.001,
    page_program_s=0.0001,
    swap_s=0.05,
    boot_s=0.02,
    reset_s=0.01,
)
NEW_VERSION: Final = FirmwareVersion(0x02000007)
BOOT_TIMEOUT_S: Final = 5.0
OPTIONS: Final = LinkOptions(timeout_s=1.0, request_retries=2)


@asynccontextmanager
async def smp_link(
    handle: HubHandle, framing: str, options: LinkOptions = OPTIONS
) -> AsyncIterator[SmpHubLink]:
    driver = load_driver("smp")
    link = await driver(handle.slot_spec(framing), name="rig1/slot1", options=options)
    assert isinstance(link, SmpHubLink)
    try:
        yield link
    finally:
        await link.close()


async def test_flash_a_simulated_hub(tmp_path: Path, transport: str, framing: str) -> None:
    async with (
        running_hub(tmp_path, timing=TIMING, framing=framing, transport=transport) as handle,
        smp_link(handle, framing) as link,
    ):
        identity = await link.identify()
        assert identity.guid == handle.spec.guid
        assert identity.model == handle.spec.model
        assert identity.firmware_version == handle.spec.firmware_version
        assert identity.locked

        await link.unlock(handle.master_key)
        assert not (await link.identify()).locked

        image = handle.make_image(NEW_VERSION, 24 * 1024)
        progress: list[int] = []
        result = await link.upload(image, lambda off, total: progress.append(off))
        assert result.size == len(image)
        assert result.match is None  # Zephyr 3.4's last answer has no `match`
        assert result.resumed_from == 0
        assert progress[-1] == len(image)

        states = await link.image_state()
        secondary = next(s for s in states if s.slot == 1)
        assert secondary.version == NEW_VERSION
        tested = await link.mark_test(secondary.hash)
        assert next(s for s in tested if s.slot == 1).pending
        assert link.link_errors["timeout"] == 0

        await link.reset()
        await await_reset(link, timeout_s=BOOT_TIMEOUT_S, pending_hash=secondary.hash)
        booted = await link.identify()
        assert booted.firmware_version == NEW_VERSION

        active = next(s for s in await link.image_state() if s.active)
        assert active.hash == secondary.hash
        assert active.version == NEW_VERSION
        assert not active.confirmed
        confirmed = await link.confirm()
        assert next(s for s in confirmed if s.active).confirmed
        await link.lock()
        assert (await link.identify()).locked

        truth = handle.hub.truth()
        assert truth["active_version"] == str(NEW_VERSION)
        assert truth["confirmed"] is True
        assert truth["locked"] is True
        assert truth["bricked"] is False
        assert link.bytes_dropped == 0
        if transport == "usb":
            # Every request was one well-formed transfer (a ZLP after any frame that filled
            # its last packet), and the device stayed on the bus across the reset.
            device = handle.usb
            assert device.out_transfers > result.chunks
            assert device.bad_out_transfers == 0
            assert device.attaches == 1


async def test_upload_cut_by_power_loss_resumes(tmp_path: Path, transport: str) -> None:
    options = LinkOptions(timeout_s=0.2, request_retries=1)
    # A hub that keeps its upload's state in flash (Zephyr 3.4 keeps it in RAM).
    resumable = TIMING.model_copy(update={"upload_state": "flash"})
    async with running_hub(
        tmp_path, timing=resumable, framing="raw", transport=transport
    ) as handle:
        links = HubLinks(handle, "raw", options)
        try:
            link = await links.open()
            await link.unlock(handle.master_key)
            buf_size, buf_count = await link.params()
            image = handle.make_image(NEW_VERSION, 64 * 1024)

            def cut_power(offset: int, total: int) -> None:
                if offset > total // 2 and handle.hub.powered:
                    handle.hub.power_off()

            with pytest.raises(LinkError) as cut:
                await link.upload(image, cut_power)
            # The serial line goes silent; a USB device leaves the bus with its power.
            expected = LinkTimeout if transport == "serial" else DeviceDisconnected
            assert isinstance(cut.value, expected), repr(cut.value)
            handle.hub.power_on()
            await handle.hub.wait_for_state(HubState.RUNNING, timeout_s=BOOT_TIMEOUT_S)
            link = await links.after_power_cycle(link)
            await await_boot(link, timeout_s=BOOT_TIMEOUT_S)

            result = await link.upload(image)
            assert result.resumed_from > len(image) // 2
            resent = result.bytes_sent - (len(image) - result.resumed_from)
            chunk = max_chunk_data(buf_size, result.resumed_from, len(image))
            assert 0 <= resent <= (buf_count - 1) * chunk  # fewer than buf_count chunks again
            truth = handle.hub.truth()
            assert truth["secondary_sha256"] is not None
        finally:
            await links.close()


async def _most_in_flight(
    tmp_path: Path, timing: Timing, size: int, transport: str, monkeypatch: pytest.MonkeyPatch
) -> int:
    """Upload an image; the most requests the client had in flight, counted at each send."""
    async with (
        running_hub(
            tmp_path / f"w{timing.buf_count}", timing=timing, framing="raw", transport=transport
        ) as handle,
        smp_link(handle, "raw") as link,
    ):
        await link.unlock(handle.master_key)
        most = 0
        submit = link.client.submit

        def counting_submit(*args: Any, **kwargs: Any) -> Any:
            nonlocal most
            sent = submit(*args, **kwargs)
            most = max(most, link.client.in_flight)
            return sent

        with monkeypatch.context() as patch:
            patch.setattr(link.client, "submit", counting_submit)
            image = handle.make_image(NEW_VERSION, size)
            result = await link.upload(image)
        assert result.size == len(image)
        assert handle.hub.frames_dropped_busy == 0  # never more than the hub can buffer
        return most


async def test_pipelining_keeps_buf_count_requests_in_flight(
    tmp_path: Path, transport: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stop-and-wait client idles the link while the hub programs each chunk; jigd keeps as
    many upload requests in flight as the hub has buffers (`buf_count`), and never more. How
    close that brings an upload to the physical bound is measured by bench/link.py (0.99 of
    the bound with raw framing), not here: tests do not time."""
    size = 64 * 1024
    (tmp_path / "w1").mkdir()
    (tmp_path / "w4").mkdir()
    base = Timing(baud=921_600, swap_s=0.05, boot_s=0.02, reset_s=0.01)
    one = base.model_copy(update={"buf_count": 1})
    four = base.model_copy(update={"buf_count": 4})
    assert await _most_in_flight(tmp_path, one, size, transport, monkeypatch) == 1
    assert await _most_in_flight(tmp_path, four, size, transport, monkeypatch) == 4
