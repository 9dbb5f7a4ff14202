"""SerialTransport on real ptys and on a pyserial socket:// URL: frames, counters, idle resync,
and every pending request failing with a typed error when the port goes away."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from smp import header as smpheader
from smp import os_management as smpos

from drivers import serial
from drivers.errors import LinkClosed, LinkError, PortOpenFailed
from drivers.framing import ConsoleFraming
from drivers.smp_client import SmpClient
from tests.drivers.helpers import WAIT_S, eventually


@dataclass
class Collector:
    frames: list[bytes] = field(default_factory=list)
    lost: list[LinkError] = field(default_factory=list)

    def frame_received(self, frame: bytes) -> None:
        self.frames.append(frame)

    def connection_lost(self, error: LinkError) -> None:
        self.lost.append(error)


@dataclass
class Pty:
    master: int
    slave: int

    @property
    def path(self) -> str:
        return os.ttyname(self.slave)

    async def read_frame_bytes(self, count: int) -> bytes:
        """Read `count` bytes the host wrote (bounded wait)."""
        data = b""
        async with asyncio.timeout(WAIT_S):
            while len(data) < count:
                ready = asyncio.Event()
                loop = asyncio.get_running_loop()
                loop.add_reader(self.master, ready.set)
                try:
                    await ready.wait()
                finally:
                    loop.remove_reader(self.master)
                data += os.read(self.master, count - len(data))
        return data


@pytest.fixture
async def pty() -> AsyncIterator[Pty]:
    master, slave = os.openpty()
    yield Pty(master, slave)
    os.close(slave)
    with contextlib.suppress(OSError):  # the test may have closed it
        os.close(master)


ECHO = bytes(smpos.EchoWriteResponse(r="hello", sequence=5))


async def test_frames_arrive_and_are_counted(pty: Pty) -> None:
    link = await serial.open(pty.path, 115200, "raw", name="rig1/slot1")
    collector = Collector()
    link.set_listener(collector)
    try:
        os.write(pty.master, b"noise" + ECHO[:5])
        os.write(pty.master, ECHO[5:] + ECHO)
        await eventually(lambda: len(collector.frames) == 2)
        assert collector.frames == [ECHO, ECHO]
        assert link.bytes_received == 5 + 2 * len(ECHO)
        assert link.bytes_dropped == 5
        assert link.link_errors["garbage"] >= 1
        request = bytes(smpos.EchoWriteRequest(d="x", sequence=1))
        link.send(request)
        assert await pty.read_frame_bytes(len(request)) == request
        assert link.bytes_sent == len(request)
        assert link.baudrate == 115200
        assert link.url == pty.path
    finally:
        await link.close()
    assert link.is_closed
    assert collector.lost
    assert "closed by jigd" in str(collector.lost[0])
    with pytest.raises(LinkClosed):
        link.send(request)


async def test_idle_line_drops_a_partial_frame(pty: Pty) -> None:
    link = await serial.open(pty.path, 115200, "raw", idle_reset_s=0.05)
    collector = Collector()
    link.set_listener(collector)
    try:
        os.write(pty.master, ECHO[:10])
        await eventually(lambda: link.link_errors["idle_reset"] == 1)
        assert link.bytes_dropped == 10
        os.write(pty.master, ECHO)
        await eventually(lambda: len(collector.frames) == 1)
        assert collector.frames == [ECHO]
    finally:
        await link.close()


async def test_console_framing_on_the_wire(pty: Pty) -> None:
    link = await serial.open(pty.path, 921600, "console")
    collector = Collector()
    link.set_listener(collector)
    try:
        os.write(pty.master, b"[00:00:01] boot\n" + ConsoleFraming().encode(ECHO))
        await eventually(lambda: len(collector.frames) == 1)
        assert collector.frames == [ECHO]
        request = bytes(smpos.EchoWriteRequest(d="x", sequence=1))
        link.send(request)
        wire = ConsoleFraming().encode(request)
        assert await pty.read_frame_bytes(len(wire)) == wire
        assert link.wire_size(len(request)) == len(wire)
    finally:
        await link.close()


async def test_port_loss_fails_every_pending_request(pty: Pty) -> None:
    link = await serial.open(pty.path, 115200, "raw", name="rig2/slot7")
    client = SmpClient(link, timeout_s=WAIT_S)
    futures = [
        client.submit(smpos.EchoWriteRequest(d=str(i)), smpos.EchoWriteResponse) for i in range(3)
    ]
    await pty.read_frame_bytes(1)
    os.close(pty.master)  # the device end vanishes (USB adapter pulled)
    results = await asyncio.gather(*futures, return_exceptions=True)
    assert all(isinstance(r, LinkClosed) for r in results), results
    assert all("rig2/slot7" in str(r) for r in results)
    assert link.link_errors["port_error"] == 1
    with pytest.raises(LinkClosed):
        await client.request(smpos.EchoWriteRequest(d="x"), smpos.EchoWriteResponse)
    await client.close()


async def test_closing_a_lost_port_does_not_close_it_twice(pty: Pty) -> None:
    """The port failed and pyserial-asyncio-fast is already closing it: our close must not
    start a second close (whose connection_lost would find no protocol: a task error)."""
    loop = asyncio.get_running_loop()
    reports: list[str] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reports.append(context["message"]))
    try:
        link = await serial.open(pty.path, 115200, "raw", name="rig2/slot7")
        collector = Collector()
        link.set_listener(collector)
        os.close(pty.master)  # the device end vanishes
        transport = link._transport
        assert transport is not None
        async with asyncio.timeout(WAIT_S):
            while not transport.is_closing():  # noqa: ASYNC110 - no event for this
                await asyncio.sleep(0)
        assert not collector.lost  # the library's own close is under way, not finished
        await link.close()
        assert collector.lost
        await asyncio.sleep(0.2)  # any second close task runs its executor step and fails
        gc.collect()
    finally:
        loop.set_exception_handler(previous)
    assert [r for r in reports if "Fatal error" not in r] == [], reports


async def test_missing_port_names_the_port(tmp_path: Path) -> None:
    missing = str(tmp_path / "ttyNOPE")
    with pytest.raises(PortOpenFailed) as caught:
        await serial.open(missing, 115200, "raw", name="rig1/slot4")
    assert "rig1/slot4" in str(caught.value)
    assert missing in str(caught.value)


async def test_socket_url_through_pyserial(tmp_path: Path) -> None:
    """A hub behind a serial server (ser2net style) at socket://host:port."""

    async def hub(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = smpheader.Header.loads(await reader.readexactly(8))
        await reader.readexactly(head.length)
        writer.write(bytes(smpos.EchoWriteResponse(r="over tcp", sequence=head.sequence)))
        await writer.drain()
        await reader.read()  # until the host closes
        writer.close()

    server = await asyncio.start_server(hub, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        link = await serial.open(f"socket://127.0.0.1:{port}", 115200, "raw")
        client = SmpClient(link, timeout_s=WAIT_S)
        try:
            answer = await client.request(smpos.EchoWriteRequest(d="x"), smpos.EchoWriteResponse)
            assert answer.r == "over tcp"
        finally:
            await client.close()
    finally:
        server.close()
        await server.wait_closed()


async def test_a_write_to_a_vanished_port_is_a_lost_link_not_a_fatal_error(
    pty: Pty, caplog: pytest.LogCaptureFixture
) -> None:
    """A frame sent after the device end vanished, before the read side noticed: the write
    fails (EIO) and the link is lost, reported once as LinkClosed; asyncio logs no "Fatal
    write error" traceback."""
    link = await serial.open(pty.path, 115200, "raw", name="rig2/slot7")
    collector = Collector()
    link.set_listener(collector)
    os.close(pty.master)
    with caplog.at_level(logging.DEBUG):
        link.send(bytes(smpos.EchoWriteRequest(d="x", sequence=1)))
        await eventually(lambda: bool(collector.lost))
        await link.close()
    assert len(collector.lost) == 1
    assert isinstance(collector.lost[0], LinkClosed)
    assert "Fatal write error" not in caplog.text
    assert [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info] == []
