"""Simulated rigs: slots that hold hubs, and the rig controller's ASCII line protocol.

A rig publishes one pty per slot at `<dir>/rig<R>/slot<S>` and its controller at
`<dir>/rig<R>/ctl` (docs/architecture.md, "Rig controller"). A USB rig's slots are instead
devices on the simulator's USB bus (`sim.usb_bus`) at port paths `1-<R>.<S>`; its controller is
a pty as always. A USB slot's device is on the bus while the rig is, and its hub is in and
powered (`POWER n OFF` takes it off). The controller answers

    PING                  -> OK
    PRESENCE?             -> PRESENCE 10110000   (one digit per slot, slot 1 first)
    POWER <n> ON|OFF      -> OK
    LED <n> OFF|GREEN|RED|AMBER|BLINK -> OK
    anything else         -> ERR <reason>

and sends `EVT INSERT <n>` / `EVT REMOVE <n>` when a hub goes in or out. Lines end with `\\n`;
`\\r\\n` is accepted; empty lines are ignored. A hub is powered on when inserted and when the
controller says `POWER n ON`; a hub whose supply browned out (an injected fault) stays off until
`POWER n ON`. Removing a hub turns its slot's LED off.

Broken parts (`jigsim serve --break rig1/slot3:power,...`, docs/simulator.md, "Broken rig
parts"), for the rig self-test: a dead `power` switch leaves the supply as it was and the
controller answers `ERR power switch <n> does not switch`; a dead `led` stays dark and the
controller answers `ERR LED <n> does not light`; a `port` that does not open is never published
(its pty path does not exist, and a hub in that slot cannot be reached).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

from jigd.model import LedColour
from sim.hub import SimHub
from sim.pty_port import PortClosedError, PtyPort
from sim.slot_hub import SlotHub
from sim.usb_bus import UsbBus
from sim.usb_device import SimUsbDevice
from sim.worn import Wear, WornPort

__all__ = ["BROKEN_PARTS", "CTL_LINE_MAX", "Rig", "SimSlot", "Station", "parse_breaks"]

_LOGGER = logging.getLogger(__name__)

CTL_LINE_MAX: Final = 80  # longest controller line accepted, in bytes
STOP_TIMEOUT_S: Final = 5.0
BROKEN_PARTS: Final = ("power", "led", "port")
_BREAK_RE: Final = re.compile(r"rig(\d+)/slot(\d+):([a-z]+)")


def parse_breaks(text: str) -> dict[tuple[int, int], frozenset[str]]:
    """`rig1/slot3:power,rig1/slot5:led`: the broken parts of each (rig, slot); ValueError
    naming the entry that is not one."""
    found: dict[tuple[int, int], set[str]] = {}
    for entry in filter(None, (e.strip() for e in text.split(","))):
        match = _BREAK_RE.fullmatch(entry)
        if match is None or match.group(3) not in BROKEN_PARTS:
            raise ValueError(
                f"--break {entry!r}: write rig<R>/slot<S>:<part>, part one of "
                f"{', '.join(BROKEN_PARTS)}"
            )
        key = (int(match.group(1)), int(match.group(2)))
        found.setdefault(key, set()).add(match.group(3))
    return {key: frozenset(parts) for key, parts in found.items()}


@dataclass
class SimSlot:
    """One slot of a rig: its cable (pty), the hub in it, its supply and its LED."""

    rig: int
    number: int
    port: PtyPort | SimUsbDevice
    hub: SlotHub | None = None
    supply_on: bool = True
    led: LedColour = LedColour.OFF
    led_changes: int = 0  # counts LED commands, so an observer can tell a new one
    broken: frozenset[str] = frozenset()  # BROKEN_PARTS of this slot that do not work
    serve_task: asyncio.Task[None] | None = field(default=None, repr=False)
    wear: Wear | None = None  # a worn slot (sim.worn): its link gets worse with every hub

    @property
    def name(self) -> str:
        return f"rig {self.rig} slot {self.number}"


class Rig:
    """One rig with `slots` slots, served while `async with rig:` is open.

    With `usb_bus`, its slots are USB devices on that bus, at ports (rig, slot).
    """

    def __init__(
        self, directory: Path, number: int, slots: int, usb_bus: UsbBus | None = None
    ) -> None:
        if not 1 <= slots <= 8:
            raise ValueError(f"a rig has 1 to 8 slots, not {slots}")
        self.number = number
        self.directory = directory / f"rig{number}"
        self.ctl = PtyPort(self.directory / "ctl")
        self.usb = usb_bus is not None
        self.slots = [
            SimSlot(
                rig=number,
                number=n,
                port=(
                    usb_bus.add_device((number, n))
                    if usb_bus is not None
                    else PtyPort(self.directory / f"slot{n}")
                ),
            )
            for n in range(1, slots + 1)
        ]
        self.present = False
        self.listeners: list[Callable[[], None]] = []
        self.errors: list[BaseException] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._ctl_tasks: list[asyncio.Task[None]] = []
        self._outbox: asyncio.Queue[str] = asyncio.Queue()
        self._commands: dict[str, Callable[[list[str]], str]] = {
            "PING": self._ping,
            "PRESENCE?": self._presence,
            "POWER": self._power,
            "LED": self._led,
        }

    @property
    def ctl_path(self) -> str:
        return self.ctl.path

    def slot(self, number: int) -> SimSlot:
        """Slot `number` (1-based)."""
        if not 1 <= number <= len(self.slots):
            raise ValueError(f"rig {self.number} has no slot {number}")
        return self.slots[number - 1]

    def __iter__(self) -> Iterator[SimSlot]:
        return iter(self.slots)

    async def __aenter__(self) -> Self:
        self._appear()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._disappear()
        for slot in self.slots:
            if slot.hub is not None:
                slot.hub.power_off()

    # ---- presence of the rig itself ---------------------------------------------------------

    def _appear(self) -> None:
        self.ctl.open()
        for slot in self.slots:
            if "port" not in slot.broken:
                slot.port.open()
        self._outbox = asyncio.Queue()
        self._ctl_tasks = [
            self._spawn(self._ctl_reader(), f"rig {self.number} ctl reader"),
            self._spawn(self._ctl_writer(), f"rig {self.number} ctl writer"),
        ]
        self.present = True
        for slot in self.slots:
            if slot.hub is not None:
                self._serve(slot)
                if slot.supply_on:
                    slot.hub.power_on()
        _LOGGER.info("rig %d: up at %s", self.number, self.directory)
        self._notify()

    async def _disappear(self) -> None:
        self.present = False
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=STOP_TIMEOUT_S)
        for slot in self.slots:
            slot.serve_task = None
            slot.port.close()
        self.ctl.close()
        _LOGGER.info("rig %d: gone", self.number)
        self._notify()

    async def vanish(self) -> None:
        """The rig drops off the host (USB unplugged, power lost): ports and symlinks go,
        hubs in its slots lose power, and its LEDs go dark (a lit LED is what the controller
        was last told; an operator must not act on one from before the outage)."""
        if not self.present:
            return
        for slot in self.slots:
            if slot.hub is not None:
                slot.hub.power_off()
            slot.led = LedColour.OFF
        await self._disappear()

    async def reappear(self) -> None:
        """The rig comes back: new ptys at the same paths; hubs in powered slots boot."""
        if not self.present:
            self._appear()

    # ---- hubs going in and out ----------------------------------------------------------------

    def insert(self, number: int, hub: SlotHub) -> None:
        """Put `hub` in slot `number`: it is powered and the controller says EVT INSERT."""
        slot = self.slot(number)
        if slot.hub is not None:
            raise ValueError(f"{slot.name} already holds {slot.hub.name}")
        slot.hub = hub
        slot.supply_on = True
        if slot.wear is not None:
            slot.wear.inserted()
        hub.on_power_lost = lambda: self._supply_lost(slot)
        if isinstance(slot.port, SimUsbDevice):
            slot.port.bind(_usb_hub(slot, hub))
        if self.present:
            self._serve(slot)
            hub.power_on()
            self._event(f"EVT INSERT {number}")
        _LOGGER.info("%s: %s inserted", slot.name, hub.name)
        self._notify()

    async def remove(self, number: int) -> SlotHub:
        """Take the hub out of slot `number`; its LED goes off, the controller says EVT REMOVE."""
        slot = self.slot(number)
        hub = slot.hub
        if hub is None:
            raise ValueError(f"{slot.name} is empty")
        hub.power_off()
        hub.on_power_lost = None
        task, slot.serve_task = slot.serve_task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task], timeout=STOP_TIMEOUT_S)
        if isinstance(slot.port, SimUsbDevice):
            slot.port.unbind()
        slot.hub = None
        slot.led = LedColour.OFF
        if self.present:
            self._event(f"EVT REMOVE {number}")
        _LOGGER.info("%s: %s removed", slot.name, hub.name)
        self._notify()
        return hub

    def _serve(self, slot: SimSlot) -> None:
        assert slot.hub is not None  # internal invariant
        if "port" in slot.broken:
            return  # nothing reaches the hub through a port that does not open
        port = slot.port
        contact = port if slot.wear is None else WornPort(port, slot.wear)
        if isinstance(port, SimUsbDevice):
            hub = _usb_hub(slot, slot.hub)
            serving = hub.serve(contact, port.wire_for(hub))
        else:
            serving = slot.hub.serve(contact)
        slot.serve_task = self._spawn(serving, f"{slot.name} {slot.hub.name}")

    def _supply_lost(self, slot: SimSlot) -> None:
        slot.supply_on = False
        _LOGGER.info("%s: supply browned out", slot.name)

    # ---- controller ---------------------------------------------------------------------------

    def presence(self) -> str:
        return "".join("1" if slot.hub is not None else "0" for slot in self.slots)

    def _event(self, line: str) -> None:
        self._outbox.put_nowait(line)

    async def _ctl_writer(self) -> None:
        while True:
            line = await self._outbox.get()
            await self.ctl.write(line.encode("ascii") + b"\n")

    async def _ctl_reader(self) -> None:
        buffer = bytearray()
        overlong = False  # inside a line already answered with "ERR line too long"
        while True:
            buffer += await self.ctl.read()
            while (end := buffer.find(b"\n")) >= 0:
                raw = bytes(buffer[:end])
                del buffer[: end + 1]
                answer = None if overlong else self.command(raw)
                overlong = False
                if answer is not None:
                    self._outbox.put_nowait(answer)
            if len(buffer) > CTL_LINE_MAX:
                buffer.clear()
                if not overlong:
                    self._outbox.put_nowait("ERR line too long")
                overlong = True

    def command(self, raw: bytes) -> str | None:
        """Answer one controller line (without its `\\n`); None for an empty line."""
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if len(raw) > CTL_LINE_MAX:
            return "ERR line too long"
        try:
            words = raw.decode("ascii").split()
        except UnicodeDecodeError:
            return "ERR not ASCII"
        if not words:
            return None
        handler = self._commands.get(words[0])
        if handler is None:
            return f"ERR unknown command {words[0][:16]}"
        return handler(words)

    def _ping(self, words: list[str]) -> str:
        return "OK" if len(words) == 1 else "ERR usage: PING"

    def _presence(self, words: list[str]) -> str:
        return f"PRESENCE {self.presence()}" if len(words) == 1 else "ERR usage: PRESENCE?"

    def _slot_arg(self, words: list[str]) -> SimSlot | str:
        if len(words) != 3:
            return f"ERR usage: {words[0]} <slot> <state>"
        if not words[1].isdigit() or not 1 <= int(words[1]) <= len(self.slots):
            return f"ERR bad slot {words[1][:8]}"
        return self.slot(int(words[1]))

    def _power(self, words: list[str]) -> str:
        slot = self._slot_arg(words)
        if isinstance(slot, str):
            return slot
        if "power" in slot.broken and words[2] in ("ON", "OFF"):
            return f"ERR power switch {slot.number} does not switch"
        if words[2] == "ON":
            slot.supply_on = True
            if slot.hub is not None:
                slot.hub.power_on()
        elif words[2] == "OFF":
            slot.supply_on = False
            if slot.hub is not None:
                slot.hub.power_off()
        else:
            return f"ERR bad power state {words[2][:8]}"
        _LOGGER.debug("%s: power %s", slot.name, words[2])
        return "OK"

    def _led(self, words: list[str]) -> str:
        slot = self._slot_arg(words)
        if isinstance(slot, str):
            return slot
        try:
            colour = LedColour(words[2])
        except ValueError:
            return f"ERR bad LED state {words[2][:8]}"
        if "led" in slot.broken:
            return f"ERR LED {slot.number} does not light"
        slot.led = colour
        slot.led_changes += 1
        _LOGGER.debug("%s: LED %s", slot.name, colour)
        self._notify()
        return "OK"

    # ---- plumbing -----------------------------------------------------------------------------

    def _notify(self) -> None:
        for listener in list(self.listeners):
            listener()

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None and not isinstance(exc, PortClosedError):
            self.errors.append(exc)
            _LOGGER.error("rig %d: %s failed", self.number, task.get_name(), exc_info=exc)


def _usb_hub(slot: SimSlot, hub: SlotHub) -> SimHub:
    """The hub of a USB slot: only a simulated hub has a USB function."""
    if not isinstance(hub, SimHub):
        raise TypeError(f"{slot.name} is a USB slot; {hub.name} can only be served on a pty")
    return hub


class Station:
    """`rigs` rigs of `slots` slots under `directory`, served while `async with` is open.

    The rigs numbered in `usb_rigs` have USB slots on `usb_bus` (which the caller serves);
    `breaks` names the broken parts of slots (`parse_breaks`).
    """

    def __init__(
        self,
        directory: Path,
        rigs: int,
        slots: int,
        *,
        usb_rigs: frozenset[int] = frozenset(),
        usb_bus: UsbBus | None = None,
        breaks: dict[tuple[int, int], frozenset[str]] | None = None,
    ) -> None:
        if usb_rigs and usb_bus is None:
            raise ValueError("USB rigs need a USB bus")
        unknown = sorted(r for r in usb_rigs if not 1 <= r <= rigs)
        if unknown:
            raise ValueError(f"USB rig(s) {unknown} out of 1-{rigs}")
        self.directory = directory
        self.rigs = [
            Rig(directory, r, slots, usb_bus if r in usb_rigs else None) for r in range(1, rigs + 1)
        ]
        self._break_parts(breaks or {})

    async def __aenter__(self) -> Self:
        entered: list[Rig] = []
        try:
            for rig in self.rigs:
                await rig.__aenter__()
                entered.append(rig)
        except BaseException:
            for rig in reversed(entered):
                await rig.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for rig in reversed(self.rigs):
            await rig.__aexit__(exc_type, exc, tb)

    def _break_parts(self, breaks: dict[tuple[int, int], frozenset[str]]) -> None:
        """Break these parts of these slots; ValueError naming a rig or slot there is not."""
        for (rig, slot), parts in breaks.items():
            if not 1 <= rig <= len(self.rigs):
                raise ValueError(f"--break rig{rig}/slot{slot}: there is no rig {rig}")
            self.rigs[rig - 1].slot(slot).broken = parts

    def slots(self) -> Iterator[tuple[Rig, SimSlot]]:
        for rig in self.rigs:
            for slot in rig.slots:
                yield rig, slot

    @property
    def errors(self) -> list[BaseException]:
        return [e for rig in self.rigs for e in rig.errors]
