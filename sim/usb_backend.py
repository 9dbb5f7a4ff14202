"""A pyusb backend that reaches jigsim's simulated USB bus over its Unix socket.

    backend = backend_from_url("sim+unix:///run/jigsim/usb.sock")
    dev = usb.core.find(idVendor=0x2FE3, idProduct=0x0100, backend=backend)
    dev.port_numbers             # (2, 3): rig 2, slot 3
    usb.util.claim_interface(dev, 0); dev.write(0x01, frame); dev.read(0x81, 16384, 100)
    backend.close()

It implements pyusb's `IBackend` the way pyusb's libusb-1.0 backend does: descriptors are the
device's own bytes, parsed here as libusb parses them; errors are `usb.core.USBError` with
libusb's error code and errno (`USBTimeoutError` for a timeout, ENODEV for a device that is
gone); a "not supported" error is NotImplementedError. Calls block (pyusb is synchronous); each
takes a connection from a small pool, so a pending bulk read in one thread does not hold up a
write in another. The connection that opened a handle owns it on the bus: `close()` (or the
process ending) gives back every interface the backend claimed.

Registered as the `sim+unix` entry point of the `jigd.usb_backends` group (drivers/usb.py).
"""

from __future__ import annotations

import array
import contextlib
import socket
import struct
import threading
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Final

import usb.backend
import usb.core

from sim.usb_wire import LIBUSB_ERRORS, WireError, recv_message, send_message, url_path

__all__ = ["SimUsbBackend", "backend_from_url"]

_DT_CONFIGURATION: Final = 2
_DT_INTERFACE: Final = 4
_DT_ENDPOINT: Final = 5
CALL_MARGIN_S: Final = 5.0  # on top of a transfer's own timeout, for the bus to answer
DEFAULT_CALL_TIMEOUT_S: Final = 10.0
MAX_IDLE_CONNECTIONS: Final = 4
_DEVICE_FIELDS: Final = (
    "bLength",
    "bDescriptorType",
    "bcdUSB",
    "bDeviceClass",
    "bDeviceSubClass",
    "bDeviceProtocol",
    "bMaxPacketSize0",
    "idVendor",
    "idProduct",
    "bcdDevice",
    "iManufacturer",
    "iProduct",
    "iSerialNumber",
    "bNumConfigurations",
)
_CONFIGURATION_FIELDS: Final = (
    "bLength",
    "bDescriptorType",
    "wTotalLength",
    "bNumInterfaces",
    "bConfigurationValue",
    "iConfiguration",
    "bmAttributes",
    "bMaxPower",
)
_INTERFACE_FIELDS: Final = (
    "bLength",
    "bDescriptorType",
    "bInterfaceNumber",
    "bAlternateSetting",
    "bNumEndpoints",
    "bInterfaceClass",
    "bInterfaceSubClass",
    "bInterfaceProtocol",
    "iInterface",
)
_ENDPOINT_FIELDS: Final = (
    "bLength",
    "bDescriptorType",
    "bEndpointAddress",
    "bmAttributes",
    "wMaxPacketSize",
    "bInterval",
)


def _usb_error(name: str, message: str) -> Exception:
    """The exception pyusb's libusb-1.0 backend raises for that libusb error."""
    code, errno_, text = LIBUSB_ERRORS.get(name, LIBUSB_ERRORS["io"])
    detail = f"{text}: {message}" if message and message != text else text
    error: Exception
    if name == "timeout":
        error = usb.core.USBTimeoutError(detail, code, errno_)
    elif name == "not_supported":
        error = NotImplementedError(detail)
    else:
        error = usb.core.USBError(detail, code, errno_)
    return error


def _fields(names: tuple[str, ...], layout: str, raw: bytes) -> SimpleNamespace:
    """A descriptor's fields by name (pyusb reads them as attributes), no extras yet."""
    if len(raw) < struct.calcsize(layout):
        raise _usb_error("io", f"descriptor of {len(raw)} bytes is too short")
    values = dict(zip(names, struct.unpack_from(layout, raw), strict=True))
    return SimpleNamespace(**values, extra_descriptors=[])


@dataclass
class _Interface:
    descriptor: SimpleNamespace
    endpoints: list[SimpleNamespace] = field(default_factory=list)


@dataclass
class _Configuration:
    descriptor: SimpleNamespace
    interfaces: list[list[_Interface]] = field(default_factory=list)  # [number][alt]


def _parse_configuration(blob: bytes) -> _Configuration:
    """A full configuration descriptor, walked as libusb walks it; unknown ones are extras."""
    if len(blob) < 2 or blob[1] != _DT_CONFIGURATION:
        raise _usb_error("io", "not a configuration descriptor")
    configuration = _Configuration(_fields(_CONFIGURATION_FIELDS, "<BBHBBBBB", blob))
    by_number: dict[int, list[_Interface]] = {}
    interface: _Interface | None = None
    current = configuration.descriptor  # what an unknown descriptor is an extra of
    at = blob[0]
    while at + 2 <= len(blob):
        length, kind = blob[at], blob[at + 1]
        if length < 2 or at + length > len(blob):
            raise _usb_error("io", f"bad descriptor length {length} at byte {at}")
        raw = blob[at : at + length]
        at += length
        if kind == _DT_INTERFACE:
            current = _fields(_INTERFACE_FIELDS, "<BBBBBBBBB", raw)
            interface = _Interface(current)
            alts = by_number.setdefault(current.bInterfaceNumber, [])
            if not alts:
                configuration.interfaces.append(alts)
            alts.append(interface)
        elif kind == _DT_ENDPOINT and interface is not None:
            current = _fields(_ENDPOINT_FIELDS, "<BBBBHB", raw)
            # Audio endpoints have two more bytes; the others read as zero, as in libusb.
            current.bRefresh, current.bSynchAddress = (raw[7], raw[8]) if length >= 9 else (0, 0)
            interface.endpoints.append(current)
        else:
            current.extra_descriptors = [*current.extra_descriptors, *raw]
    return configuration


@dataclass
class _Device:
    """What `enumerate_devices` yields: a device as the bus reported it."""

    id: int
    descriptor: SimpleNamespace
    configurations: list[_Configuration]


@dataclass(frozen=True)
class _Handle:
    id: int


class SimUsbBackend(usb.backend.IBackend):  # type: ignore[misc]  # pyusb has no type hints
    """pyusb's backend interface, served by jigsim's simulated USB bus at `socket_path`."""

    def __init__(self, socket_path: str) -> None:
        super().__init__()
        self.socket_path = socket_path
        self._idle: list[socket.socket] = []
        self._session: socket.socket | None = None  # opens handles, so owns them on the bus
        self._lock = threading.Lock()
        self._session_lock = threading.Lock()
        self._closed = False

    # -- connections -----------------------------------------------------------------------

    def close(self) -> None:
        """Close every connection: the bus closes the handles this backend opened."""
        self.finalize()

    def _finalize_object(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            session, self._session = self._session, None
        for sock in [*idle, *([session] if session is not None else [])]:
            sock.close()

    def _connect(self) -> socket.socket:
        with self._lock:
            if self._closed:
                raise _usb_error("io", "the backend is closed")
            if self._idle:
                return self._idle.pop()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(DEFAULT_CALL_TIMEOUT_S)
            sock.connect(self.socket_path)
        except OSError as exc:
            sock.close()
            raise _usb_error(
                "io", f"cannot reach the simulated USB bus at {self.socket_path}: {exc}"
            ) from exc
        return sock

    def _done(self, sock: socket.socket) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < MAX_IDLE_CONNECTIONS:
                self._idle.append(sock)
                return
        sock.close()

    def _call(self, op: str, timeout_ms: int | None = None, **args: Any) -> Any:
        """One request on a pooled connection; its answer's value, or the error raised."""
        sock = self._connect()
        try:
            answer = self._exchange(sock, op, timeout_ms, args)
        except BaseException:
            sock.close()
            raise
        self._done(sock)
        return self._value(answer)

    def _open_on_session(self, device_id: int) -> int:
        """`open` on the session connection: the handle lives as long as it (and the backend)."""
        with self._session_lock:
            if self._session is None:
                self._session = self._connect()
            try:
                answer = self._exchange(self._session, "open", None, {"device": device_id})
            except BaseException:
                self._session.close()
                self._session = None
                raise
        return int(self._value(answer))

    @staticmethod
    def _exchange(
        sock: socket.socket, op: str, timeout_ms: int | None, args: dict[str, Any]
    ) -> dict[str, Any]:
        message = {"op": op, **args}
        if timeout_ms is not None:
            message["timeout_ms"] = timeout_ms
        try:
            sock.settimeout(
                timeout_ms / 1000 + CALL_MARGIN_S if timeout_ms else DEFAULT_CALL_TIMEOUT_S
            )
            send_message(sock, message)
            return recv_message(sock)
        except (OSError, WireError) as exc:
            # The bus is gone (jigsim stopped): for the host, every device on it is.
            raise _usb_error("no_device", f"the simulated USB bus did not answer: {exc}") from exc

    @staticmethod
    def _value(answer: dict[str, Any]) -> Any:
        if "error" in answer:
            raise _usb_error(str(answer["error"]), str(answer.get("message", "")))
        return answer.get("ok")

    # -- IBackend: enumeration and descriptors ---------------------------------------------

    def enumerate_devices(self) -> list[_Device]:
        devices = []
        for record in self._call("enumerate"):
            descriptor = _fields(_DEVICE_FIELDS, "<BBHBBBBHHHBBBB", record["device"])
            ports = tuple(record["port_numbers"])
            descriptor.bus = record["bus"]
            descriptor.address = record["address"]
            descriptor.port_numbers = ports
            descriptor.port_number = ports[-1] if ports else None
            descriptor.speed = record["speed"]
            configurations = [_parse_configuration(c) for c in record["configurations"]]
            devices.append(_Device(record["id"], descriptor, configurations))
        return devices

    def get_parent(self, dev: _Device) -> None:
        return None  # the rigs' own hubs are not simulated

    def get_device_descriptor(self, dev: _Device) -> SimpleNamespace:
        return dev.descriptor

    def get_configuration_descriptor(self, dev: _Device, config: int) -> SimpleNamespace:
        if not 0 <= config < len(dev.configurations):
            raise IndexError(f"Invalid configuration index {config}")
        return dev.configurations[config].descriptor

    def _alt(self, dev: _Device, intf: int, alt: int, config: int) -> _Interface:
        configuration = dev.configurations[config]
        if not 0 <= intf < len(configuration.interfaces):
            raise IndexError(f"Invalid interface index {intf}")
        alts = configuration.interfaces[intf]
        if not 0 <= alt < len(alts):
            raise IndexError(f"Invalid alternate setting index {alt}")
        return alts[alt]

    def get_interface_descriptor(
        self, dev: _Device, intf: int, alt: int, config: int
    ) -> SimpleNamespace:
        return self._alt(dev, intf, alt, config).descriptor

    def get_endpoint_descriptor(
        self, dev: _Device, ep: int, intf: int, alt: int, config: int
    ) -> SimpleNamespace:
        endpoints = self._alt(dev, intf, alt, config).endpoints
        if not 0 <= ep < len(endpoints):
            raise IndexError(f"Invalid endpoint index {ep}")
        return endpoints[ep]

    # -- IBackend: handles and requests ------------------------------------------------------

    def open_device(self, dev: _Device) -> _Handle:
        return _Handle(self._open_on_session(dev.id))

    def close_device(self, dev_handle: _Handle) -> None:
        # libusb_close cannot fail: a handle of a vanished device just goes.
        with contextlib.suppress(usb.core.USBError):
            self._call("close", handle=dev_handle.id)

    def set_configuration(self, dev_handle: _Handle, config_value: int) -> None:
        self._call("set_configuration", handle=dev_handle.id, value=int(config_value))

    def get_configuration(self, dev_handle: _Handle) -> int:
        return int(self._call("get_configuration", handle=dev_handle.id))

    def set_interface_altsetting(self, dev_handle: _Handle, intf: int, altsetting: int) -> None:
        self._call("set_altsetting", handle=dev_handle.id, interface=intf, alt=altsetting)

    def claim_interface(self, dev_handle: _Handle, intf: int) -> None:
        self._call("claim", handle=dev_handle.id, interface=int(intf))

    def release_interface(self, dev_handle: _Handle, intf: int) -> None:
        self._call("release", handle=dev_handle.id, interface=int(intf))

    def bulk_write(
        self, dev_handle: _Handle, ep: int, intf: int, data: array.array[int], timeout: int
    ) -> int:
        return int(
            self._call(
                "bulk_write", timeout, handle=dev_handle.id, endpoint=ep, data=data.tobytes()
            )
        )

    def bulk_read(
        self, dev_handle: _Handle, ep: int, intf: int, buff: array.array[int], timeout: int
    ) -> int:
        length = len(buff) * buff.itemsize
        data: bytes = self._call(
            "bulk_read", timeout, handle=dev_handle.id, endpoint=ep, length=length
        )
        buff[: len(data)] = array.array(buff.typecode, data)
        return len(data)

    def ctrl_transfer(  # noqa: PLR0917 - pyusb's IBackend signature
        self,
        dev_handle: _Handle,
        bmRequestType: int,  # noqa: N803 - pyusb's parameter names
        bRequest: int,  # noqa: N803
        wValue: int,  # noqa: N803
        wIndex: int,  # noqa: N803
        data: array.array[int],
        timeout: int,
    ) -> int:
        length = len(data) * data.itemsize
        read: bytes = self._call(
            "control",
            timeout,
            handle=dev_handle.id,
            request_type=bmRequestType,
            request=bRequest,
            value=wValue,
            index=wIndex,
            length=length,
        )
        data[: len(read)] = array.array(data.typecode, read)
        return len(read)

    def clear_halt(self, dev_handle: _Handle, ep: int) -> None:
        self._call("clear_halt", handle=dev_handle.id, endpoint=ep)

    def reset_device(self, dev_handle: _Handle) -> None:
        self._call("reset", handle=dev_handle.id)

    def is_kernel_driver_active(self, dev_handle: _Handle, intf: int) -> bool:
        return False  # no kernel driver binds to a vendor-specific interface

    def detach_kernel_driver(self, dev_handle: _Handle, intf: int) -> None:
        raise _usb_error("not_found", "no kernel driver is attached")

    def attach_kernel_driver(self, dev_handle: _Handle, intf: int) -> None:
        raise _usb_error("not_found", "no kernel driver to attach")


def backend_from_url(url: str) -> SimUsbBackend:
    """The backend for a slot's `usb_backend = "sim+unix:///path/to/usb.sock"`."""
    return SimUsbBackend(url_path(url))
