"""A simulated operator: feeds hubs from a pallet into free slots and pulls finished ones.

The operator does one thing at a time, and each action (picking up a hub and inserting it,
pulling one out) takes `handling_s`. A hub is pulled when its slot's LED turns GREEN (done) or
RED (failed or rejected) after it went in; hubs with any other LED are left in place. Told to
re-insert hubs (`reinsert`: a hub set aside before its batch was imported), the operator puts
them back on top of the pallet, next to go into a free slot.

Told to move hubs to another bench (`move_out`, `sim.move`), the operator takes each one, as
the next action: out of its slot whatever its LED (the slot's controller says EVT REMOVE), or off
the pallet or the pulled pile, and hands it over; a hub brought from another bench (`move_in`)
goes on top of the pallet.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from jigd.model import Guid, LedColour
from sim.rig import Rig, SimSlot
from sim.slot_hub import SlotHub

__all__ = ["Operator", "Placement"]

_LOGGER = logging.getLogger(__name__)

DEFAULT_HANDLING_S: Final = 1.0
IDLE_RECHECK_S: Final = 0.5  # look at the LEDs again at least this often
_FINISHED: Final = frozenset({LedColour.GREEN, LedColour.RED})

# What the operator does with a hub taken to another bench (`jigsim serve`: write it there).
Handover = Callable[[SlotHub], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Placement:
    """Where the operator put a hub, and the slot's LED count at that moment."""

    rig: Rig
    slot: SimSlot
    led_changes: int


class Operator:
    """Moves hubs from `pallet` through the slots of `rigs` to the `removed` pile."""

    def __init__(
        self,
        rigs: Sequence[Rig],
        pallet: Iterable[SlotHub],
        *,
        handling_s: float = DEFAULT_HANDLING_S,
    ) -> None:
        self.rigs = list(rigs)
        self.pallet: deque[SlotHub] = deque(pallet)
        self.handling_s = handling_s
        self.placed: dict[SlotHub, Placement] = {}
        self.removed: list[SlotHub] = []
        self._wanted: set[str] = set()  # GUIDs to put back once they are pulled
        self._moves: deque[tuple[str, Handover]] = deque()  # GUIDs to take to another bench
        # Called after each insert and pull (`jigsim serve` saves where the hubs are).
        self.on_change: Callable[[], None] | None = None
        self._changed = asyncio.Event()
        for rig in self.rigs:
            rig.listeners.append(self._changed.set)

    def restore(
        self, slots: Iterable[tuple[SlotHub, int, int]], removed: Iterable[SlotHub]
    ) -> None:
        """Resume a saved bench: put each hub back in its (rig, slot) and the pulled ones on
        the removed pile; neither is on the pallet any more."""
        taken: set[SlotHub] = set()
        for hub, rig_number, slot_number in slots:
            rig = self.rigs[rig_number - 1]
            rig.insert(slot_number, hub)
            slot = rig.slot(slot_number)
            self.placed[hub] = Placement(rig, slot, slot.led_changes)
            taken.add(hub)
        for hub in removed:
            self.removed.append(hub)
            taken.add(hub)
        self.pallet = deque(hub for hub in self.pallet if hub not in taken)

    def _saved(self) -> None:
        if self.on_change is not None:
            self.on_change()

    @property
    def done(self) -> bool:
        """The pallet is empty and every hub put in a slot has been pulled out."""
        return not self.pallet and not self.placed

    def reinsert(self, guids: Iterable[Guid]) -> list[str]:
        """Put these hubs back: from the removed pile to the top of the pallet, in the order
        given; a hub still in its slot goes back once pulled. Returns the GUIDs (as text) of
        hubs the operator never handled."""
        by_guid = {str(hub.guid): hub for hub in self.removed}
        in_slots = {str(hub.guid) for hub in self.placed}
        unknown = []
        for guid in [str(g) for g in guids][::-1]:  # appendleft reverses; keep the order given
            hub = by_guid.get(guid)
            if hub is not None and hub in self.removed:
                self.removed.remove(hub)
                self.pallet.appendleft(hub)
                _LOGGER.info("operator: %s back on the pallet, to re-insert", guid)
            elif guid in in_slots:
                self._wanted.add(guid)
            else:
                unknown.append(guid)
        self._saved()
        self._changed.set()
        return unknown[::-1]

    def move_out(self, guids: Iterable[Guid], handover: Handover) -> None:
        """Take these hubs to another bench, one action each, before anything else: from their
        slot (whatever the LED), the pallet or the pulled pile; `handover` gets each hub. A
        GUID not on this bench is logged and skipped when its turn comes."""
        self._moves.extend((str(guid), handover) for guid in guids)
        self._changed.set()

    def move_in(self, hub: SlotHub) -> None:
        """A hub brought from another bench goes on top of the pallet."""
        self.pallet.appendleft(hub)
        _LOGGER.info("operator: %s brought from another bench, on top of the pallet", hub.name)
        self._saved()
        self._changed.set()

    async def _move_one(self) -> None:
        guid, handover = self._moves.popleft()
        self._wanted.discard(guid)
        hub = await self._take(guid)
        if hub is None:
            _LOGGER.warning("operator: %s is not on this bench; not moved", guid)
            return
        await handover(hub)
        self._saved()

    async def _take(self, guid: str) -> SlotHub | None:
        """Take the hub out of its slot, off the pallet or off the pulled pile."""
        for hub, placement in list(self.placed.items()):
            if str(hub.guid) == guid:
                await asyncio.sleep(self.handling_s)
                del self.placed[hub]
                if placement.slot.hub is hub:
                    await placement.rig.remove(placement.slot.number)
                _LOGGER.info(
                    "operator: pulled %s (%s) from %s to move it",
                    hub.name,
                    placement.slot.led,
                    placement.slot.name,
                )
                return hub
        for pile in (self.pallet, self.removed):
            for hub in pile:
                if str(hub.guid) == guid:
                    await asyncio.sleep(self.handling_s)
                    pile.remove(hub)
                    return hub
        return None

    async def run(self, *, forever: bool = False) -> None:
        """Work until `done` (which may be never, if a slot's LED never finishes); with
        `forever`, go on waiting for hubs to re-insert until cancelled."""
        try:
            while forever or not self.done or self._moves:
                self._changed.clear()
                if await self._act():
                    continue
                try:
                    async with asyncio.timeout(IDLE_RECHECK_S):
                        await self._changed.wait()
                except TimeoutError:
                    pass
            _LOGGER.info("operator: pallet done, %d hubs handled", len(self.removed))
        finally:
            for rig in self.rigs:
                if self._changed.set in rig.listeners:
                    rig.listeners.remove(self._changed.set)

    async def _act(self) -> bool:
        """Do the next action, if any: a move comes first, then pulling a finished hub, then
        inserting one."""
        if self._moves:
            await self._move_one()
            return True
        for hub, placement in list(self.placed.items()):
            slot = placement.slot
            if (
                placement.rig.present
                and slot.hub is hub
                and slot.led in _FINISHED
                and slot.led_changes > placement.led_changes
            ):
                await asyncio.sleep(self.handling_s)
                await placement.rig.remove(slot.number)
                del self.placed[hub]
                if str(hub.guid) in self._wanted:
                    self._wanted.discard(str(hub.guid))
                    self.pallet.appendleft(hub)
                else:
                    self.removed.append(hub)
                self._saved()
                _LOGGER.info("operator: pulled %s (%s) from %s", hub.name, slot.led, slot.name)
                return True
        if self.pallet:
            for rig in self.rigs:
                for slot in rig.slots:
                    if _free(rig, slot):
                        await asyncio.sleep(self.handling_s)
                        if not _free(rig, slot):
                            return True  # things changed while picking the hub up
                        hub = self.pallet.popleft()
                        rig.insert(slot.number, hub)
                        self.placed[hub] = Placement(rig, slot, slot.led_changes)
                        self._saved()
                        return True
        return False


def _free(rig: Rig, slot: SimSlot) -> bool:
    return rig.present and slot.hub is None
