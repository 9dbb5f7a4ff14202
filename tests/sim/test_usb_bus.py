"""The simulated USB bus of `jigsim serve`, in its own process, as pyusb sees it through
`sim.usb_backend`: descriptors, strings, the vendor interface and its bulk endpoints, SMP in bulk
transfers, libusb's errors (timeout, busy, no device), the cable pulled and put back, and the
slot's power taking the device off the bus. pyusb's own code runs throughout: `usb.core.find`,
`usb.util.find_descriptor`, `usb.util.claim_interface`, `dev.write`, `dev.read`."""

from __future__ import annotations

import asyncio
import errno
import json
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final, TypeVar

import cbor2
import pytest
import usb.core
import usb.util

from drivers import jig_group
from sim.cli import main as jigsim
from sim.usb_backend import SimUsbBackend, backend_from_url
from tests.sim.helpers import jigsim_serve
from tests.sim.wire import LineWire

START_TIMEOUT_S: Final = 20.0
STOP_TIMEOUT_S: Final = 10.0
POLL_S: Final = 0.05
VENDOR_ID: Final = 0x2FE3
PRODUCT_ID: Final = 0x0100
EP_OUT: Final = 0x01
EP_IN: Final = 0x81
T = TypeVar("T")


@asynccontextmanager
async def serving(tmp_path: Path, *args: str) -> AsyncIterator[list[str]]:
    """`jigsim serve` with 2 rigs of 2 slots (rig 1 serial, rig 2 USB); its first output lines."""
    rigs = tmp_path / "rigs"
    async with jigsim_serve(
        *("--dir", str(rigs), "--rigs", "2", "--slots", "2", "--seed", "4"),
        *("--handling-s", "0.01", "--image-size", "8192", "--boot-s", "0.02"),
        *args,
    ) as process:
        assert process.stdout is not None
        lines = []
        for _ in range(3):  # ready line, the bus, the USB rig's ports
            line = await asyncio.wait_for(process.stdout.readline(), START_TIMEOUT_S)
            lines.append(line.decode().rstrip("\n"))
        yield lines
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), STOP_TIMEOUT_S) == 0
        assert not (rigs / "usb.sock").exists()


async def until(check: Callable[[], T | None], what: str) -> T:
    """Poll a blocking check in a thread until it gives something."""
    for _ in range(int(START_TIMEOUT_S / POLL_S)):
        found = await asyncio.to_thread(check)
        if found is not None:
            return found
        await asyncio.sleep(POLL_S)
    raise TimeoutError(f"never: {what}")


def at_port(backend: SimUsbBackend, ports: tuple[int, ...]) -> Any:
    return usb.core.find(
        backend=backend,
        idVendor=VENDOR_ID,
        idProduct=PRODUCT_ID,
        custom_match=lambda d: d.port_numbers == ports,
    )


def identify(dev: Any) -> dict[str, Any]:
    """One SMP request in a bulk transfer, its answer from the next IN transfer."""
    frame = bytes(jig_group.IdentityReadRequest(sequence=7))
    assert dev.write(EP_OUT, frame, 1000) == len(frame)
    answer = bytes(dev.read(EP_IN, 512, 2000))
    assert answer[6] == 7  # the sequence number
    body: dict[str, Any] = cbor2.loads(answer[8:])
    return body


def read_errno(dev: Any) -> int | None:
    try:
        dev.read(EP_IN, 512, 50)
    except usb.core.USBTimeoutError:
        return errno.ETIMEDOUT
    except usb.core.USBError as exc:
        return int(exc.errno)
    return None


async def test_usb_rig_devices_as_pyusb_sees_them(tmp_path: Path) -> None:
    async with serving(tmp_path, "--transport", "mixed") as lines:
        assert lines[0].startswith("jigsim: serving 2 rig(s) x 2 slot(s)")
        socket = tmp_path / "rigs" / "usb.sock"
        url = f"sim+unix://{socket.resolve()}"
        assert lines[1].startswith(f"jigsim: USB rigs on {url} (usb_backend)")
        assert lines[2] == "jigsim: rig 2 USB ports: slot1=1-2.1 slot2=1-2.2"
        info = json.loads((tmp_path / "rigs" / "usb.json").read_text(encoding="utf-8"))
        assert info["backend"] == url
        assert [s["port"] for s in info["slots"]] == ["1-2.1", "1-2.2"]
        assert (tmp_path / "rigs" / "rig1" / "slot1").exists()  # rig 1 stays serial
        assert not (tmp_path / "rigs" / "rig2" / "slot1").exists()

        backend = backend_from_url(url)
        other = backend_from_url(url)
        try:
            await until(
                lambda: len(list(usb.core.find(find_all=True, backend=backend))) == 2 or None,
                "both USB hubs inserted",
            )
            dev = await asyncio.to_thread(at_port, backend, (2, 1))
            assert dev is not None
            assert (dev.bus, dev.port_numbers, dev.port_number) == (1, (2, 1), 1)
            assert dev.address >= 2
            assert dev.speed == 2  # full speed
            assert (dev.bcdUSB, dev.bDeviceClass, dev.bMaxPacketSize0) == (0x0200, 0, 64)
            assert dev.bNumConfigurations == 1

            def strings() -> tuple[str, str, str]:
                return dev.manufacturer, dev.product, dev.serial_number

            manufacturer, product, serial = await asyncio.to_thread(strings)
            assert manufacturer == "Manufacturer 1086"
            assert product.startswith("Communications Hub 1086/")
            assert serial.startswith("00-DB-")

            def descriptors() -> tuple[Any, Any, Any, Any]:
                configuration = dev.get_active_configuration()
                interface = usb.util.find_descriptor(configuration, bInterfaceClass=0xFF)
                ep_out = usb.util.find_descriptor(
                    interface,
                    custom_match=lambda e: (
                        usb.util.endpoint_direction(e.bEndpointAddress) == usb.util.ENDPOINT_OUT
                    ),
                )
                ep_in = usb.util.find_descriptor(
                    interface,
                    custom_match=lambda e: (
                        usb.util.endpoint_direction(e.bEndpointAddress) == usb.util.ENDPOINT_IN
                    ),
                )
                return configuration, interface, ep_out, ep_in

            configuration, interface, ep_out, ep_in = await asyncio.to_thread(descriptors)
            assert configuration.bConfigurationValue == 1
            assert configuration.bNumInterfaces == 1
            assert (interface.bInterfaceNumber, interface.bNumEndpoints) == (0, 2)
            name = await asyncio.to_thread(usb.util.get_string, dev, interface.iInterface)
            assert name == "MCUmgr SMP"
            for endpoint, address in ((ep_out, EP_OUT), (ep_in, EP_IN)):
                assert endpoint.bEndpointAddress == address
                assert usb.util.endpoint_type(endpoint.bmAttributes) == usb.util.ENDPOINT_TYPE_BULK
                assert endpoint.wMaxPacketSize == 64

            await asyncio.to_thread(usb.util.claim_interface, dev, interface)
            identity = await asyncio.to_thread(identify, dev)
            assert identity["guid"].hex().upper() == serial.replace("-", "")
            assert await asyncio.to_thread(read_errno, dev) == errno.ETIMEDOUT  # nothing to read

            # A second host program cannot claim the same interface.
            rival = await asyncio.to_thread(at_port, other, (2, 1))
            with pytest.raises(usb.core.USBError) as busy:
                await asyncio.to_thread(usb.util.claim_interface, rival, 0)
            assert busy.value.errno == errno.EBUSY

            # The cable pulled: ENODEV on the old handle, gone from enumeration.
            assert jigsim(["usb", "unplug", "1-2.1", "--socket", str(socket)]) == 0
            assert await asyncio.to_thread(read_errno, dev) == errno.ENODEV
            assert await asyncio.to_thread(at_port, backend, (2, 1)) is None
            assert jigsim(["usb", "plug", "1-2.1", "--socket", str(socket)]) == 0
            again = await until(lambda: at_port(backend, (2, 1)), "the device back")
            assert again.address != dev.address  # enumerated anew
            assert await asyncio.to_thread(read_errno, dev) == errno.ENODEV  # the old handle
            assert (await asyncio.to_thread(identify, again))["guid"] == identity["guid"]
            await asyncio.to_thread(usb.util.dispose_resources, dev)
            await asyncio.to_thread(usb.util.dispose_resources, rival)

            # The slot's power: POWER OFF takes the device off the bus, POWER ON brings it back.
            with LineWire(str(tmp_path / "rigs" / "rig2" / "ctl")) as ctl:
                assert await ctl.ask("POWER 1 OFF") == "OK"
                assert await asyncio.to_thread(read_errno, again) == errno.ENODEV
                assert await asyncio.to_thread(at_port, backend, (2, 1)) is None
                assert await ctl.ask("POWER 1 ON") == "OK"
            powered = await until(lambda: at_port(backend, (2, 1)), "the device powered")
            assert await asyncio.to_thread(lambda: powered.serial_number) == serial
            await asyncio.to_thread(usb.util.dispose_resources, again)
            await asyncio.to_thread(usb.util.dispose_resources, powered)
        finally:
            backend.close()
            other.close()


def test_usb_command_names_what_is_wrong(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert jigsim(["usb", "devices", "--socket", str(tmp_path / "none.sock")]) == 1
    assert "cannot reach the simulated USB bus" in capsys.readouterr().err
    assert jigsim(["usb", "unplug", "--socket", str(tmp_path / "none.sock")]) == 2
    rigs = ["--dir", str(tmp_path / "r"), "--rigs", "2", "--slots", "1"]
    assert jigsim(["serve", *rigs, "--usb-rigs", "3"]) == 2
    assert "--usb-rigs [3]: there are only 2 rig(s)" in capsys.readouterr().err
