"""A simulated operator: feeds hubs from a pallet into free slots and pulls finished ones.

The operator does one thing at a time, and each action (picking up a hub and inserting it,
pulling one out) takes `handling_s`. A hub is pulled when its slot's LED turns GREEN (done) or
RED (failed or rejected) after it went in; hubs with any other LED are left in place. Told to
re-insert hubs (`reinsert`: a hub set aside before its batch was imported), the operator puts
them back on top of the pallet, next to go into a free slot.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Iterable, Sequence
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

    async def run(self, *, forever: bool = False) -> None:
        """Work until `done` (which may be never, if a slot's LED never finishes); with
        `forever`, go on waiting for hubs to re-insert until cancelled."""
        try:
            while forever or not self.done:
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
        """Do the next action, if any: pulling a finished hub comes before inserting one."""
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
