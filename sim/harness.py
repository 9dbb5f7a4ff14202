"""One simulated hub on a real pseudo-terminal or on a simulated USB bus, for tests and benchmarks.

    async with running_hub(tmp_path, timing=Timing(baud=115200)) as handle:
        with serial.Serial(handle.path) as port: ...
        handle.hub.power_off(); handle.hub.power_on()
        image = handle.make_image(FirmwareVersion.parse("04000007"), 64 * 1024)
        assert handle.hub.truth()["active_version"] == "01000000"

    async with running_hub(tmp_path, transport="usb") as handle:
        # handle.path is the USB port path "1-1.1"; handle.usb_backend the backend URL
        handle.unplug(); handle.plug()

With `transport="usb"` the hub is the USB function of a device on a `sim.usb_bus.UsbBus` served
on `<directory>/usb.sock` in this event loop; a host reaches it through pyusb and
`sim.usb_backend` (from threads, as drivers/usb.py does). Keys and images are derived from `seed`
(`sim.images`), so a test can rebuild them. `unplug_usb`/`plug_usb` pull and put back the cable
of a device on the USB bus of another process (`jigsim serve`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import imgtool.keys
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel, ConfigDict, Field

from drivers.registry import SlotSpec
from jigd.model import (
    DeviceModel,
    DeviceModelField,
    FirmwareVersion,
    FirmwareVersionField,
    Guid,
    GuidField,
)
from sim.faults import Faults
from sim.hub import HubState, SimHub
from sim.image_check import ImageKey
from sim.images import ManufacturerKeys, make_manufacturer_keys, make_signed_image
from sim.pty_port import PtyPort
from sim.timing import Timing
from sim.usb_bus import UsbBus
from sim.usb_device import SimUsbDevice
from sim.usb_wire import request, url_path

__all__ = [
    "DEFAULT_FIRMWARE_VERSION",
    "DEFAULT_IMAGE_SIZE",
    "DEFAULT_MODEL",
    "HubHandle",
    "HubSpec",
    "image_key_of",
    "plug_usb",
    "running_hub",
    "unplug_usb",
    "usb_devices",
]

_LOGGER = logging.getLogger(__name__)

DEFAULT_MODEL: Final = DeviceModel(0x1086, 0x57310102)
DEFAULT_FIRMWARE_VERSION: Final = FirmwareVersion(0x01000000)
DEFAULT_IMAGE_SIZE: Final = 8 * 1024
DEFAULT_GUID_BASE: Final = 0x00DB_0000_0000_0000
BOOT_WAIT_MARGIN_S: Final = 5.0  # on top of the timing's own boot time
STOP_TIMEOUT_S: Final = 5.0
USB_SOCKET_NAME: Final = "usb.sock"
USB_PORT_NUMBERS: Final = (1, 1)  # a lone hub sits at port path 1-1.1


class HubSpec(BaseModel):
    """What one simulated hub is: identity, initial firmware, lock state."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    guid: GuidField = Guid(DEFAULT_GUID_BASE | 1)
    model: DeviceModelField = DEFAULT_MODEL
    firmware_version: FirmwareVersionField = DEFAULT_FIRMWARE_VERSION
    image_size: int = Field(default=DEFAULT_IMAGE_SIZE, ge=1024)
    locked: bool = True


def image_key_of(keys: ManufacturerKeys) -> ImageKey:
    """The public image-verification key a manufacturer's hubs hold."""
    return imgtool.keys.Ed25519Public(keys.signing_key.public_key())


@dataclass
class HubHandle:
    """A running simulated hub and what a test needs to talk to it."""

    path: str  # the pty's path, or the USB port path (`1-1.1`)
    hub: SimHub
    spec: HubSpec
    keys: ManufacturerKeys
    timing: Timing
    seed: int
    port: PtyPort | SimUsbDevice
    transport: str = "serial"
    usb_bus: UsbBus | None = None

    @property
    def usb(self) -> SimUsbDevice:
        """The hub's USB device (transport "usb" only)."""
        if not isinstance(self.port, SimUsbDevice):
            raise TypeError("this hub is served on a serial port, not on USB")
        return self.port

    @property
    def usb_backend(self) -> str | None:
        """What a slot's `usb_backend` says to reach the hub's bus (None for a serial hub)."""
        return self.usb_bus.url if self.usb_bus is not None else None

    @property
    def usb_vendor_id(self) -> int | None:
        return self.port.vendor_id if isinstance(self.port, SimUsbDevice) else None

    @property
    def usb_product_id(self) -> int | None:
        return self.port.product_id if isinstance(self.port, SimUsbDevice) else None

    def slot_spec(self, framing: str = "raw") -> SlotSpec:
        """The slot parameters that reach this hub: its pty, or its USB port on its bus."""
        return SlotSpec(
            port=self.path,
            framing=framing,
            baudrate=self.timing.baud,
            transport=self.transport,
            usb_vendor_id=self.usb_vendor_id,
            usb_product_id=self.usb_product_id,
            usb_backend=self.usb_backend,
        )

    def unplug(self) -> None:
        """Pull the hub's USB cable: its device leaves the bus; the hub keeps running."""
        self.usb.unplug()

    def plug(self) -> None:
        """Put the cable back: the device enumerates again, at a new address."""
        self.usb.plug()

    @property
    def master_key(self) -> bytes:
        """The manufacturer's unlock master key (a secret: never log it)."""
        return self.keys.master_key

    @property
    def signing_key(self) -> Ed25519PrivateKey:
        return self.keys.signing_key

    def make_image(self, version: FirmwareVersion, size: int = DEFAULT_IMAGE_SIZE) -> bytes:
        """An image for this hub's model at `version`, signed with its manufacturer's key."""
        return make_signed_image(self.keys, self.spec.model, version, size, self.seed)


@asynccontextmanager
async def running_hub(
    directory: Path,
    *,
    spec: HubSpec | None = None,
    timing: Timing | None = None,
    framing: str = "raw",
    faults: Faults | None = None,
    seed: int = 0,
    transport: str = "serial",
) -> AsyncIterator[HubHandle]:
    """Serve one hub on a pty at `<directory>/hub-<GUID>`, powered on and booted.

    The hub runs `spec`'s firmware (default: GUID 00-DB-00-00-00-00-00-01 plus `seed`, model
    1086/57310102, version 01000000, 8 KiB, locked) from an image signed with the keys of
    `seed`. `framing` is "raw" or "console". With `transport="usb"` the hub is instead the
    device at USB port 1-1.1 of a simulated bus on `<directory>/usb.sock` (raw SMP frames in
    bulk transfers; `framing` is not used). Every task started here is cancelled and awaited
    on exit.
    """
    if transport not in ("serial", "usb"):
        raise ValueError(f"unknown transport {transport!r}; use 'serial' or 'usb'")
    spec = spec or HubSpec(guid=Guid(DEFAULT_GUID_BASE | ((seed + 1) & 0xFFFF_FFFF)))
    timing = timing or Timing()
    keys = make_manufacturer_keys(spec.model.manufacturer, seed)
    image = make_signed_image(keys, spec.model, spec.firmware_version, spec.image_size, seed)
    hub = SimHub(
        guid=spec.guid,
        model=spec.model,
        image=image,
        master_key=keys.master_key,
        image_key=image_key_of(keys),
        timing=timing,
        framing=framing,
        faults=faults,
        locked=spec.locked,
    )
    async with AsyncExitStack() as stack:
        bus: UsbBus | None = None
        port: PtyPort | SimUsbDevice
        if transport == "usb":
            bus = await stack.enter_async_context(UsbBus(directory / USB_SOCKET_NAME))
            port = bus.add_device(USB_PORT_NUMBERS)
            port.bind(hub)
            stack.callback(port.unbind)
            serving = hub.serve(port, port.wire_for(hub))
        else:
            port = PtyPort(directory / f"hub-{spec.guid.value:016X}")
            serving = hub.serve(port)
        port.open()
        stack.callback(port.close)
        task = asyncio.get_running_loop().create_task(serving, name=f"{hub.name} serve")
        try:
            hub.power_on()
            await hub.wait_for_state(
                HubState.RUNNING,
                HubState.BRICKED,  # a hub that never boots (`never_boots`) is ready so
                timeout_s=timing.boot_s + timing.swap_s + BOOT_WAIT_MARGIN_S,
            )
            yield HubHandle(
                path=port.path,
                hub=hub,
                spec=spec,
                keys=keys,
                timing=timing,
                seed=seed,
                port=port,
                transport=transport,
                usb_bus=bus,
            )
        finally:
            task.cancel()
            done, _pending = await asyncio.wait([task], timeout=STOP_TIMEOUT_S)
            if task in done and not task.cancelled() and task.exception() is not None:
                raise RuntimeError(f"{hub.name} failed") from task.exception()


def _control(backend_url: str, message: dict[str, Any]) -> Any:
    return request(url_path(backend_url), message)


async def unplug_usb(backend_url: str, port: str) -> dict[str, Any]:
    """Pull the cable of the simulated USB hub at `port` (`1-2.3`) on the bus of `backend_url`
    (`sim+unix:///...`, as `jigsim serve` prints it); its state after."""
    state: dict[str, Any] = await asyncio.to_thread(
        _control, backend_url, {"op": "unplug", "port": port}
    )
    return state


async def plug_usb(backend_url: str, port: str) -> dict[str, Any]:
    """Put the cable of the simulated USB hub at `port` back; its state after."""
    state: dict[str, Any] = await asyncio.to_thread(
        _control, backend_url, {"op": "plug", "port": port}
    )
    return state


async def usb_devices(backend_url: str) -> list[dict[str, Any]]:
    """Every device of the bus: port, attached, plugged, address, GUID."""
    devices: list[dict[str, Any]] = await asyncio.to_thread(
        _control, backend_url, {"op": "devices"}
    )
    return devices
