"""End to end over a real pty: the `smp` driver flashes a simulated hub, in both framings, and
resumes an upload cut by a power loss."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest

from drivers.errors import LinkTimeout
from drivers.hub_link import LinkOptions, SmpHubLink, await_boot
from drivers.registry import load_driver
from drivers.smp_upload import max_chunk_data
from jigd.model import FirmwareVersion
from sim.harness import HubHandle, running_hub
from sim.hub import HubState
from sim.timing import Timing

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


@dataclass(frozen=True)
class Slot:
    """What a slot config gives the driver."""

    port: str
    framing: str
    baudrate: int
    slot: int = 1
    transport: str = "serial"


@asynccontextmanager
async def smp_link(
    handle: HubHandle, framing: str, options: LinkOptions = OPTIONS
) -> AsyncIterator[SmpHubLink]:
    driver = load_driver("smp")
    link = await driver(
        Slot(handle.path, framing, handle.timing.baud), name="rig1/slot1", options=options
    )
    assert isinstance(link, SmpHubLink)
    try:
        yield link
    finally:
        await link.close()


@pytest.mark.parametrize("framing", ["raw", "console"])
async def test_flash_a_simulated_hub(tmp_path: Path, framing: str) -> None:
    async with (
        running_hub(tmp_path, timing=TIMING, framing=framing) as handle,
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
        assert result.match is True
        assert result.resumed_from == 0
        assert progress[-1] == len(image)

        states = await link.image_state()
        secondary = next(s for s in states if s.slot == 1)
        assert secondary.version == NEW_VERSION
        tested = await link.mark_test(secondary.hash)
        assert next(s for s in tested if s.slot == 1).pending
        assert link.link_errors["timeout"] == 0

        await link.reset()
        booted = await await_boot(link, timeout_s=BOOT_TIMEOUT_S)
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


async def test_upload_cut_by_power_loss_resumes(tmp_path: Path) -> None:
    options = LinkOptions(timeout_s=0.2, request_retries=1)
    async with (
        running_hub(tmp_path, timing=TIMING, framing="raw") as handle,
        smp_link(handle, "raw", options) as link,
    ):
        await link.unlock(handle.master_key)
        buf_size, buf_count = await link.params()
        image = handle.make_image(NEW_VERSION, 64 * 1024)

        def cut_power(offset: int, total: int) -> None:
            if offset > total // 2 and handle.hub.powered:
                handle.hub.power_off()

        with pytest.raises(LinkTimeout):
            await link.upload(image, cut_power)
        handle.hub.power_on()
        await handle.hub.wait_for_state(HubState.RUNNING, timeout_s=BOOT_TIMEOUT_S)
        await await_boot(link, timeout_s=BOOT_TIMEOUT_S)

        result = await link.upload(image)
        assert result.resumed_from > len(image) // 2
        assert result.match is True
        resent = result.bytes_sent - (len(image) - result.resumed_from)
        chunk = max_chunk_data(buf_size, result.resumed_from, len(image))
        assert 0 <= resent <= (buf_count - 1) * chunk  # fewer than buf_count chunks again
        truth = handle.hub.truth()
        assert truth["secondary_sha256"] is not None


async def _upload_time(tmp_path: Path, buf_count: int, size: int) -> float:
    timing = Timing(baud=921_600, buf_count=buf_count, swap_s=0.05, boot_s=0.02, reset_s=0.01)
    async with (
        running_hub(tmp_path / f"w{buf_count}", timing=timing, framing="raw") as handle,
        smp_link(handle, "raw") as link,
    ):
        await link.unlock(handle.master_key)
        result = await link.upload(handle.make_image(NEW_VERSION, size))
        assert result.match is True
        return result.duration_s


async def test_pipelining_keeps_the_wire_busy(tmp_path: Path) -> None:
    """At the sim's default flash timing a stop-and-wait client idles the wire while the hub
    programs each chunk; with buf_count 4 in flight the wire stays busy, close to the physical
    bound (measured about 0.98 on an idle machine; the threshold leaves room for a busy CI)."""
    size = 64 * 1024
    (tmp_path / "w1").mkdir()
    (tmp_path / "w4").mkdir()
    stop_and_wait = await _upload_time(tmp_path, 1, size)
    pipelined = await _upload_time(tmp_path, 4, size)
    assert stop_and_wait / pipelined >= 1.2, (stop_and_wait, pipelined)
    bound_s = size * 10 / 921_600
    assert bound_s / pipelined >= 0.85, (bound_s, pipelined)
