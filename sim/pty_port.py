"""A pseudo-terminal standing in for a serial port, published at a stable path.

The simulator holds the master side; a host opens the slave through the published symlink
(`<dir>/rig1/slot3`), as it would a udev symlink to a USB serial adapter. The simulator keeps
its own slave descriptor open, so the master never sees EIO when a host closes the port, and
bytes written while no host has it open wait in the terminal's buffer (a host flushes them on
open, as pyserial's `reset_input_buffer` does).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tty
from pathlib import Path
from typing import Final, Protocol

__all__ = ["Port", "PortClosedError", "PtyPort"]

_LOGGER = logging.getLogger(__name__)

READ_CHUNK: Final = 4096


class PortClosedError(ConnectionError):
    """The port was closed while a read or write waited on it."""


class Port(Protocol):
    """A byte stream the simulator serves a hub or a rig controller on."""

    @property
    def path(self) -> str: ...

    async def read(self, max_bytes: int = READ_CHUNK) -> bytes:
        """Wait for at least one byte; return what is available, at most `max_bytes`."""
        ...

    async def write(self, data: bytes) -> None:
        """Write all of `data`, waiting while the other side does not take it."""
        ...

    def frame_end(self) -> None:
        """The writer finished one frame (a USB device ends its bulk transfer there)."""
        ...


class PtyPort:
    """A pty pair: the simulator reads and writes the master, a host opens `path`."""

    def __init__(self, link: Path) -> None:
        self._link = link
        self._master = -1
        self._slave = -1
        self._tty_name = ""
        self._waiters: set[asyncio.Future[None]] = set()

    @property
    def path(self) -> str:
        """The stable path a host opens (a symlink to the slave device)."""
        return str(self._link)

    @property
    def is_open(self) -> bool:
        return self._master >= 0

    def open(self) -> None:
        """Create the pty pair and publish the symlink (atomically replacing a stale one)."""
        if self.is_open:
            return
        master, slave = os.openpty()
        try:
            tty.setraw(slave)
            os.set_blocking(master, False)
            name = os.ttyname(slave)
            self._link.parent.mkdir(parents=True, exist_ok=True)
            temp = self._link.with_name(f".{self._link.name}.{os.getpid()}.tmp")
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
            temp.symlink_to(name)
            temp.replace(self._link)
        except OSError:
            os.close(master)
            os.close(slave)
            raise
        self._master, self._slave, self._tty_name = master, slave, name
        _LOGGER.debug("%s: serving %s", self._link, name)

    def close(self) -> None:
        """Remove the symlink (if it is still ours), wake waiters, close both descriptors."""
        if not self.is_open:
            return
        loop = asyncio.get_running_loop()
        loop.remove_reader(self._master)
        loop.remove_writer(self._master)
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(PortClosedError(f"{self._link} closed"))
        self._waiters.clear()
        with contextlib.suppress(OSError):
            if str(self._link.readlink()) == self._tty_name:
                self._link.unlink()
        os.close(self._master)
        os.close(self._slave)
        self._master = self._slave = -1
        _LOGGER.debug("%s: closed", self._link)

    async def read(self, max_bytes: int = READ_CHUNK) -> bytes:
        while True:
            self._check_open()
            try:
                data = os.read(self._master, max_bytes)
            except BlockingIOError:
                await self._wait(writing=False)
                continue
            if data:
                return data
            await self._wait(writing=False)  # pragma: no cover - a pty master does not EOF

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            self._check_open()
            try:
                sent = os.write(self._master, view)
            except BlockingIOError:
                await self._wait(writing=True)  # backpressure: the host is not reading
                continue
            view = view[sent:]

    def frame_end(self) -> None:
        """A byte stream has no frame boundaries."""

    def _check_open(self) -> None:
        if not self.is_open:
            raise PortClosedError(f"{self._link} is closed")

    async def _wait(self, *, writing: bool) -> None:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()

        def ready() -> None:
            if not waiter.done():
                waiter.set_result(None)

        add, remove = (
            (loop.add_writer, loop.remove_writer)
            if writing
            else (loop.add_reader, loop.remove_reader)
        )
        fd = self._master
        add(fd, ready)
        self._waiters.add(waiter)
        try:
            await waiter
        finally:
            self._waiters.discard(waiter)
            if self._master == fd:
                remove(fd)
