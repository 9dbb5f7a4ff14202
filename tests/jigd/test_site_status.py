"""`jigctl status` on a site: the other stations' slots, from their heartbeats in the shared
store (jigd.heartbeat), and `--station` to narrow (docs/architecture.md, "Site")."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from jigd import control_api as api
from jigd.events import SlotStatus
from jigd.heartbeat import site_views, slots_json
from jigd.liveview import narrowed, render_status
from jigd.model import SlotState, Stage
from jigd.store import open_store
from jigd.store.sqlite import sqlite_url
from jigd.views import slot_view
from tests.jigd.store.books import T0, guid


def _busy(rig: int, slot: int) -> SlotStatus:
    return SlotStatus(
        rig,
        slot,
        SlotState.BUSY,
        guid=guid(rig * 10 + slot),
        batch_id="B000001",
        stage=Stage.UPLOAD,
    )


async def test_the_other_stations_slots_are_read_from_their_heartbeats(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "site.sqlite3")
    async with (
        await open_store(url, station="A") as a,
        await open_store(url, station="B") as b,
    ):
        slots = slots_json([slot_view(_busy(1, 2)), slot_view(_busy(2, 1))])
        await b.heartbeat(slots, host="bench-b", pid=2, started_at=T0)
        await a.heartbeat("[]", host="a", pid=1, started_at=T0)
        [other] = await site_views(a, "A", (await a.stations())[1].seen_at + timedelta(seconds=7))
    assert (other.station, other.seen_s) == ("B", 7.0)
    assert [(s.rig, s.slot, s.state, s.guid) for s in other.slots] == [
        (1, 2, SlotState.BUSY, guid(12)),
        (2, 1, SlotState.BUSY, guid(21)),
    ]
    status = api.StatusResponse(
        station="A",
        uptime_s=1.0,
        hubs_per_hour=None,
        loop_lag_ms=api.LoopLag(p50=0.0, p99=0.0, max=0.0),
        outbox_depth=0,
        rigs=[api.RigView(rig=1, up=True, slots=[slot_view(SlotStatus(1, 1))])],
        batches=[],
        catalog_rejected=[],
        site=[other],
    )
    text = render_status(status)
    assert "station B on " in text
    assert str(guid(12)) in text
    assert str(guid(21)) in text
    only_b = narrowed(status, "B")
    assert (only_b.rigs, [s.station for s in only_b.site]) == ([], ["B"])
    assert narrowed(status, "A").site == []
    with pytest.raises(ValueError, match="no station 'C' on this site; there are: A, B"):
        narrowed(status, "C")


async def test_unreadable_heartbeat_slots_show_the_station_without_them(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "site.sqlite3")
    async with (
        await open_store(url, station="A") as a,
        await open_store(url, station="B") as b,
    ):
        await b.heartbeat('[{"rig": "not a slot"}]', host="b", pid=2, started_at=T0)
        [other] = await site_views(a, "A", T0)
    assert (other.station, other.slots) == ("B", [])
