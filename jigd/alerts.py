"""Station alerts for the logistics system's `alerts` topic: a rig gone offline, no firmware, a
hub that cannot be identified, a slot the yield watch finds suspect (jigd.slot_yield: once,
when it becomes suspect; not again until it has recovered).

Rejected hubs are alerted by the store itself (`record_rejected`). The others are seen by a
station observer and journalled with `Store.record_alert`, which queues the `alerts` message in
the same transaction, so an alert is as durable as a result and published in the order they
were queued.

Observer callbacks must not block, so they only queue; `run()` writes the queue to the store.
A Device Model without firmware is alerted once per `NO_FIRMWARE_REPEAT_S` at most, not once
per hub: a pallet of 500 hubs of an unknown model is one thing to fix, not 500.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Final

from jigd.events import AlertKind, GuidResult
from jigd.model import DeviceModel, Guid, Outcome
from jigd.slot_yield import Suspicion
from jigd.station import StationObserver
from jigd.store import Store, StoreError

__all__ = ["NO_FIRMWARE_REPEAT_S", "AlertRecorder"]

_LOGGER = logging.getLogger(__name__)

NO_FIRMWARE_REPEAT_S: Final = 600.0


@dataclass(frozen=True, slots=True)
class _Alert:
    kind: AlertKind
    detail: str
    rig: int | None = None
    slot: int | None = None
    guid: Guid | None = None
    model: DeviceModel | None = None
    reason: str | None = None


class AlertRecorder:
    """Turns rig-down, no-firmware, unidentified-hub and suspect-slot events into journalled
    alerts; `run()` until cancelled."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._queue: asyncio.Queue[_Alert] = asyncio.Queue()
        self._no_firmware_last: dict[DeviceModel, float] = {}

    def observer(self) -> StationObserver:
        return StationObserver(
            on_rig=self.rig_changed,
            on_result=self.result,
            on_unidentified=self.unidentified,
            on_slot_suspect=self.slot_suspect,
        )

    def slot_suspect(self, change: Suspicion) -> None:
        """A slot that became suspect (a recovery is no alert)."""
        if change.reason is not None:
            alert = _Alert(
                AlertKind.SLOT_SUSPECT,
                change.reason,
                rig=change.rig,
                slot=change.slot,
                reason="failure_rate",
            )
            self._queue.put_nowait(alert)

    def unidentified(self, rig: int, slot: int, code: str, detail: str) -> None:
        """A hub in a slot that cannot be identified (no jig group): never written."""
        alert = _Alert(AlertKind.UNIDENTIFIED_HUB, detail, rig=rig, slot=slot, reason=code)
        self._queue.put_nowait(alert)

    def rig_changed(self, rig: int, up: bool) -> None:
        if not up:
            detail = f"rig {rig}: the rig controller stopped answering; reconnecting"
            self._queue.put_nowait(_Alert(AlertKind.RIG_OFFLINE, detail, rig=rig))

    def result(self, result: GuidResult, seconds: float) -> None:
        if result.outcome is not Outcome.FAILED or result.failure_code != "no_firmware":
            return
        if result.model is None:
            return
        now = time.monotonic()
        last = self._no_firmware_last.get(result.model)
        if last is not None and now - last < NO_FIRMWARE_REPEAT_S:
            return
        self._no_firmware_last[result.model] = now
        detail = (
            f"no production firmware in the catalog for Device Model {result.model}; "
            f"hub {result.guid} failed at select"
        )
        self._queue.put_nowait(
            _Alert(
                AlertKind.NO_FIRMWARE,
                detail,
                rig=result.rig,
                slot=result.slot,
                guid=result.guid,
                model=result.model,
            )
        )

    async def run(self) -> None:
        while True:
            alert = await self._queue.get()
            try:
                await self._store.record_alert(
                    alert.kind,
                    detail=alert.detail,
                    rig=alert.rig,
                    slot=alert.slot,
                    guid=alert.guid,
                    model=alert.model,
                    reason=alert.reason,
                )
            except StoreError as exc:
                _LOGGER.error("alert %s not recorded: %s", alert.kind, exc)  # noqa: TRY400
