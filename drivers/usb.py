"""USB transport: SMP frames on the bulk endpoints of a hub's vendor-specific USB interface.

Some hubs expose their maintenance interface as a USB device rather than a serial port. A slot
names its hub by USB port path (`1-1.3`: bus 1, root port 1, then port 3 of the hub behind it,
as Linux names devices in sysfs) and by vendor and product id. `open` finds the device through
pyusb, checks its ids, claims its vendor-specific interface (class 0xFF) and carries raw SMP
frames on its bulk OUT and IN endpoints, one frame per transfer (`drivers.usb_bulk`: a short
packet or ZLP ends each transfer; the SMP header's length field is checked against it).

pyusb is synchronous, so it never runs on the event loop: a reader thread per device keeps a
bulk read pending (with a short timeout, so that it notices a close) and a writer thread sends
queued frames in order; what they get is handed to the loop with `call_soon_threadsafe`. A
device that goes away (cable pulled, slot unpowered: libusb's LIBUSB_ERROR_NO_DEVICE, errno
ENODEV) ends the link with `DeviceDisconnected` (a `LinkClosed`), and every pending request
fails with it. The slot worker opens a new link for the next attempt; `open` waits (bounded by
`attach_timeout_s`) for the device to enumerate again, as it does after a power cycle.

The pyusb backend: libusb-1.0 when the slot names none; otherwise a URL whose scheme names an
entry point of the `jigd.usb_backends` group, called with the URL (the simulator registers
`sim+unix`: `sim+unix:///run/jigsim/usb.sock` reaches jigsim's simulated USB bus).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import queue
import re
import threading
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any, Final

import usb.core
import usb.util

from drivers.errors import DeviceDisconnected, LinkClosed, PortOpenFailed
from drivers.framing import RESPONSE_OPS
from drivers.transport import TransportBase
from drivers.usb_bulk import TransferAssembler, TransferDecoder, needs_zlp

__all__ = [
    "ATTACH_TIMEOUT_S",
    "USB_BACKEND_GROUP",
    "VENDOR_SPECIFIC_CLASS",
    "UsbTransport",
    "format_port_path",
    "load_backend",
    "open",
    "parse_port_path",
]

_LOGGER = logging.getLogger(__name__)

USB_BACKEND_GROUP: Final = "jigd.usb_backends"
VENDOR_SPECIFIC_CLASS: Final = 0xFF
ATTACH_TIMEOUT_S: Final = 5.0  # how long `open` waits for the device to enumerate
ATTACH_POLL_S: Final = 0.05
READ_POLL_S: Final = 0.05  # timeout of each pending bulk read: how soon a close is noticed
WRITE_TIMEOUT_S: Final = 2.0
CLOSE_TIMEOUT_S: Final = 2.0
READ_SIZE: Final = 16 * 1024  # a multiple of every wMaxPacketSize: larger than any frame
DRAIN_MAX_READS: Final = 16  # stale IN transfers read and dropped when a link opens
DRAIN_TIMEOUT_MS: Final = 5
_PORT_PATH: Final = re.compile(r"([1-9][0-9]{0,2})-([1-9][0-9]{0,2}(?:\.[1-9][0-9]{0,2}){0,6})")


def parse_port_path(text: str) -> tuple[int, tuple[int, ...]]:
    """`1-1.3` -> (1, (1, 3)): bus number and port numbers from the root hub down."""
    match = _PORT_PATH.fullmatch(text.strip())
    if match is None:
        raise ValueError(
            f"{text!r} is not a USB port path such as 1-1.3 (bus 1, port 1, then port 3)"
        )
    return int(match.group(1)), tuple(int(p) for p in match.group(2).split("."))


def format_port_path(bus: int, port_numbers: tuple[int, ...]) -> str:
    return f"{bus}-{'.'.join(str(p) for p in port_numbers)}"


def load_backend(spec: str | None) -> Any:
    """The pyusb backend a slot's `usb_backend` names (None: libusb-1.0).

    Raises LookupError (naming what is available) or OSError when it cannot be had.
    """
    if spec is None:
        import usb.backend.libusb1

        backend = usb.backend.libusb1.get_backend()
        if backend is None:
            raise OSError("libusb-1.0 is not installed (Debian: apt install libusb-1.0-0)")
        return backend
    scheme, sep, _rest = spec.partition("://")
    found = {ep.name: ep for ep in entry_points(group=USB_BACKEND_GROUP)}
    if not sep or scheme not in found:
        known = ", ".join(f"{name}://..." for name in sorted(found)) or "none"
        raise LookupError(
            f"no USB backend for {spec!r} (entry-point group {USB_BACKEND_GROUP!r}); available: "
            f"{known}; leave usb_backend unset for libusb"
        )
    factory = found[scheme].load()
    return factory(spec)


def _close_backend(backend: Any) -> None:
    """Release what a backend holds (the simulator's keeps sockets; libusb's has nothing)."""
    close = getattr(backend, "close", None)
    if callable(close):
        close()


class UsbTransport(TransportBase):
    """A `FrameTransport` over a claimed vendor-specific USB interface. Build it with `open`.

    Counters: `bytes_sent`, `bytes_received`, `bytes_dropped` (transfers that were not whole
    frames, stale data drained at open), `link_errors` by kind (`garbage`, `overflow`,
    `write_timeout`, `disconnected`, `usb_error`, `no_listener`).
    """

    def __init__(
        self,
        *,
        device: Any,
        backend: Any,
        interface: int,
        ep_out: int,
        ep_in: int,
        max_packet: int,
        name: str,
        port_path: str,
        read_poll_s: float = READ_POLL_S,
        write_timeout_s: float = WRITE_TIMEOUT_S,
    ) -> None:
        self._device = device
        self._backend = backend
        self._interface = interface
        self._ep_out = ep_out
        self._ep_in = ep_in
        self._max_packet = max_packet
        super().__init__(name)
        self._port_path = port_path
        self._read_poll_ms = max(1, round(read_poll_s * 1000))
        self._write_timeout_ms = max(1, round(write_timeout_s * 1000))
        self._assembler = TransferAssembler(read_size=READ_SIZE)
        self._decoder = TransferDecoder(accept_ops=RESPONSE_OPS)
        self._drained = 0
        self._outbox: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._open = False
        self._closed = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._threads: list[threading.Thread] = []

    # -- FrameTransport ----------------------------------------------------------------------

    @property
    def port_path(self) -> str:
        return self._port_path

    @property
    def max_packet(self) -> int:
        """wMaxPacketSize of the bulk OUT endpoint."""
        return self._max_packet

    @property
    def baudrate(self) -> int | None:
        return None

    @property
    def is_closed(self) -> bool:
        return not self._open

    @property
    def bytes_dropped(self) -> int:
        return self._decoder.dropped_bytes + self._assembler.dropped_bytes + self._drained

    def wire_size(self, frame_size: int) -> int:
        return frame_size  # USB adds no bytes to a frame, only packet boundaries

    @property
    def buffer_overhead(self) -> int:
        return 0

    def max_frame_in_lines(self, lines: int) -> int | None:
        return None  # one frame per bulk transfer: no console lines

    def send(self, frame: bytes) -> None:
        if not self._open:
            raise LinkClosed(self._name, f"cannot send: USB {self._port_path} is closed")
        if _LOGGER.isEnabledFor(logging.DEBUG):
            _LOGGER.debug("%s: tx %d bytes %s", self._name, len(frame), frame[:64].hex())
        self._outbox.put(frame)
        self._bytes_sent += len(frame)

    async def close(self) -> None:
        """Stop the threads, release the interface and the device; idempotent."""
        if self._closed.is_set():
            return
        was_open = self._open
        self._open = False
        self._halt_threads()
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await asyncio.to_thread(self._release)
        except TimeoutError:
            _LOGGER.warning(
                "%s: USB device not released within %.3g s", self._name, CLOSE_TIMEOUT_S
            )
        self._closed.set()
        if was_open and self._listener is not None:
            self._listener.connection_lost(LinkClosed(self._name, "closed by jigd"))

    # -- threads -----------------------------------------------------------------------------

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._open = True
        self._threads = [
            threading.Thread(target=self._read_loop, name=f"{self._name} usb rx", daemon=True),
            threading.Thread(target=self._write_loop, name=f"{self._name} usb tx", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _halt_threads(self) -> None:
        self._stop.set()
        self._outbox.put(None)

    def _call(self, callback: Callable[..., None], *args: Any) -> bool:
        """Run `callback(*args)` on the event loop; False once the loop is gone."""
        loop = self._loop
        if loop is None:
            return False
        try:
            loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            return False
        return True

    def _read_loop(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._device.read(self._ep_in, READ_SIZE, timeout=self._read_poll_ms)
            except usb.core.USBTimeoutError:
                continue
            except usb.core.USBError as exc:
                if not self._stop.is_set():
                    self._call(self._failed, exc)
                return
            if not self._call(self._chunk_received, bytes(data)):
                return

    def _write_loop(self) -> None:
        while True:
            frame = self._outbox.get()
            if frame is None or self._stop.is_set():
                return
            try:
                written = self._device.write(self._ep_out, frame, timeout=self._write_timeout_ms)
                if written == len(frame) and needs_zlp(len(frame), self._max_packet):
                    self._device.write(self._ep_out, b"", timeout=self._write_timeout_ms)
                elif written != len(frame):
                    # Cut short: end the broken transfer so the hub drops it whole.
                    self._device.write(self._ep_out, b"", timeout=self._write_timeout_ms)
                    self._call(self._count, "write_timeout")
            except usb.core.USBTimeoutError:
                self._call(self._count, "write_timeout")
            except usb.core.USBError as exc:
                if not self._stop.is_set():
                    self._call(self._failed, exc)
                return

    def _release(self) -> None:
        """In a worker thread: wait for the threads, then give the device back."""
        for thread in self._threads:
            thread.join(CLOSE_TIMEOUT_S)
        try:
            usb.util.release_interface(self._device, self._interface)
        except usb.core.USBError as exc:
            _LOGGER.debug("%s: release interface: %s", self._name, exc)
        try:
            usb.util.dispose_resources(self._device)
        except usb.core.USBError as exc:
            _LOGGER.debug("%s: dispose: %s", self._name, exc)
        _close_backend(self._backend)

    # -- on the event loop -------------------------------------------------------------------

    def _count(self, kind: str) -> None:
        self._link_errors[kind] += 1

    def _chunk_received(self, chunk: bytes) -> None:
        if not self._open:
            return
        self._bytes_received += len(chunk)
        if _LOGGER.isEnabledFor(logging.DEBUG):
            _LOGGER.debug("%s: rx %d bytes %s", self._name, len(chunk), chunk[:64].hex())
        overflows = self._assembler.overflows
        transfer = self._assembler.feed(chunk)
        if self._assembler.overflows != overflows:
            self._link_errors["overflow"] += 1
        if transfer is None:
            return
        bad = self._decoder.bad_transfers
        frames = self._decoder.feed(transfer)
        if self._decoder.bad_transfers != bad:
            self._link_errors["garbage"] += 1
        for frame in frames:
            listener = self._listener
            if listener is None:
                self._link_errors["no_listener"] += 1
                continue
            listener.frame_received(frame)

    def _failed(self, exc: usb.core.USBError) -> None:
        if not self._open:
            return
        self._open = False
        self._halt_threads()
        error: LinkClosed
        if exc.errno == errno.ENODEV:
            self._link_errors["disconnected"] += 1
            error = DeviceDisconnected(self._name, f"USB device {self._port_path}", str(exc))
            _LOGGER.warning("%s: USB device %s is gone", self._name, self._port_path)
        else:
            self._link_errors["usb_error"] += 1
            error = LinkClosed(self._name, f"USB error on {self._port_path}: {exc}")
            _LOGGER.warning("%s: USB error on %s: %s", self._name, self._port_path, exc)
        error.__cause__ = exc
        if self._listener is not None:
            self._listener.connection_lost(error)


def _at_port(backend: Any, bus: int, ports: tuple[int, ...]) -> Any:
    """The device enumerated at that port, or None."""
    for device in usb.core.find(find_all=True, backend=backend):
        if device.bus == bus and tuple(device.port_numbers or ()) == ports:
            return device
    return None


def _is_bulk(endpoint: Any, direction: int) -> bool:
    return bool(
        usb.util.endpoint_direction(endpoint.bEndpointAddress) == direction
        and usb.util.endpoint_type(endpoint.bmAttributes) == usb.util.ENDPOINT_TYPE_BULK
    )


def _claim(device: Any) -> tuple[int, int, int, int, int]:
    """Configure the device and claim its vendor interface; (interface, out, in, mps, stale)."""
    try:
        configuration = device.get_active_configuration()
    except usb.core.USBError:
        device.set_configuration()  # not configured yet: its first configuration
        configuration = device.get_active_configuration()
    interface = usb.util.find_descriptor(configuration, bInterfaceClass=VENDOR_SPECIFIC_CLASS)
    if interface is None:
        raise LookupError("it has no vendor-specific (class 0xFF) interface")
    ep_out = usb.util.find_descriptor(
        interface, custom_match=lambda e: _is_bulk(e, usb.util.ENDPOINT_OUT)
    )
    ep_in = usb.util.find_descriptor(
        interface, custom_match=lambda e: _is_bulk(e, usb.util.ENDPOINT_IN)
    )
    if ep_out is None or ep_in is None:
        raise LookupError("its vendor-specific interface lacks a bulk OUT or a bulk IN endpoint")
    number = int(interface.bInterfaceNumber)
    with contextlib.suppress(NotImplementedError):  # not on this platform: nothing to detach
        if device.is_kernel_driver_active(number):
            device.detach_kernel_driver(number)
    usb.util.claim_interface(device, number)
    stale = 0
    for _ in range(DRAIN_MAX_READS):  # answers to a previous link's requests
        try:
            stale += len(device.read(ep_in.bEndpointAddress, READ_SIZE, DRAIN_TIMEOUT_MS))
        except usb.core.USBTimeoutError:
            break
    return (
        number,
        int(ep_out.bEndpointAddress),
        int(ep_in.bEndpointAddress),
        int(ep_out.wMaxPacketSize),
        stale,
    )


def _dispose(device: Any) -> None:
    try:
        usb.util.dispose_resources(device)
    except usb.core.USBError as exc:
        _LOGGER.debug("dispose after a failed open: %s", exc)


async def _find(
    backend: Any, port: str, *, label: str, vendor_id: int, product_id: int, timeout_s: float
) -> Any:
    """Wait (bounded) until a device is enumerated at `port`; check its ids."""
    bus, ports = parse_port_path(port)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    last_error = ""
    while True:
        try:
            device = await asyncio.to_thread(_at_port, backend, bus, ports)
        except usb.core.USBError as exc:
            device, last_error = None, f"; enumeration failed: {exc}"
        if device is not None:
            if (device.idVendor, device.idProduct) != (vendor_id, product_id):
                raise PortOpenFailed(
                    label,
                    f"USB {port}",
                    f"the device there is {device.idVendor:04x}:{device.idProduct:04x}, not "
                    f"{vendor_id:04x}:{product_id:04x}; check the slot's usb_vendor_id and "
                    "usb_product_id",
                )
            return device
        if loop.time() >= deadline:
            raise PortOpenFailed(
                label,
                f"USB {port}",
                f"no device at that port within {timeout_s:.3g} s{last_error}; check the "
                "cable and that the slot is powered",
            )
        await asyncio.sleep(ATTACH_POLL_S)


async def open(
    port: str,
    *,
    vendor_id: int,
    product_id: int,
    backend: str | None = None,
    name: str | None = None,
    attach_timeout_s: float = ATTACH_TIMEOUT_S,
    read_poll_s: float = READ_POLL_S,
    write_timeout_s: float = WRITE_TIMEOUT_S,
) -> UsbTransport:
    """Open the USB hub at port path `port` (`1-1.3`) with those ids; raise PortOpenFailed.

    `backend` is the slot's `usb_backend` (None: libusb-1.0). `name` labels messages and logs.
    """
    label = name or f"USB {port}"
    try:
        parse_port_path(port)
        pyusb_backend = await asyncio.to_thread(load_backend, backend)
    except (ValueError, LookupError, OSError, ImportError) as exc:
        raise PortOpenFailed(label, f"USB {port}", str(exc)) from exc
    device = None
    try:
        device = await _find(
            pyusb_backend,
            port,
            label=label,
            vendor_id=vendor_id,
            product_id=product_id,
            timeout_s=attach_timeout_s,
        )
        interface, ep_out, ep_in, max_packet, stale = await asyncio.to_thread(_claim, device)
    except (usb.core.USBError, LookupError) as exc:
        if device is not None:
            await asyncio.to_thread(_dispose, device)
        await asyncio.to_thread(_close_backend, pyusb_backend)
        detail = str(exc)
        if isinstance(exc, usb.core.USBError) and exc.errno == errno.EBUSY:
            detail += " (the interface is claimed by another program: is another jigd running?)"
        raise PortOpenFailed(label, f"USB {port}", detail) from exc
    except BaseException:
        if device is not None:
            await asyncio.to_thread(_dispose, device)
        await asyncio.to_thread(_close_backend, pyusb_backend)
        raise
    link = UsbTransport(
        device=device,
        backend=pyusb_backend,
        interface=interface,
        ep_out=ep_out,
        ep_in=ep_in,
        max_packet=max_packet,
        name=label,
        port_path=port,
        read_poll_s=read_poll_s,
        write_timeout_s=write_timeout_s,
    )
    link._drained = stale
    link._start(asyncio.get_running_loop())
    _LOGGER.debug(
        "%s: opened USB %s (%04x:%04x), interface %d, endpoints 0x%02x/0x%02x, %d-byte packets",
        label,
        port,
        vendor_id,
        product_id,
        interface,
        ep_out,
        ep_in,
        max_packet,
    )
    return link
