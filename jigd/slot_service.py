"""Slots in and out of service: `jigctl slot disable R S --reason ...`, `enable`, and a failed
self-test (jigd.selftest).

A slot out of service starts no hub: a hub put in it stays there untouched until the slot is
enabled, and a hub it is flashing when it is disabled finishes first (its outcome is recorded
as usual). Its LED shows RED steady, and the control API's slot says `disabled` with the
reason (README, "LED legend"); while a finished hub is still in the slot its GREEN or RED stays
until the hub is taken out. The state is in the store (it survives a restart) and every change
is a `slot_disabled` or `slot_enabled` alert, journalled and sent over MQTT with the results.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Final

from drivers.errors import RigError
from jigd.model import LedColour, SlotState
from jigd.rig import RigSupervisor
from jigd.slot import SlotWorker
from jigd.store import SlotService, Store

__all__ = ["SlotServices", "UnknownSlotError", "led_for"]

_LOGGER = logging.getLogger(__name__)

# What a slot's LED shows in each state when nothing changes it (docs/architecture.md, "Rig
# controller"): the state of a slot is kept while the hub that caused it is in the slot.
_LED_OF_STATE: Final = {
    SlotState.DONE: LedColour.GREEN,
    SlotState.FAILED: LedColour.RED,
    SlotState.REJECTED: LedColour.RED,
    SlotState.ATTENTION: LedColour.BLINK,
}


class UnknownSlotError(LookupError):
    """A rig or slot the station's config does not have."""


def led_for(worker: SlotWorker, disabled: bool) -> LedColour | None:
    """The LED a slot not handling a hub should show (None while it is handling one)."""
    if worker.handling:
        return None
    shown = _LED_OF_STATE.get(worker.status.state)
    if shown is not None:
        return shown  # a finished hub is still in the slot: its outcome stays in sight
    return LedColour.RED if disabled else LedColour.OFF


class SlotServices:
    """Which slots of the station are out of service, kept in the store."""

    def __init__(
        self,
        store: Store,
        rigs: Sequence[RigSupervisor],
        on_change: Callable[[SlotService], None] = lambda service: None,
    ) -> None:
        self._store = store
        self._rigs = {rig.rig: rig for rig in rigs}
        self._on_change = on_change
        self._disabled: dict[tuple[int, int], SlotService] = {}

    async def load(self) -> None:
        """Hold the slots the store has out of service (at start, before any hub is taken)."""
        for service in await self._store.slot_services():
            if service.disabled and self._known(service.rig, service.slot):
                self._apply(service)

    def disabled(self, rig: int, slot: int) -> SlotService | None:
        """Why slot `rig`/`slot` is out of service, or None if it is in service."""
        return self._disabled.get((rig, slot))

    def all_disabled(self) -> list[SlotService]:
        return sorted(self._disabled.values(), key=lambda s: (s.rig, s.slot))

    async def disable(self, rig: int, slot: int, *, reason: str, by: str) -> SlotService:
        """Take the slot out of service (again: the reason is updated)."""
        worker = self.worker(rig, slot)
        service = await self._store.set_slot_service(rig, slot, disabled=True, reason=reason, by=by)
        self._apply(service)
        if worker.handling:
            _LOGGER.warning("rig%d/slot%d: disabled; its hub is finished first", rig, slot)
        await self.show(rig, slot)
        return service

    async def enable(self, rig: int, slot: int, *, reason: str, by: str) -> SlotService:
        """Put the slot back in service: a hub waiting in it is started."""
        self.worker(rig, slot)
        service = await self._store.set_slot_service(
            rig, slot, disabled=False, reason=reason, by=by
        )
        self._apply(service)
        await self.show(rig, slot)
        return service

    def worker(self, rig: int, slot: int) -> SlotWorker:
        """Slot `rig`/`slot`'s worker; UnknownSlotError naming what the config lacks."""
        supervisor = self._rigs.get(rig)
        if supervisor is None:
            known = ", ".join(str(r) for r in sorted(self._rigs)) or "none"
            raise UnknownSlotError(f"rig {rig} is not in the station's config (rigs: {known})")
        worker = supervisor.workers.get(slot)
        if worker is None:
            known = ", ".join(str(s) for s in sorted(supervisor.workers))
            raise UnknownSlotError(f"rig {rig} has no slot {slot} (slots: {known})")
        return worker

    async def show(self, rig: int, slot: int) -> None:
        """Set the slot's LED to what it should show now (best effort: the rig may be down)."""
        colour = led_for(self.worker(rig, slot), (rig, slot) in self._disabled)
        if colour is None:
            return
        try:
            await self._rigs[rig].led(slot, colour)
        except RigError as exc:
            _LOGGER.warning("rig%d/slot%d: LED %s not set: %s", rig, slot, colour, exc)

    def _known(self, rig: int, slot: int) -> bool:
        try:
            self.worker(rig, slot)
        except UnknownSlotError:
            _LOGGER.warning(
                "rig %d slot %d is out of service in the store, not in the config", rig, slot
            )
            return False
        return True

    def _apply(self, service: SlotService) -> None:
        key = (service.rig, service.slot)
        supervisor = self._rigs[service.rig]
        if service.disabled:
            self._disabled[key] = service
            supervisor.disabled.add(service.slot)
        else:
            self._disabled.pop(key, None)
            supervisor.disabled.discard(service.slot)
        supervisor.workers[service.slot].hold(service.disabled)
        self._on_change(service)
