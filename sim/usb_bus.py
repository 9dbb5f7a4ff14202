"""jigsim's simulated USB bus: the USB hubs of its rigs, served to pyusb on a Unix socket.

A host reaches the bus through `sim.usb_backend.SimUsbBackend`, a pyusb backend, with the URL
`sim+unix:///path/to/usb.sock` (a slot's `usb_backend`); the daemon then uses pyusb's own code
(`usb.core.find`, `usb.util.claim_interface`, `dev.write`, `dev.read`) as it would with libusb.
The messages are `sim.usb_wire`'s. Each slot's device (`sim.usb_device.SimUsbDevice`) sits at
port path `<bus>-<rig>.<slot>` (bus 1: `1-2.3` is rig 2, slot 3), as if each rig were a USB hub
on root port R of the station's bus 1.

Handles opened on a connection are closed when that connection closes (a host process that
dies gives its interfaces back, as the kernel does when a process's usbfs files close). Tests
pull and put back a device's cable with `unplug`/`plug` (`sim.harness.unplug_usb`, `jigsim usb`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

from drivers.usb import format_port_path
from sim.timing import USB_FULL_SPEED, UsbLink
from sim.usb_device import SIM_USB_PRODUCT_ID, SIM_USB_VENDOR_ID, SimUsbDevice, UsbHandle
from sim.usb_wire import SCHEME, UsbRequestError, WireError, encode, read_message

__all__ = ["MAX_SOCKET_PATH", "UsbBus"]

_LOGGER = logging.getLogger(__name__)

MAX_SOCKET_PATH: Final = 107  # bytes in sockaddr_un.sun_path, less the terminating NUL
FIRST_ADDRESS: Final = 2  # address 1 is the root hub's
LAST_ADDRESS: Final = 127
STOP_TIMEOUT_S: Final = 5.0

_Op = Callable[[dict[str, Any], int], Awaitable[Any]]


def _int(message: dict[str, Any], key: str) -> int:
    value = message.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise UsbRequestError("invalid_param", f"{key} must be an integer")
    return value


def _timeout_s(message: dict[str, Any]) -> float:
    # libusb's timeout 0 means "no timeout"; a day stands in for it.
    timeout_ms = _int(message, "timeout_ms")
    return timeout_ms / 1000 if timeout_ms > 0 else 86_400.0


class UsbBus:
    """A simulated USB bus with its devices, served on `socket_path` while `async with` is open."""

    def __init__(
        self,
        socket_path: Path,
        *,
        number: int = 1,
        link: UsbLink = USB_FULL_SPEED,
        vendor_id: int = SIM_USB_VENDOR_ID,
        product_id: int = SIM_USB_PRODUCT_ID,
    ) -> None:
        self.socket_path = socket_path
        self.number = number
        self.link = link
        self.vendor_id = vendor_id  # of the devices `add_device` makes
        self.product_id = product_id
        self.devices: dict[str, SimUsbDevice] = {}
        self._handles: dict[int, UsbHandle] = {}
        self._handle_ids = itertools.count(1)
        self._attach_ids = itertools.count(1)
        self._connection_ids = itertools.count(1)
        self._next_address = FIRST_ADDRESS
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[Any]] = set()
        self._ops: dict[str, _Op] = {
            "enumerate": self._enumerate,
            "open": self._open,
            "close": self._close,
            "get_configuration": self._get_configuration,
            "set_configuration": self._set_configuration,
            "claim": self._claim,
            "release": self._release,
            "set_altsetting": self._set_altsetting,
            "control": self._control,
            "bulk_write": self._bulk_write,
            "bulk_read": self._bulk_read,
            "clear_halt": self._clear_halt,
            "reset": self._reset,
            "devices": self._devices,
            "unplug": self._unplug,
            "plug": self._plug,
        }

    @property
    def url(self) -> str:
        """What a slot's `usb_backend` says to reach this bus."""
        return f"{SCHEME}://{self.socket_path.resolve()}"

    def add_device(self, port_numbers: tuple[int, ...]) -> SimUsbDevice:
        """A device (off the bus until it is opened, bound to a powered hub and plugged)."""
        path = format_port_path(self.number, port_numbers)
        if path in self.devices:
            raise ValueError(f"USB port {path} already has a device")
        device = SimUsbDevice(
            self,
            port_numbers,
            vendor_id=self.vendor_id,
            product_id=self.product_id,
            link=self.link,
        )
        self.devices[path] = device
        return device

    def device_at(self, port: str) -> SimUsbDevice:
        device = self.devices.get(port)
        if device is None:
            known = ", ".join(sorted(self.devices)) or "none"
            raise UsbRequestError("not_found", f"no USB port {port} on this bus (ports: {known})")
        return device

    # -- AddressSource ---------------------------------------------------------------------------

    def allocate_address(self, device: SimUsbDevice) -> int:
        """The next free address, as a host controller hands them out (wrapping at 127)."""
        in_use = {d.address for d in self.devices.values() if d is not device and d.attached}
        for _ in range(LAST_ADDRESS - FIRST_ADDRESS + 1):
            address = self._next_address
            self._next_address = address + 1 if address < LAST_ADDRESS else FIRST_ADDRESS
            if address not in in_use:
                return address
        raise RuntimeError(f"USB bus {self.number}: no free address")

    def next_attach_id(self) -> int:
        return next(self._attach_ids)

    # -- serving -----------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        path = str(self.socket_path)
        if len(path.encode()) > MAX_SOCKET_PATH:
            raise ValueError(
                f"{path}: a Unix socket path may have at most {MAX_SOCKET_PATH} bytes; "
                "choose a shorter --usb-socket"
            )
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()  # left by a simulator that was killed
        self._server = await asyncio.start_unix_server(self._serve_connection, path=path)
        _LOGGER.info("USB bus %d: serving %s", self.number, self.url)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        tasks = list(self._connections)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=STOP_TIMEOUT_S)
        if server is not None:
            await server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        connection = next(self._connection_ids)
        try:
            while True:
                message = await read_message(reader)
                if message is None:
                    break
                writer.write(encode(await self._answer(message, connection)))
                await writer.drain()
        except (WireError, ConnectionError) as exc:
            _LOGGER.debug("USB bus: connection %d dropped: %s", connection, exc)
        finally:
            for handle in [h for h in self._handles.values() if h.owner == connection]:
                self._forget(handle)
            writer.close()
            if task is not None:
                self._connections.discard(task)

    async def _answer(self, message: dict[str, Any], connection: int) -> dict[str, Any]:
        op = message.get("op")
        handler = self._ops.get(op) if isinstance(op, str) else None
        if handler is None:
            return {"error": "not_supported", "message": f"unknown operation {op!r}"}
        try:
            return {"ok": await handler(message, connection)}
        except UsbRequestError as fault:
            return {"error": fault.name, "message": fault.message}

    # -- operations ------------------------------------------------------------------------------

    def _handle(self, message: dict[str, Any]) -> UsbHandle:
        handle = self._handles.get(_int(message, "handle"))
        if handle is None:
            raise UsbRequestError("invalid_param", "no such handle (closed?)")
        return handle

    def _forget(self, handle: UsbHandle) -> None:
        self._handles.pop(handle.id, None)
        handle.device.close_handle(handle)

    async def _enumerate(self, message: dict[str, Any], connection: int) -> Any:
        return [d.record() for d in self.devices.values() if d.attached]

    async def _open(self, message: dict[str, Any], connection: int) -> Any:
        wanted = _int(message, "device")
        for device in self.devices.values():
            if device.attached and device.attach_id == wanted:
                handle = device.open_handle(next(self._handle_ids), connection)
                self._handles[handle.id] = handle
                return handle.id
        raise UsbRequestError("no_device")

    async def _close(self, message: dict[str, Any], connection: int) -> Any:
        self._forget(self._handle(message))
        return None

    async def _get_configuration(self, message: dict[str, Any], connection: int) -> Any:
        handle = self._handle(message)
        return handle.device.get_configuration(handle)

    async def _set_configuration(self, message: dict[str, Any], connection: int) -> Any:
        handle = self._handle(message)
        handle.device.set_configuration(handle, _int(message, "value"))
        return None

    async def _claim(self, message: dict[str, Any], connection: int) -> Any:
        handle = self._handle(message)
        handle.device.claim(handle, _int(message, "interface"))
        return None

    async def _release(self, message: dict[str, Any], connection: int) -> Any:
        handle = self._handle(message)
        handle.device.release(handle, _int(message, "interface"))
        return None

    async def _set_altsetting(self, message: dict[str, Any], connection: int) -> Any:
        handle = self._handle(message)
        handle.device.set_altsetting(handle, _int(message, "interface"), _int(message, "alt"))
        return None

    async def _control(self, message: dict[str, Any], connection: int) -> Any:
        handle = self._handle(message)
        request_type = _int(message, "request_type")
        if not request_type & 0x80:
            raise UsbRequestError("pipe", "host-to-device control requests STALL here")
        return handle.device.control(
            handle,
            request_type=request_type,
            request=_int(message, "request"),
            value=_int(message, "value"),
            index=_int(message, "index"),
            length=_int(message, "length"),
        )

    async def _bulk_write(self, message: dict[str, Any], connection: int) -> Any:
        handle = self._handle(message)
        data = message.get("data")
        if not isinstance(data, bytes):
            raise UsbRequestError("invalid_param", "data must be bytes")
        return await handle.device.bulk_write(
            handle, _int(message, "endpoint"), data, _timeout_s(message)
        )

    async def _bulk_read(self, message: dict[str, Any], connection: int) -> Any:
        handle = self._handle(message)
        return await handle.device.bulk_read(
            handle, _int(message, "endpoint"), _int(message, "length"), _timeout_s(message)
        )

    async def _clear_halt(self, message: dict[str, Any], connection: int) -> Any:
        handle = self._handle(message)
        handle.device.clear_halt(handle, _int(message, "endpoint"))
        return None

    async def _reset(self, message: dict[str, Any], connection: int) -> Any:
        handle = self._handle(message)
        handle.device.reset(handle)
        return None

    async def _devices(self, message: dict[str, Any], connection: int) -> Any:
        return [d.state() for d in self.devices.values()]

    def _port(self, message: dict[str, Any]) -> SimUsbDevice:
        port = message.get("port")
        if not isinstance(port, str):
            raise UsbRequestError("invalid_param", "port must be a port path such as 1-2.3")
        return self.device_at(port)

    async def _unplug(self, message: dict[str, Any], connection: int) -> Any:
        device = self._port(message)
        _LOGGER.warning("USB %s: cable pulled", device.path)
        device.unplug()
        return device.state()

    async def _plug(self, message: dict[str, Any], connection: int) -> Any:
        device = self._port(message)
        _LOGGER.warning("USB %s: cable plugged back", device.path)
        device.plug()
        return device.state()
