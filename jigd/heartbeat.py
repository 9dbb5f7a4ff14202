"""The station's heartbeat in the store: on a site (several stations on one database,
docs/architecture.md, "Site") it tells the other stations that this one is alive and what its
slots are doing, for `jigctl status` on any station and for `jigctl station release`, which
refuses a station heard from within its quiet time.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Final

from pydantic import TypeAdapter, ValidationError

from jigd import control_api as api
from jigd.store import Store, StoreError

__all__ = ["HEARTBEAT_S", "beat_every", "site_views", "slots_json"]

_LOGGER = logging.getLogger(__name__)

HEARTBEAT_S: Final = 5.0
_slots: Final = TypeAdapter(list[api.SlotView])
_unreadable: set[str] = set()  # stations whose heartbeat was logged as unreadable


def slots_json(views: Iterable[api.SlotView]) -> str:
    """The slots as the heartbeat stores them: the control API's views, as JSON text."""
    return json.dumps([view.model_dump(mode="json") for view in views], sort_keys=True)


async def site_views(store: Store, me: str, now: datetime) -> list[api.SiteStationView]:
    """The other stations of the site, as their last heartbeats told; a heartbeat whose slots
    do not read (another jigd version) shows the station without its slots, logged once."""
    found = []
    for info in await store.stations():
        if info.station == me:
            continue
        try:
            slots = _slots.validate_json(info.slots)
        except ValidationError as exc:
            if info.station not in _unreadable:
                _LOGGER.warning(
                    "station %s: its heartbeat's slots do not read: %s", info.station, exc
                )
                _unreadable.add(info.station)
            slots = []
        found.append(
            api.SiteStationView(
                station=info.station,
                host=info.host,
                pid=info.pid,
                seen_s=round(max(0.0, (now - info.seen_at).total_seconds()), 1),
                slots=slots,
            )
        )
    return found


async def beat_every(
    store: Store, slots: Callable[[], str], interval_s: float = HEARTBEAT_S
) -> None:
    """Send a heartbeat (`slots()`: the slots as `slots_json` gives them) now and every
    `interval_s` until cancelled; a store that fails one is logged, and the next beat tries
    again (the slots never wait on it)."""
    started = datetime.now(UTC)
    host, pid = socket.gethostname(), os.getpid()
    failing = False
    while True:
        try:
            await store.heartbeat(slots(), host=host, pid=pid, started_at=started)
        except StoreError as exc:
            if not failing:
                _LOGGER.warning("station heartbeat not stored: %s", exc)
            failing = True
        else:
            if failing:
                _LOGGER.info("station heartbeat stored again")
            failing = False
        await asyncio.sleep(interval_s)
