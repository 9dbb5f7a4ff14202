"""The USB transport (drivers/usb.py) through pyusb's own code and the simulated USB bus: what
`open` refuses and why, ZLPs after frames that fill their last packet, garbage transfers dropped
and counted, a cable pulled mid-upload failing every pending request with DeviceDisconnected,
and a new link resuming the upload once the cable is back."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from pathlib import Path
from typing import Final

import pytest
from smp import os_management as smpos

from drivers import usb as usb_transport
from drivers.errors import DeviceDisconnected, PortOpenFailed
from drivers.hub_link import LinkOptions, SmpHubLink
from drivers.usb import ATTACH_POLL_S, parse_port_path
from jigd.model import FirmwareVersion
from sim.harness import HubHandle, HubSpec, running_hub
from sim.timing import Timing
from tests.drivers.helpers import HubLinks, eventually

TIMING: Final = Timing(sector_erase_s=0.001, page_program_s=0.0001, swap_s=0.05, boot_s=0.02)
OPTIONS: Final = LinkOptions(timeout_s=0.5, request_retries=1)
NEW_VERSION: Final = FirmwareVersion(0x02000007)
SHORT_ATTACH_S: Final = 0.3


def usb_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.endswith((" usb rx", " usb tx"))]


async def open_raw(handle: HubHandle, **changes: object) -> usb_transport.UsbTransport:
    args: dict[str, object] = {
        "vendor_id": handle.usb_vendor_id,
        "product_id": handle.usb_product_id,
        "backend": handle.usb_backend,
        "name": "rig1/slot1",
        "attach_timeout_s": SHORT_ATTACH_S,
    }
    args.update(changes)
    port = str(args.pop("port", handle.path))
    return await usb_transport.open(port, **args)  # type: ignore[arg-type]  # test kwargs


def test_port_paths() -> None:
    assert parse_port_path("1-1.3") == (1, (1, 3))
    assert parse_port_path("2-4") == (2, (4,))
    assert usb_transport.format_port_path(1, (2, 3)) == "1-2.3"
    for bad in ("1.3", "1-", "0-1", "1-1.0", "/dev/ttyUSB0", "1-1.2.3.4.5.6.7.8"):
        with pytest.raises(ValueError, match="not a USB port path"):
            parse_port_path(bad)


async def test_open_refuses_what_it_cannot_use(tmp_path: Path) -> None:
    async with running_hub(tmp_path, spec=HubSpec(locked=False), transport="usb") as handle:
        with pytest.raises(PortOpenFailed, match="not a USB port path"):
            await open_raw(handle, port="/dev/ttyUSB0")
        with pytest.raises(PortOpenFailed, match=r"no USB backend for 'acme://x'.*sim\+unix://"):
            await open_raw(handle, backend="acme://x")
        with pytest.raises(PortOpenFailed, match=r"1-1\.9.*no device at that port within 0\.3 s"):
            await open_raw(handle, port="1-1.9")
        with pytest.raises(PortOpenFailed, match="the device there is 2fe3:0100, not 2fe3:0bad"):
            await open_raw(handle, product_id=0x0BAD)
        gone = f"sim+unix://{tmp_path / 'no-such.sock'}"
        with pytest.raises(PortOpenFailed, match=r"enumeration failed.*cannot reach"):
            await open_raw(handle, backend=gone)

        first = await open_raw(handle)
        try:
            with pytest.raises(PortOpenFailed, match="claimed by another program"):
                await open_raw(handle)
        finally:
            await first.close()
        await first.close()  # idempotent
        second = await open_raw(handle)  # the interface was given back
        await second.close()
        assert usb_threads() == []


async def test_frames_that_fill_their_last_packet_end_with_a_zlp(tmp_path: Path) -> None:
    """The device hands an OUT transfer to the hub only when a short packet ends it: without
    the ZLP a 64-byte frame would never arrive, and each of these echoes would time out."""
    async with running_hub(tmp_path, timing=TIMING, transport="usb") as handle:
        links = HubLinks(handle, options=OPTIONS)
        try:
            link = await links.open()
            device = handle.usb
            before = device.out_transfers
            sizes = []
            for target in (64, 128, 192, 100, 65):
                text = "x"
                while len(bytes(smpos.EchoWriteRequest(d=text))) < target:
                    text += "x"
                sizes.append(len(bytes(smpos.EchoWriteRequest(d=text))))
                assert await link.echo(text) == text
            assert sizes == [64, 128, 192, 100, 65]
            assert device.out_transfers - before == 5
            assert device.bad_out_transfers == 0
            assert link.link_errors["timeout"] == 0
        finally:
            await links.close()


async def test_a_garbage_transfer_is_dropped_and_counted(tmp_path: Path) -> None:
    async with running_hub(tmp_path, timing=TIMING, transport="usb") as handle:
        links = HubLinks(handle, options=OPTIONS)
        try:
            link = await links.open()
            device = handle.usb
            await device.write(b"\x09garbage that is no frame")
            device.frame_end()
            reply = bytes(smpos.EchoWriteResponse(r="late", sequence=200))
            await device.write(reply[:-3])  # a truncated transfer
            device.frame_end()
            await eventually(lambda: link.link_errors["garbage"] == 2)
            assert link.bytes_dropped == 25 + len(reply) - 3
            assert await link.echo("still fine") == "still fine"
        finally:
            await links.close()


async def test_cable_pulled_mid_upload_then_a_new_link_resumes(tmp_path: Path) -> None:
    async with running_hub(tmp_path, timing=TIMING, transport="usb") as handle:
        links = HubLinks(handle, options=OPTIONS)
        try:
            link = await links.open()
            await link.unlock(handle.master_key)
            image = handle.make_image(NEW_VERSION, 64 * 1024)

            def pull(offset: int, total: int) -> None:
                if offset > total // 3 and handle.usb.plugged:
                    handle.unplug()

            with pytest.raises(DeviceDisconnected) as pulled:
                await link.upload(image, pull)
            error = pulled.value
            assert error.code == "device_disconnected"
            assert error.device == "USB device 1-1.1"
            assert "No such device" in str(error)
            assert "while waiting for image upload" in str(error)
            assert link.client.is_closed
            assert link.link_errors["disconnected"] == 1
            assert not handle.hub.truth()["secondary_sha256"]

            with pytest.raises(PortOpenFailed, match="no device at that port"):
                await open_raw(handle)
            loop = asyncio.get_running_loop()
            loop.call_later(SHORT_ATTACH_S, handle.plug)
            started = loop.time()
            link = await links.open()  # waits for the device to enumerate again
            assert loop.time() - started >= SHORT_ATTACH_S - ATTACH_POLL_S
            assert handle.usb.attaches == 2
            record = handle.hub.flash.upload  # what the hub programmed before and after the pull
            assert record is not None
            had = record.offset
            assert had > len(image) // 3
            result = await link.upload(image)
            assert result.resumed_from == had
            assert handle.hub.truth()["secondary_sha256"] == hashlib.sha256(image).hexdigest()
        finally:
            await links.close()
        assert usb_threads() == []


async def test_a_usb_link_is_an_smp_hub_link_without_a_baud_rate(tmp_path: Path) -> None:
    async with running_hub(tmp_path, timing=TIMING, transport="usb") as handle:
        links = HubLinks(handle, options=OPTIONS)
        try:
            link = await links.open()
            assert isinstance(link, SmpHubLink)
            transport = link.client.transport
            assert isinstance(transport, usb_transport.UsbTransport)
            assert transport.baudrate is None
            assert transport.max_packet == 64
            assert transport.port_path == "1-1.1"
            assert transport.wire_size(100) == 100
            assert transport.buffer_overhead == 0
            assert (await link.identify()).guid == handle.spec.guid
            assert transport.bytes_sent > 0
            assert transport.bytes_received > 0
        finally:
            await links.close()
