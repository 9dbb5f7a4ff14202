"""Messages between jigsim's simulated USB bus (`sim.usb_bus`) and its clients, on a Unix socket.

Each message is a 4-byte big-endian length and one CBOR map. A client sends a request
`{"op": NAME, ...arguments}` and reads its answer, `{"ok": VALUE}` or `{"error": NAME,
"message": TEXT}`, before it sends the next request on that connection; a client that wants two
requests at once (a pending bulk read and a write) uses two connections. Error names are
libusb's (`LIBUSB_ERROR_NO_DEVICE` is `no_device`), and `usb_error` turns them into the
exceptions pyusb raises for libusb's errors, so a program cannot tell the simulated bus from a
real one by its errors.

Operations (arguments; answer):

- `enumerate` (); a list of devices on the bus, each `{id, bus, address, port_numbers, speed,
  device: bytes (device descriptor), configurations: [bytes (full configuration descriptor)]}`
- `open` (device); handle. `close` (handle)
- `get_configuration` (handle); value. `set_configuration` (handle, value)
- `claim` / `release` (handle, interface). `set_altsetting` (handle, interface, alt)
- `control` (handle, request_type, request, value, index, data | length, timeout_ms); bytes read
  (IN) or the count written (OUT)
- `bulk_write` (handle, endpoint, data, timeout_ms); count written
- `bulk_read` (handle, endpoint, length, timeout_ms); bytes read
- `clear_halt` (handle, endpoint). `reset` (handle)
- test controls: `devices` (); a list of `{port, attached, plugged, address, guid}`;
  `unplug` / `plug` (port, e.g. "1-2.3"): pull or put back the device's cable.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import struct
from typing import Any, Final

import cbor2

__all__ = [
    "LIBUSB_ERRORS",
    "MAX_MESSAGE",
    "UsbRequestError",
    "WireError",
    "encode",
    "read_message",
    "recv_message",
    "request",
    "send_message",
    "url_path",
]

MAX_MESSAGE: Final = 1 << 20
SCHEME: Final = "sim+unix"
_LENGTH: Final = struct.Struct("!I")
CONTROL_TIMEOUT_S: Final = 5.0

# name: (libusb error code, errno, libusb's text), as pyusb's libusb1 backend reports them.
LIBUSB_ERRORS: Final[dict[str, tuple[int, int, str]]] = {
    "io": (-1, errno.EIO, "Input/Output Error"),
    "invalid_param": (-2, errno.EINVAL, "Invalid parameter"),
    "access": (-3, errno.EACCES, "Access denied (insufficient permissions)"),
    "no_device": (-4, errno.ENODEV, "No such device (it may have been disconnected)"),
    "not_found": (-5, errno.ENOENT, "Entity not found"),
    "busy": (-6, errno.EBUSY, "Resource busy"),
    "timeout": (-7, errno.ETIMEDOUT, "Operation timed out"),
    "overflow": (-8, errno.EOVERFLOW, "Overflow"),
    "pipe": (-9, errno.EPIPE, "Pipe error"),
    "not_supported": (-12, errno.ENOSYS, "Operation not supported or unimplemented"),
}


class WireError(Exception):
    """A message that is not a length-prefixed CBOR map, or a connection that broke."""


class UsbRequestError(Exception):
    """A libusb error the bus answers with (`name` is a key of LIBUSB_ERRORS)."""

    def __init__(self, name: str, message: str = "") -> None:
        if name not in LIBUSB_ERRORS:  # from a newer bus: still an error, of the generic kind
            name, message = "io", f"{name}: {message}"
        super().__init__(message or LIBUSB_ERRORS[name][2])
        self.name = name
        self.message = message or LIBUSB_ERRORS[name][2]


def url_path(url: str) -> str:
    """The socket path of a `sim+unix:///path/to/usb.sock` URL."""
    prefix = f"{SCHEME}://"
    if not url.startswith(prefix) or len(url) == len(prefix):
        raise ValueError(f"{url!r} is not a {prefix}/path/to/socket URL")
    return url[len(prefix) :]


def encode(message: dict[str, Any]) -> bytes:
    body = cbor2.dumps(message)
    if len(body) > MAX_MESSAGE:
        raise WireError(f"message of {len(body)} bytes is larger than {MAX_MESSAGE}")
    return _LENGTH.pack(len(body)) + body


def _decode(body: bytes) -> dict[str, Any]:
    try:
        message = cbor2.loads(body)
    except (cbor2.CBORDecodeError, ValueError, TypeError) as exc:
        raise WireError(f"not CBOR: {exc}") from exc
    if not isinstance(message, dict):
        raise WireError(f"not a CBOR map but {type(message).__name__}")
    return message


def _length(head: bytes) -> int:
    (length,) = _LENGTH.unpack(head)
    if length > MAX_MESSAGE:
        raise WireError(f"message of {length} bytes is larger than {MAX_MESSAGE}")
    return int(length)


async def read_message(reader: asyncio.StreamReader) -> dict[str, Any] | None:
    """The next message, or None when the other side closed the connection between messages."""
    try:
        head = await reader.readexactly(_LENGTH.size)
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise WireError("connection closed inside a message") from exc
        return None
    try:
        body = await reader.readexactly(_length(head))
    except asyncio.IncompleteReadError as exc:
        raise WireError("connection closed inside a message") from exc
    return _decode(body)


def send_message(sock: socket.socket, message: dict[str, Any]) -> None:
    sock.sendall(encode(message))


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise WireError("the simulator closed the connection")
        data += chunk
    return bytes(data)


def recv_message(sock: socket.socket) -> dict[str, Any]:
    """Read one message (blocking, within the socket's own timeout)."""
    return _decode(_recv_exactly(sock, _length(_recv_exactly(sock, _LENGTH.size))))


def request(path: str, message: dict[str, Any], timeout_s: float = CONTROL_TIMEOUT_S) -> Any:
    """One request on a new connection to the bus at `path`; its answer's value.

    Raises UsbRequestError for an error answer, OSError or WireError when the bus cannot be reached.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_s)
        sock.connect(path)
        send_message(sock, message)
        answer = recv_message(sock)
    if "error" in answer:
        raise UsbRequestError(str(answer["error"]), str(answer.get("message", "")))
    return answer.get("ok")
