"""The web view's live feed: the station's events fanned out to browsers as Server-Sent Events.

The feed is a station observer, fed by the same hooks as the MQTT publisher and the metrics.
It keeps the loop cheap: with no browser connected it does nothing but keep the last alerts;
with browsers, a slot's changes are coalesced (the latest status wins) and flushed every
`FLUSH_S`, each change serialised once for all clients. Each client has a bounded queue; one
that falls `MAX_QUEUED` chunks behind (a slow or dead browser) is dropped, and its
EventSource reconnects and starts again from a snapshot. Events (docs/web.md):

- `snapshot`: the control API's status with the recent alerts, first on every connection;
- `slot`: one slot's `SlotView`; `rig`: `{rig, up}`;
- `batches`: the open batches (`OpenBatchView`), after results and every `BATCHES_S`;
- `alert`: `{ts, kind, message}`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Final

from jigd.alerts import NO_FIRMWARE_REPEAT_S
from jigd.control import open_batches, slot_view
from jigd.events import AlertKind, GuidResult, SlotStatus, alert_event, rejected_alert_event
from jigd.model import DeviceModel, Guid
from jigd.slot_yield import Suspicion
from jigd.station import Station, StationObserver
from jigd.store import SlotService

__all__ = ["Client", "Feed", "sse"]

_LOGGER = logging.getLogger(__name__)

FLUSH_S: Final = 0.2  # changes reach browsers at most this much later
BATCHES_S: Final = 5.0  # open batches are sent this often too (imports, closes, ETA)
PING_S: Final = 15.0  # a comment line, so a dead connection is noticed
MAX_QUEUED: Final = 256  # chunks a client may be behind before it is dropped
ALERTS_KEPT: Final = 50


def sse(event: str, data: Any) -> bytes:
    """One Server-Sent Event with `data` as JSON."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class Client:
    """One browser's queue of chunks to write."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.wake = asyncio.Event()
        self.dropped = False

    def send(self, chunk: bytes) -> None:
        if self.dropped:
            return
        if len(self.chunks) >= MAX_QUEUED:
            self.drop()
            return
        self.chunks.append(chunk)
        self.wake.set()

    def drop(self) -> None:
        self.dropped = True
        self.chunks.clear()
        self.wake.set()

    def take(self) -> bytes:
        data = b"".join(self.chunks)
        self.chunks.clear()
        self.wake.clear()
        return data


class Feed:
    """The station's changes for the connected browsers."""

    def __init__(self, station: Station) -> None:
        self._station = station
        self._clients: set[Client] = set()
        self._slots: dict[tuple[int, int], SlotStatus] = {}
        self._rigs: dict[int, bool] = {}
        self._batches_due = False
        self._flush: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.alerts: deque[dict[str, str]] = deque(maxlen=ALERTS_KEPT)
        self._no_firmware: dict[DeviceModel, float] = {}

    @property
    def clients(self) -> int:
        return len(self._clients)

    def observer(self) -> StationObserver:
        return StationObserver(
            on_slot=self._slot,
            on_rig=self._rig,
            on_result=self._result,
            on_rejected=self._rejected,
            on_unidentified=self._unidentified,
            on_service=self._service,
            on_slot_suspect=self._slot_suspect,
        )

    def connect(self) -> Client:
        client = Client()
        self._clients.add(client)
        return client

    def disconnect(self, client: Client) -> None:
        self._clients.discard(client)

    def close(self) -> None:
        """Drop every client (the server is stopping)."""
        for client in self._clients:
            client.drop()
        self._clients.clear()

    def batches_changed(self) -> None:
        """A batch was imported or closed: send the open batches soon."""
        self._batches_due = True
        self._schedule()

    async def run(self) -> None:
        """Every BATCHES_S while browsers are connected: the open batches and a ping."""
        ticks = 0
        while True:
            await asyncio.sleep(BATCHES_S)
            ticks += 1
            if not self._clients:
                continue
            self._batches_due = True
            self._schedule()
            if ticks % round(PING_S / BATCHES_S) == 0:
                self._send(b": ping\n\n")

    # -- station hooks -------------------------------------------------------------------------

    def _slot(self, status: SlotStatus) -> None:
        if self._clients:
            self._slots[status.rig, status.slot] = status
            self._schedule()

    def _service(self, service: SlotService) -> None:
        """A slot out of service or back: its tile says so (and why)."""
        self._slot(self._station.services.worker(service.rig, service.slot).status)

    def _rig(self, rig: int, up: bool) -> None:
        if not up:
            self._alert(
                AlertKind.RIG_OFFLINE,
                alert_event(
                    AlertKind.RIG_OFFLINE,
                    detail="the rig controller stopped answering; reconnecting",
                    rig=rig,
                    now=datetime.now(UTC),
                ).message,
            )
        if self._clients:
            self._rigs[rig] = up
            self._schedule()

    def _result(self, result: GuidResult, seconds: float) -> None:
        if self._no_firmware_news(result):
            message = alert_event(
                AlertKind.NO_FIRMWARE,
                detail=f"hub {result.guid} failed at select",
                rig=result.rig,
                slot=result.slot,
                model=result.model,
                now=datetime.now(UTC),
            ).message
            self._alert(AlertKind.NO_FIRMWARE, message)
        if self._clients:
            self._batches_due = True
            self._schedule()

    def _no_firmware_news(self, result: GuidResult) -> bool:
        """A hub failed for want of firmware, and its model was not alerted of late (as
        jigd.alerts does for MQTT: once per model per NO_FIRMWARE_REPEAT_S)."""
        if result.failure_code != "no_firmware" or result.model is None:
            return False
        now = time.monotonic()
        last = self._no_firmware.get(result.model)
        if last is not None and now - last < NO_FIRMWARE_REPEAT_S:
            return False
        self._no_firmware[result.model] = now
        return True

    def _rejected(self, guid: Guid, rig: int, slot: int, reason: str) -> None:
        event = rejected_alert_event(guid, rig, slot, reason, now=datetime.now(UTC))
        self._alert(AlertKind.REJECTED_HUB, event.message)

    def _slot_suspect(self, change: Suspicion) -> None:
        """Show the slot's badge (or take it off) and, when it becomes suspect, the alert."""
        if change.reason is not None:
            event = alert_event(
                AlertKind.SLOT_SUSPECT,
                detail=change.reason,
                rig=change.rig,
                slot=change.slot,
                now=datetime.now(UTC),
            )
            self._alert(AlertKind.SLOT_SUSPECT, event.message)
        status = next(
            (s for s in self._station.slots() if (s.rig, s.slot) == (change.rig, change.slot)),
            None,
        )
        if status is not None:
            self._slot(status)

    def _unidentified(self, rig: int, slot: int, code: str, detail: str) -> None:
        event = alert_event(
            AlertKind.UNIDENTIFIED_HUB, detail=detail, rig=rig, slot=slot, now=datetime.now(UTC)
        )
        self._alert(AlertKind.UNIDENTIFIED_HUB, event.message)

    def _alert(self, kind: AlertKind, message: str) -> None:
        alert = {"ts": datetime.now(UTC).isoformat(), "kind": str(kind), "message": message}
        self.alerts.append(alert)
        self._send(sse("alert", alert))

    # -- sending -------------------------------------------------------------------------------

    def _schedule(self) -> None:
        if self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(FLUSH_S, self._flushed)

    def _flushed(self) -> None:
        self._flush = None
        slots, self._slots = self._slots, {}
        rigs, self._rigs = self._rigs, {}
        if not self._clients:
            return
        chunk = b"".join(
            [sse("rig", {"rig": r, "up": up}) for r, up in rigs.items()]
            + [
                sse(
                    "slot",
                    slot_view(
                        s,
                        self._station.disabled(s.rig, s.slot),
                        self._station.slot_yield.suspect(s.rig, s.slot),
                    ).to_json(),
                )
                for s in slots.values()
            ]
        )
        if chunk:
            self._send(chunk)
        if self._batches_due:
            self._batches_due = False
            self._spawn(self._send_batches)

    async def _send_batches(self) -> None:
        batches = await open_batches(self._station)
        self._send(sse("batches", [b.to_json() for b in batches]))

    def _send(self, chunk: bytes) -> None:
        for client in list(self._clients):
            client.send(chunk)
            if client.dropped:
                _LOGGER.info("web view: a browser fell behind and was dropped; it reconnects")
                self._clients.discard(client)

    def _spawn(self, work: Callable[[], Awaitable[None]]) -> None:
        async def run() -> None:
            try:
                await work()
            except Exception:  # a store error must not stop the feed
                _LOGGER.exception("web view: open batches not sent")

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
