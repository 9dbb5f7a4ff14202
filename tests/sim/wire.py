"""A bare SMP requester over a pty, for testing the simulated hub without the drivers' client.

Requests are the `smp` package's models, framed with `drivers.framing`; the host side of the
pty is a raw non-blocking descriptor read and written with os.read/os.write.
"""

from __future__ import annotations

import asyncio
import os
import termios
import tty
from typing import Any, Final

import cbor2
from smp import message as smpmsg

from drivers.framing import RESPONSE_OPS, ConsoleFraming, Framing, RawFraming

REPLY_TIMEOUT_S: Final = 3.0


class Wire:
    """The host end of a simulated hub's port."""

    def __init__(self, path: str, framing: str = "raw") -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(self.fd)
        termios.tcflush(self.fd, termios.TCIOFLUSH)
        self.framing: Framing = (
            RawFraming(accept_ops=RESPONSE_OPS) if framing == "raw" else ConsoleFraming()
        )
        self.decoder = self.framing.decoder()
        self.frames: list[bytes] = []

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> Wire:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def write(self, data: bytes) -> None:
        """Write all of `data`, waiting while the pty buffer is full."""
        loop = asyncio.get_running_loop()
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self.fd, view) :]
            except BlockingIOError:
                ready: asyncio.Future[None] = loop.create_future()
                loop.add_writer(self.fd, _wake, ready)
                try:
                    async with asyncio.timeout(REPLY_TIMEOUT_S):
                        await ready
                finally:
                    loop.remove_writer(self.fd)

    async def send(self, request: smpmsg.Request | bytes) -> None:
        await self.write(self.framing.encode(bytes(request)))

    async def receive(self, timeout_s: float = REPLY_TIMEOUT_S) -> bytes:
        """The next response frame; TimeoutError if none comes in `timeout_s`."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout_s):
            while not self.frames:
                ready = loop.create_future()
                loop.add_reader(self.fd, _wake, ready)
                try:
                    await ready
                finally:
                    loop.remove_reader(self.fd)
                try:
                    self.frames += self.decoder.feed(os.read(self.fd, 65536))
                except BlockingIOError:
                    continue
        return self.frames.pop(0)

    async def request(
        self, request: smpmsg.Request | bytes, timeout_s: float = REPLY_TIMEOUT_S
    ) -> bytes:
        await self.send(request)
        return await self.receive(timeout_s)

    async def silent(self, for_s: float) -> bool:
        """True when nothing arrives for `for_s` seconds."""
        try:
            await self.receive(for_s)
        except TimeoutError:
            return True
        return False


def _wake(ready: asyncio.Future[None]) -> None:
    if not ready.done():
        ready.set_result(None)


def body(frame: bytes) -> dict[str, Any]:
    """The CBOR map of a response frame."""
    decoded = cbor2.loads(frame[8:])
    assert isinstance(decoded, dict)
    return decoded


class LineWire:
    """The host end of a rig controller's port: ASCII lines."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(self.fd)
        termios.tcflush(self.fd, termios.TCIOFLUSH)
        self.buffer = bytearray()

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> LineWire:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, line: str, end: str = "\n") -> None:
        os.write(self.fd, (line + end).encode("ascii"))

    async def readline(self, timeout_s: float = REPLY_TIMEOUT_S) -> str:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout_s):
            while b"\n" not in self.buffer:
                ready: asyncio.Future[None] = loop.create_future()
                loop.add_reader(self.fd, _wake, ready)
                try:
                    await ready
                finally:
                    loop.remove_reader(self.fd)
                try:
                    self.buffer += os.read(self.fd, 4096)
                except BlockingIOError:
                    continue
        line, _, rest = bytes(self.buffer).partition(b"\n")
        self.buffer = bytearray(rest)
        return line.decode("ascii")

    async def ask(self, line: str, end: str = "\n") -> str:
        self.send(line, end)
        return await self.readline()
