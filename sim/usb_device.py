"""A simulated USB hub function: descriptors, bulk endpoints, and the port its hub is served on.

Each USB slot of a simulated rig has one `SimUsbDevice`: the slot's USB connector and the USB
function of the hub in it. What a host sees through `sim.usb_bus`:

- USB 2.0 full speed (12 Mbit/s). Device descriptor: bcdUSB 2.00, class 0 (per interface),
  bMaxPacketSize0 64, idVendor/idProduct as configured (default 2FE3:0100), strings 1
  manufacturer, 2 product, 3 serial number = the hub's GUID (`00-DB-...`). One configuration
  (value 1, self-powered: the hub runs from its slot's supply) with one interface: number 0,
  class 0xFF (vendor specific), string 4 "MCUmgr SMP", two bulk endpoints, OUT 0x01 and IN 0x81,
  wMaxPacketSize 64 (the only size a full-speed bulk endpoint may have beyond 8-32; a high-speed
  device would use 512).
- The device is on the bus (enumerated, with a new address each time) while the slot's rig is
  on the host, a hub is in the slot, the slot is powered and the cable is plugged. Power off
  (`POWER n OFF`, a brown-out), removal, a pulled cable (`unplug()`) or the rig vanishing takes
  it off: transfers pending or later on its handles fail with `no_device` (ENODEV), and it is
  gone from enumeration until it comes back, as a new device. An SMP reset does not
  re-enumerate it: the hub's USB controller keeps its state while the application restarts.
- Transfers follow `drivers.usb_bulk`: one SMP frame per bulk transfer, a short packet or ZLP
  ending it. OUT transfers are handed to the hub whole; the hub's responses are queued as IN
  packets when the hub ends a frame (`frame_end`), so a host never reads half a response.
- Bus time: every packet takes one transaction slot of `UsbLink.packet_s` (1/19 ms at full
  speed), IN and OUT on one clock (the bus is half duplex). A bulk write answers when its last
  packet would have crossed the bus; an IN transfer becomes readable when its last packet would
  have. The hub is served unpaced (`Wire(bytes_per_s=None)`): the bus paces its bytes.
- The device takes every OUT packet (no NAK flow control): a request arriving while all of the
  hub's `buf_count` buffers are busy is dropped by the hub, as on a serial line. IN data waits
  in the device (at most IN_BUFFER_BYTES; the hub's writes wait beyond that) until read.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from drivers.framing import parse_header
from drivers.usb import format_port_path
from drivers.usb_bulk import TransferAssembler, split_packets
from sim.hub import SimHub, Wire, framing_named
from sim.pty_port import READ_CHUNK, PortClosedError
from sim.timing import USB_FULL_SPEED, UsbLink
from sim.usb_wire import UsbRequestError

__all__ = [
    "EP_IN",
    "EP_OUT",
    "SIM_USB_PRODUCT_ID",
    "SIM_USB_VENDOR_ID",
    "VENDOR_SPECIFIC_CLASS",
    "SimUsbDevice",
    "UsbHandle",
    "configuration_descriptor",
    "device_descriptor",
    "string_descriptor",
]

_LOGGER = logging.getLogger(__name__)

SIM_USB_VENDOR_ID: Final = 0x2FE3  # the Zephyr project's vendor id, as its samples use
SIM_USB_PRODUCT_ID: Final = 0x0100
VENDOR_SPECIFIC_CLASS: Final = 0xFF
EP_OUT: Final = 0x01
EP_IN: Final = 0x81
CONFIGURATION_VALUE: Final = 1
INTERFACE_NUMBER: Final = 0
LANGID_EN_US: Final = 0x0409
SPEED_FULL: Final = 2  # libusb's LIBUSB_SPEED_FULL
BCD_USB: Final = 0x0200
BCD_DEVICE: Final = 0x0100
IN_BUFFER_BYTES: Final = 4096  # IN data the device holds before the hub's writes wait
RX_BUFFER_BYTES: Final = 64 * 1024  # OUT data waiting for the hub beyond this is dropped
MAX_OUT_TRANSFER: Final = 64 * 1024
MAX_READ_LENGTH: Final = 1 << 20
_STRINGS: Final = {1: "manufacturer", 2: "product", 3: "serial", 4: "interface"}
INTERFACE_NAME: Final = "MCUmgr SMP"

# Standard requests (USB 2.0 chapter 9) the device answers on endpoint 0.
_GET_STATUS: Final = 0x00
_GET_DESCRIPTOR: Final = 0x06
_GET_CONFIGURATION: Final = 0x08
_STANDARD_DEVICE_IN: Final = 0x80
_DT_DEVICE: Final = 1
_DT_CONFIGURATION: Final = 2
_DT_STRING: Final = 3


def device_descriptor(vendor_id: int, product_id: int) -> bytes:
    """The 18-byte device descriptor."""
    return struct.pack(
        "<BBHBBBBHHHBBBB",
        18,  # bLength
        _DT_DEVICE,
        BCD_USB,
        0,  # bDeviceClass: per interface
        0,  # bDeviceSubClass
        0,  # bDeviceProtocol
        64,  # bMaxPacketSize0
        vendor_id,
        product_id,
        BCD_DEVICE,
        1,  # iManufacturer
        2,  # iProduct
        3,  # iSerialNumber
        1,  # bNumConfigurations
    )


def configuration_descriptor(max_packet: int) -> bytes:
    """The whole configuration: configuration, interface and two endpoint descriptors."""
    interface = struct.pack(
        "<BBBBBBBBB", 9, 4, INTERFACE_NUMBER, 0, 2, VENDOR_SPECIFIC_CLASS, 0, 0, 4
    )
    endpoints = b"".join(
        struct.pack("<BBBBHB", 7, 5, address, 0x02, max_packet, 0)  # 0x02: bulk
        for address in (EP_OUT, EP_IN)
    )
    total = 9 + len(interface) + len(endpoints)
    # bmAttributes 0xC0: self-powered (the slot's supply); bMaxPower 1 (2 mA from VBUS).
    head = struct.pack("<BBHBBBBB", 9, _DT_CONFIGURATION, total, 1, CONFIGURATION_VALUE, 0, 0xC0, 1)
    return head + interface + endpoints


def string_descriptor(text: str) -> bytes:
    encoded = text.encode("utf-16-le")
    return bytes([2 + len(encoded), _DT_STRING]) + encoded


class AddressSource(Protocol):
    """What a device needs from its bus."""

    @property
    def number(self) -> int: ...

    def allocate_address(self, device: SimUsbDevice) -> int: ...

    def next_attach_id(self) -> int: ...


@dataclass(eq=False)
class UsbHandle:
    """An open device handle: valid while the attachment it was opened on lasts."""

    id: int
    device: SimUsbDevice
    attach_id: int
    owner: int  # the bus connection that opened it: closing that connection closes it
    claimed: set[int] = field(default_factory=set)


class SimUsbDevice:
    """One slot's USB connector and the USB function of the hub in it; a `Port` for the hub."""

    def __init__(
        self,
        bus: AddressSource,
        port_numbers: tuple[int, ...],
        *,
        vendor_id: int = SIM_USB_VENDOR_ID,
        product_id: int = SIM_USB_PRODUCT_ID,
        link: UsbLink = USB_FULL_SPEED,
    ) -> None:
        self._bus = bus
        self.port_numbers = port_numbers
        self.vendor_id = vendor_id
        self.product_id = product_id
        self.link = link
        self._device_descriptor = device_descriptor(vendor_id, product_id)
        self._configuration_descriptor = configuration_descriptor(link.max_packet)
        self._hub: SimHub | None = None
        self._connected = False  # the rig is on the host
        self._plugged = True
        self.attached = False
        self.address: int | None = None
        self._attach_id = 0
        self._configuration = CONFIGURATION_VALUE
        self._claims: dict[int, UsbHandle] = {}
        self._event = asyncio.Event()
        self._bus_free = 0.0  # virtual time at which the bus is next idle
        self._out = TransferAssembler(read_size=link.max_packet, max_transfer=MAX_OUT_TRANSFER)
        self._rx = bytearray()  # OUT transfers not yet read by the hub
        self._tx_frame = bytearray()  # the response the hub is writing
        self._in: deque[tuple[float, bytes]] = deque()  # (readable at, packet)
        self._in_bytes = 0
        self._strings: dict[int, str] = {}
        # Counters, for tests.
        self.attaches = 0
        self.out_transfers = 0
        self.bad_out_transfers = 0  # OUT transfers that were not exactly one SMP frame
        self.in_transfers = 0
        self.rx_dropped = 0

    # ---- what the rig and tests do ------------------------------------------------------------

    @property
    def path(self) -> str:
        """The USB port path, `1-2.3` for bus 1, ports 2 then 3."""
        return format_port_path(self._bus.number, self.port_numbers)

    @property
    def plugged(self) -> bool:
        return self._plugged

    @property
    def hub(self) -> SimHub | None:
        return self._hub

    @property
    def attach_id(self) -> int:
        return self._attach_id

    def wire_for(self, hub: SimHub) -> Wire:
        """How the hub is served on this device: raw SMP frames, paced by the bus."""
        return Wire(framing_named("raw", hub.timing), bytes_per_s=None)

    def open(self) -> None:
        """The rig is on the host: the device can be attached."""
        self._connected = True
        self._update()

    def close(self) -> None:
        """The rig left the host: the device goes, the hub's port reads and writes fail."""
        self._connected = False
        self._update()
        self._changed()

    def bind(self, hub: SimHub) -> None:
        """`hub` is in the slot: its power decides whether the device is on the bus."""
        if self._hub is not None:
            self._hub.power_listeners.remove(self._update)
        self._hub = hub
        self._strings = {
            1: f"Manufacturer {hub.model.manufacturer_hex}",
            2: f"Communications Hub {hub.model}",
            3: str(hub.guid),
            4: INTERFACE_NAME,
        }
        hub.power_listeners.append(self._update)
        self._update()

    def unbind(self) -> None:
        if self._hub is not None:
            self._hub.power_listeners.remove(self._update)
        self._hub = None
        self._update()

    def unplug(self) -> None:
        """Pull the cable: the device leaves the bus, the hub keeps running on its supply."""
        self._plugged = False
        self._update()

    def plug(self) -> None:
        """Put the cable back: the device enumerates again (new address) if the hub is powered."""
        self._plugged = True
        self._update()

    def _update(self) -> None:
        should = self._connected and self._plugged and self._hub is not None and self._hub.powered
        if should and not self.attached:
            self._attach()
        elif not should and self.attached:
            self._detach()

    def _attach(self) -> None:
        self._attach_id = self._bus.next_attach_id()
        self.address = self._bus.allocate_address(self)
        self.attached = True
        self.attaches += 1
        self._configuration = CONFIGURATION_VALUE  # as the host's kernel configures it
        self._bus_free = 0.0
        _LOGGER.info("USB %s: attached, address %d (%s)", self.path, self.address, self._strings[3])
        self._changed()

    def _detach(self) -> None:
        _LOGGER.info("USB %s: detached (address %s)", self.path, self.address)
        self.attached = False
        self.address = None
        self._claims.clear()
        self._in.clear()
        self._in_bytes = 0
        self._tx_frame.clear()
        self._out.reset()
        self._rx.clear()
        self._changed()

    def record(self) -> dict[str, Any]:
        """What enumeration reports about the device."""
        return {
            "id": self._attach_id,
            "bus": self._bus.number,
            "address": self.address,
            "port_numbers": list(self.port_numbers),
            "speed": SPEED_FULL,
            "device": self._device_descriptor,
            "configurations": [self._configuration_descriptor],
        }

    def state(self) -> dict[str, Any]:
        """For `jigsim usb devices` and tests."""
        return {
            "port": self.path,
            "attached": self.attached,
            "plugged": self._plugged,
            "address": self.address,
            "guid": str(self._hub.guid) if self._hub is not None else None,
        }

    # ---- the hub's side: a Port ---------------------------------------------------------------

    async def read(self, max_bytes: int = READ_CHUNK) -> bytes:
        while True:
            if not self._connected:
                raise PortClosedError(f"USB {self.path} is closed")
            if self._rx:
                data = bytes(self._rx[:max_bytes])
                del self._rx[:max_bytes]
                return data
            await self._event.wait()

    async def write(self, data: bytes) -> None:
        while self._connected and self.attached and self._in_bytes >= IN_BUFFER_BYTES:
            await self._event.wait()
        if not self._connected:
            raise PortClosedError(f"USB {self.path} is closed")
        if self.attached:  # off the bus, what the hub sends goes nowhere
            self._tx_frame += data

    def frame_end(self) -> None:
        frame = bytes(self._tx_frame)
        self._tx_frame.clear()
        if not frame or not self.attached:
            return
        now = asyncio.get_running_loop().time()
        start = max(now, self._bus_free)
        self._bus_free = ready = start + self.link.transfer_s(len(frame))
        for packet in split_packets(frame, self.link.max_packet):
            self._in.append((ready, packet))
        self._in_bytes += len(frame)
        self.in_transfers += 1
        self._changed()

    # ---- the host's side: handles, endpoint 0, bulk endpoints -----------------------------------

    def open_handle(self, handle_id: int, owner: int) -> UsbHandle:
        if not self.attached:
            raise UsbRequestError("no_device")
        return UsbHandle(handle_id, self, self._attach_id, owner)

    def close_handle(self, handle: UsbHandle) -> None:
        for number in list(handle.claimed):
            if self._claims.get(number) is handle:
                del self._claims[number]
        handle.claimed.clear()

    def _check(self, handle: UsbHandle) -> None:
        if not self.attached or handle.attach_id != self._attach_id:
            raise UsbRequestError("no_device")

    def claim(self, handle: UsbHandle, interface: int) -> None:
        self._check(handle)
        if self._configuration != CONFIGURATION_VALUE or interface != INTERFACE_NUMBER:
            raise UsbRequestError("not_found", f"no interface {interface}")
        owner = self._claims.get(interface)
        if owner is not None and owner is not handle:
            raise UsbRequestError("busy", f"interface {interface} is claimed by another handle")
        self._claims[interface] = handle
        handle.claimed.add(interface)

    def release(self, handle: UsbHandle, interface: int) -> None:
        self._check(handle)
        if self._claims.get(interface) is not handle:
            raise UsbRequestError("not_found", f"interface {interface} is not claimed")
        del self._claims[interface]
        handle.claimed.discard(interface)

    def get_configuration(self, handle: UsbHandle) -> int:
        self._check(handle)
        return self._configuration

    def set_configuration(self, handle: UsbHandle, value: int) -> None:
        self._check(handle)
        if value not in (0, CONFIGURATION_VALUE):
            raise UsbRequestError("not_found", f"no configuration {value}")
        if value != self._configuration and self._claims:
            raise UsbRequestError("busy", "an interface is claimed")
        self._configuration = value

    def set_altsetting(self, handle: UsbHandle, interface: int, alt: int) -> None:
        self._check(handle)
        if interface != INTERFACE_NUMBER or alt != 0:
            raise UsbRequestError("not_found", f"no alternate setting {alt} of {interface}")

    def clear_halt(self, handle: UsbHandle, endpoint: int) -> None:
        self._check(handle)
        if endpoint not in (EP_OUT, EP_IN):
            raise UsbRequestError("not_found", f"no endpoint 0x{endpoint:02x}")

    def reset(self, handle: UsbHandle) -> None:
        self._check(handle)

    def control(
        self,
        handle: UsbHandle,
        *,
        request_type: int,
        request: int,
        value: int,
        index: int,
        length: int,
    ) -> bytes:
        """A standard device-to-host request on endpoint 0; anything else STALLs (pipe)."""
        self._check(handle)
        if request_type == _STANDARD_DEVICE_IN and request == _GET_DESCRIPTOR:
            return self._descriptor(value >> 8, value & 0xFF, index)[:length]
        if request_type == _STANDARD_DEVICE_IN and request == _GET_CONFIGURATION:
            return bytes([self._configuration])[:length]
        if request_type == _STANDARD_DEVICE_IN and request == _GET_STATUS:
            return b"\x01\x00"[:length]  # self-powered
        raise UsbRequestError("pipe", f"request 0x{request_type:02x}/0x{request:02x} stalled")

    def _descriptor(self, kind: int, number: int, langid: int) -> bytes:
        if kind == _DT_DEVICE:
            return self._device_descriptor
        if kind == _DT_CONFIGURATION and number == 0:
            return self._configuration_descriptor
        if kind == _DT_STRING and number == 0:
            return struct.pack("<BBH", 4, _DT_STRING, LANGID_EN_US)
        if kind == _DT_STRING and number in self._strings and langid == LANGID_EN_US:
            return string_descriptor(self._strings[number])
        raise UsbRequestError("pipe", f"no descriptor {kind}/{number}")

    def _endpoint_ready(self, handle: UsbHandle, endpoint: int, expected: int) -> None:
        self._check(handle)
        if endpoint != expected or self._configuration != CONFIGURATION_VALUE:
            raise UsbRequestError("not_found", f"no bulk endpoint 0x{endpoint:02x}")
        if INTERFACE_NUMBER not in handle.claimed:
            self.claim(handle, INTERFACE_NUMBER)  # as Linux's usbfs claims on first use

    async def bulk_write(
        self, handle: UsbHandle, endpoint: int, data: bytes, timeout_s: float
    ) -> int:
        self._endpoint_ready(handle, endpoint, EP_OUT)
        packets = split_packets(data, self.link.max_packet, terminate=False)
        loop = asyncio.get_running_loop()
        now = loop.time()
        start = max(now, self._bus_free)
        done = start + len(packets) * self.link.packet_s
        if done - now > timeout_s:
            await asyncio.sleep(timeout_s)
            raise UsbRequestError("timeout")
        self._bus_free = done
        await asyncio.sleep(done - now)
        self._check(handle)  # unplugged while the packets crossed
        for packet in packets:
            transfer = self._out.feed(packet)
            if transfer is not None:
                self._transfer_out(transfer)
        return len(data)

    def _transfer_out(self, transfer: bytes) -> None:
        self.out_transfers += 1
        fields = parse_header(transfer)
        if fields is None or len(transfer) != 8 + fields.length:
            self.bad_out_transfers += 1
            _LOGGER.debug(
                "USB %s: OUT transfer of %d bytes is not one frame", self.path, len(transfer)
            )
        if len(self._rx) + len(transfer) > RX_BUFFER_BYTES:
            self.rx_dropped += len(transfer)
            return
        self._rx += transfer
        self._changed()

    async def bulk_read(
        self, handle: UsbHandle, endpoint: int, length: int, timeout_s: float
    ) -> bytes:
        """Packets until a short one ends the transfer or `length` bytes are read, as libusb."""
        self._endpoint_ready(handle, endpoint, EP_IN)
        if not 0 < length <= MAX_READ_LENGTH:
            raise UsbRequestError("invalid_param", f"read length {length}")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        out = bytearray()
        while True:
            self._check(handle)
            event = self._event
            now = loop.time()
            if self._in and self._in[0][0] <= now:
                _ready, packet = self._in.popleft()
                self._in_bytes -= len(packet)
                self._changed()
                if len(packet) > length - len(out):
                    raise UsbRequestError("overflow", "the device sent more than was asked for")
                out += packet
                if len(packet) < self.link.max_packet or len(out) == length:
                    return bytes(out)
                continue
            if now >= deadline:
                if out:  # libusb hands back what a timed-out transfer got
                    return bytes(out)
                raise UsbRequestError("timeout")
            wake = min(deadline, self._in[0][0]) if self._in else deadline
            try:
                async with asyncio.timeout_at(wake):
                    await event.wait()
            except TimeoutError:
                pass

    def _changed(self) -> None:
        self._event.set()
        self._event = asyncio.Event()
