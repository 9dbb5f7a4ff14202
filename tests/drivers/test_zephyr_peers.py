"""The `smp` driver against Zephyr's own MCUmgr SMP server (native_sim executables, SMP over a
UART pty with console framing): the judge of interoperability, not our simulator.

`smp_svr.exe` is the stock sample (no `mcumgr_params`, no jig group); `smp_svr_params.exe` adds
`mcumgr_params`. Neither has a bootloader, so these tests stop at mark test; the whole flash
through an MCUboot boot step is in tests/sim/ and tests/jigd/. `-uart_rx_bytes_per_tick=0`
reads whatever the pty holds at once, as a fast USB CDC-ACM adapter delivers it: a burst of more
console lines than Zephyr's two line buffers loses the rest.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Final

import pytest

from drivers import serial
from drivers.errors import LinkTimeout, NoJigGroup
from drivers.hub_link import (
    DEFAULT_BUF_COUNT,
    DEFAULT_BUF_SIZE,
    FrameLimits,
    LinkOptions,
    SmpHubLink,
)
from drivers.smp_client import SmpClient
from firmware_catalog.mcuboot import read_image_hash
from jigd.model import DeviceModel, FirmwareVersion
from sim.images import make_manufacturer_keys, make_signed_image
from sim.native_sim import native_sim
from tests.peers import peer_flash_copy, zephyr_peer

pytestmark = pytest.mark.slow  # end to end with real processes: not in `make test-fast`

MODEL: Final = DeviceModel(0x1086, 0x57310102)
VERSION: Final = FirmwareVersion(0x04000007)
IMAGE_SIZE: Final = 200 * 1024
# Zephyr's UART transport: 2 line buffers, frames of at most 256 bytes (jigd's console default).
ZEPHYR_UART: Final = FrameLimits(line_buffers=2, mtu=256)
OPTIONS: Final = LinkOptions(timeout_s=1.0, request_retries=3, limits=ZEPHYR_UART)
UNPACED: Final = "-uart_rx_bytes_per_tick=0"


def signed_image(tmp_path: Path, size: int = IMAGE_SIZE) -> tuple[bytes, bytes]:
    """A signed MCUboot image and its image hash (SHA256 TLV)."""
    keys = make_manufacturer_keys(MODEL.manufacturer, 1)
    data = make_signed_image(keys, MODEL, VERSION, size, 1)
    path = tmp_path / "image.bin"
    path.write_bytes(data)
    return data, bytes.fromhex(read_image_hash(path))


@asynccontextmanager
async def peer_link(
    tmp_path: Path, exe: str, *args: str, options: LinkOptions = OPTIONS
) -> AsyncIterator[SmpHubLink]:
    """A link to a fresh peer process, as a console-framed serial slot opens one."""
    flash = peer_flash_copy(tmp_path)
    async with native_sim(zephyr_peer(exe), flash, *args) as peer:
        transport = await serial.open(peer.pty, 115200, "console", name=exe)
        link = SmpHubLink(SmpClient(transport, timeout_s=options.timeout_s), options=options)
        try:
            yield link
        finally:
            await link.close()


async def test_stock_zephyr_uploads_and_marks_test_with_default_params(tmp_path: Path) -> None:
    """No mcumgr_params (ENOTSUP): the link takes Zephyr's defaults and still uploads; the image
    is named by its MCUboot image hash, which the hub's image state reports."""
    image, image_hash = signed_image(tmp_path, 48 * 1024)
    async with peer_link(tmp_path, "smp_svr.exe") as link:
        assert await link.params() == (DEFAULT_BUF_SIZE, DEFAULT_BUF_COUNT)
        result = await link.upload(image)
        assert result.size == len(image)
        states = await link.mark_test(image_hash)
    secondary = next(s for s in states if s.slot == 1)
    assert secondary.hash == image_hash
    assert secondary.pending
    assert secondary.version == VERSION


async def test_stock_zephyr_has_no_jig_group(tmp_path: Path) -> None:
    async with peer_link(tmp_path, "smp_svr.exe") as link:
        assert await link.echo("hello") == "hello"
        with pytest.raises(NoJigGroup) as caught:
            await link.identify()
    assert caught.value.code == "no_jig_group"
    assert "no jig group" in str(caught.value)


@pytest.mark.parametrize("pacing", ["paced", "unpaced"])
async def test_200k_upload_completes_without_timeouts(tmp_path: Path, pacing: str) -> None:
    """With Zephyr's UART limits, an upload never overruns the line buffers, paced or not."""
    image, image_hash = signed_image(tmp_path)
    args = (UNPACED,) if pacing == "unpaced" else ()
    async with peer_link(tmp_path, "smp_svr_params.exe", *args) as link:
        result = await link.upload(image)
        report = link.sizing_report()
        states = await link.image_state()
    assert result.size == len(image)
    assert result.timeouts == 0  # a lost request, if any, was noticed by the next answer
    assert result.frame_lines == 2
    assert result.frame_size <= 256  # Zephyr's UART MTU
    assert "2-line frames" in report
    assert any(s.slot == 1 and s.hash == image_hash for s in states)


async def test_over_eager_limits_adapt_to_the_hub_unpaced(tmp_path: Path) -> None:
    """Told the hub has 6 line buffers (it has 2), the link loses requests at first, shrinks
    frame and window, and the upload completes: no LinkTimeout reaches the caller."""
    image, image_hash = signed_image(tmp_path)
    eager = LinkOptions(
        timeout_s=1.0, request_retries=3, limits=FrameLimits(line_buffers=6, mtu=384)
    )
    async with peer_link(tmp_path, "smp_svr_params.exe", UNPACED, options=eager) as link:
        try:
            result = await link.upload(image)
        except LinkTimeout as exc:  # pragma: no cover - the failure this test guards against
            pytest.fail(f"the upload did not adapt: {exc}")
        states = await link.image_state()
    assert result.drops > 0
    assert result.frame_lines is not None
    assert result.frame_lines < 6 or result.window == 1
    assert any(s.slot == 1 and s.hash == image_hash for s in states)
