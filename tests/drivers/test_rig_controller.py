"""RigController over a real pseudo-terminal, a tiny scripted controller board on the master."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from drivers.errors import RigClosed, RigCommandFailed, RigError, RigProtocolError, RigTimeout
from drivers.rig_controller import RigController, RigEvent, RigEventKind
from jigd.model import LedColour
from tests.drivers.helpers import WAIT_S, eventually

Responder = Callable[[str], str | None]


def standard_reply(line: str) -> str | None:
    """What a healthy 8-slot controller answers."""
    words = line.split()
    if line == "PING":
        return "OK\n"
    if line == "PRESENCE?":
        return "PRESENCE 10110000\n"
    if len(words) == 3 and words[0] in ("POWER", "LED"):
        return "OK\n"
    return "ERR unknown command\n"


@dataclass
class Board:
    """The controller side of the pty: records lines, answers through `respond`."""

    master: int
    respond: Responder = standard_reply
    delay_s: float = 0.0
    lines: list[str] = field(default_factory=list)
    outstanding: int = 0
    max_outstanding: int = 0
    _buf: bytearray = field(default_factory=bytearray)
    _timers: list[asyncio.TimerHandle] = field(default_factory=list)

    def start(self) -> None:
        asyncio.get_running_loop().add_reader(self.master, self._readable)

    def stop(self) -> None:
        for timer in self._timers:
            timer.cancel()
        asyncio.get_running_loop().remove_reader(self.master)

    def write(self, text: str) -> None:
        os.write(self.master, text.encode("ascii"))

    def _readable(self) -> None:
        try:
            data = os.read(self.master, 1024)
        except OSError:
            return
        self._buf += data
        while b"\n" in self._buf:
            raw, _, rest = bytes(self._buf).partition(b"\n")
            self._buf = bytearray(rest)
            line = raw.decode("ascii").strip()
            self.lines.append(line)
            self.outstanding += 1
            self.max_outstanding = max(self.max_outstanding, self.outstanding)
            reply = self.respond(line)
            if reply is None:
                continue
            if self.delay_s:
                timer = asyncio.get_running_loop().call_later(self.delay_s, self._reply, reply)
                self._timers.append(timer)
            else:
                self._reply(reply)

    def _reply(self, text: str) -> None:
        self.outstanding -= 1
        self.write(text)


@dataclass
class Rig:
    controller: RigController
    board: Board
    events: list[RigEvent]
    lost: list[RigError]


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    master, slave = os.openpty()
    board = Board(master)
    board.start()
    events: list[RigEvent] = []
    lost: list[RigError] = []
    controller = await RigController.open(
        os.ttyname(slave),
        name="rig1",
        timeout_s=0.3,
        on_event=events.append,
        on_lost=lost.append,
    )
    try:
        yield Rig(controller, board, events, lost)
    finally:
        await controller.close()
        board.stop()
        os.close(slave)
        with contextlib.suppress(OSError):  # a test may have closed it
            os.close(master)


async def test_commands_and_replies(rig: Rig) -> None:
    controller = rig.controller
    await controller.ping()
    assert await controller.presence() == (True, False, True, True, False, False, False, False)
    await controller.power(3, True)
    await controller.power(3, False)
    await controller.led(2, LedColour.AMBER)
    await controller.led(8, LedColour.BLINK)
    assert rig.board.lines == [
        "PING",
        "PRESENCE?",
        "POWER 3 ON",
        "POWER 3 OFF",
        "LED 2 AMBER",
        "LED 8 BLINK",
    ]


async def test_events_arrive_between_a_command_and_its_reply(rig: Rig) -> None:
    def with_events(line: str) -> str | None:
        reply = standard_reply(line)
        return f"EVT INSERT 4\nEVT REMOVE 1\n{reply}"

    rig.board.respond = with_events
    await rig.controller.power(4, True)
    assert rig.events == [RigEvent(RigEventKind.INSERT, 4), RigEvent(RigEventKind.REMOVE, 1)]
    rig.board.write("EVT INSERT 7\r\n")  # unsolicited, while idle, with CRLF
    await eventually(lambda: len(rig.events) == 3)
    assert rig.events[-1] == RigEvent(RigEventKind.INSERT, 7)


async def test_event_queue_without_a_callback() -> None:
    master, slave = os.openpty()
    try:
        controller = await RigController.open(os.ttyname(slave), timeout_s=0.3)
        try:
            os.write(master, b"EVT REMOVE 2\nEVT BOGUS 1\nEVT INSERT 9\nEVT INSERT 5\n")
            assert await controller.next_event(WAIT_S) == RigEvent(RigEventKind.REMOVE, 2)
            assert await controller.next_event(WAIT_S) == RigEvent(RigEventKind.INSERT, 5)
            assert await controller.next_event(0.05) is None
            assert controller.link_errors["bad_line"] == 2
        finally:
            await controller.close()
    finally:
        os.close(slave)
        os.close(master)


async def test_err_reply_is_a_typed_error(rig: Rig) -> None:
    rig.board.respond = lambda line: "ERR slot 3 has no power switch\n"
    with pytest.raises(RigCommandFailed) as caught:
        await rig.controller.power(3, True)
    assert caught.value.reason == "slot 3 has no power switch"
    assert caught.value.command == "POWER 3 ON"
    assert "rig1" in str(caught.value)


async def test_unexpected_replies_are_protocol_errors(rig: Rig) -> None:
    rig.board.respond = lambda line: "PRESENCE 1012\n" if line == "PRESENCE?" else "YES\n"
    with pytest.raises(RigProtocolError):
        await rig.controller.presence()
    with pytest.raises(RigProtocolError):
        await rig.controller.ping()


async def test_timeout_then_the_next_command_works(rig: Rig) -> None:
    rig.board.respond = lambda line: None if line == "PING" else standard_reply(line)
    with pytest.raises(RigTimeout) as caught:
        await rig.controller.ping()
    assert caught.value.command == "PING"
    assert rig.controller.link_errors["timeout"] == 1
    await rig.controller.power(1, True)


async def test_commands_are_serialised(rig: Rig) -> None:
    rig.board.delay_s = 0.02
    await asyncio.gather(*(rig.controller.led(n, LedColour.GREEN) for n in range(1, 9)))
    assert rig.board.max_outstanding == 1
    assert sorted(rig.board.lines) == [f"LED {n} GREEN" for n in range(1, 9)]


async def test_overlong_line_is_dropped(rig: Rig) -> None:
    rig.board.write("X" * 1000 + "\n")
    await rig.controller.ping()
    assert rig.controller.link_errors["bad_line"] == 1


async def test_port_loss_fails_the_command_and_reports(rig: Rig) -> None:
    rig.board.respond = lambda line: None
    task = asyncio.ensure_future(rig.controller.ping())
    await eventually(lambda: bool(rig.board.lines))
    rig.board.stop()
    os.close(rig.board.master)
    with pytest.raises(RigClosed):
        await task
    assert rig.controller.is_closed
    assert len(rig.lost) == 1
    with pytest.raises(RigClosed):
        await rig.controller.ping()


async def test_bad_slot_numbers_are_refused(rig: Rig) -> None:
    with pytest.raises(ValueError, match="outside"):
        await rig.controller.power(9, True)
    with pytest.raises(ValueError, match="outside"):
        await rig.controller.led(0, LedColour.RED)


async def test_missing_port_is_rig_closed(tmp_path: Path) -> None:
    with pytest.raises(RigClosed, match="cannot open"):
        await RigController.open(str(tmp_path / "no-such-tty"), name="rig9")


async def test_a_port_that_vanishes_under_a_write_is_a_lost_link_in_one_line(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    """The controller's pty goes away and the next command's write fails (EIO) before the read
    side notices: a RigClosed and one warning, not asyncio's "Fatal write error" traceback."""
    rig.board.stop()
    os.close(rig.board.master)
    with caplog.at_level(logging.DEBUG), pytest.raises(RigError):
        await rig.controller.ping()  # the write is tried at once: the loop has not run yet
    await eventually(lambda: rig.controller.is_closed)
    assert len(rig.lost) == 1
    assert "Fatal write error" not in caplog.text
    assert [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info] == []
