"""The store contract on a site: several stations open one store (docs/architecture.md, "Site").

Run once per backend, like test_contract.py: two stores opened on the same URL for stations
A and B stand for two stations' daemons sharing one database.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from jigd.model import Outcome, Stage
from jigd.store import (
    GuidBusyElsewhereError,
    GuidStatus,
    StationActiveError,
    Store,
    open_store,
)
from jigd.store.sqlite import MIGRATIONS, SqliteStore, sqlite_url
from tests.jigd.store.books import T0, StepClock, guid, result, rows
from tests.jigd.store.old_schema import OLD_TS, insert_old_batch

QUIET = timedelta(minutes=5)


@pytest.fixture
async def site(store_url: str) -> AsyncIterator[tuple[Store, Store]]:
    clock = StepClock()
    async with (
        await open_store(store_url, clock=clock, station="A") as a,
        await open_store(store_url, clock=clock, station="B") as b,
    ):
        yield a, b


async def test_a_guid_one_station_holds_is_refused_by_the_other_naming_it(
    site: tuple[Store, Store],
) -> None:
    a, b = site
    batch = await b.import_batch(rows(1, 2), "WO", "P", "m.csv")
    assert (await a.find_open_batch(guid(1))) is not None  # batches are site-wide
    attempt = await a.begin_attempt(batch, guid(1), 1, 1)
    ref = await b.find_open_batch(guid(1))
    assert ref is not None
    assert ref.status is GuidStatus.IN_PROGRESS
    assert ref.station == "A"
    with pytest.raises(GuidBusyElsewhereError) as caught:
        await b.begin_attempt(batch, guid(1), 1, 1)  # B's own rig 1 slot 1: another place
    assert caught.value.station == "A"
    assert "station A" in str(caught.value)
    with pytest.raises(GuidBusyElsewhereError):
        await b.record_result(result(batch, 1, Outcome.REFLASHED))
    # B letting go of the GUID in its own rig 1 slot 1 changes nothing of A's.
    assert await b.release_guid(batch, guid(1), 1, 1, stage=Stage.UPLOAD, reason="pulled") is None
    assert (await a.guid_state(batch, guid(1))).status is GuidStatus.IN_PROGRESS

    await a.record_result(result(batch, 1, Outcome.REFLASHED, attempts=attempt))
    # A publishes what it committed (the result and the summary that counts it), B only its own.
    queued = await a.outbox_pending()
    assert [(m.kind, m.station) for m in queued[-2:]] == [("result", "A"), ("summary", "A")]
    assert [m.kind for m in await b.outbox_pending()] == ["summary"]  # B's import's
    final = await b.guid_state(batch, guid(1))
    assert final.outcome is Outcome.REFLASHED
    assert final.station == "A"
    assert [x.station for x in await b.batch_results(batch)] == ["A", None]


async def test_a_restart_recovers_only_the_stations_own_guids(site: tuple[Store, Store]) -> None:
    a, b = site
    batch = await a.import_batch(rows(1, 2), "WO", "P", "m.csv")
    await a.begin_attempt(batch, guid(1), 1, 1)
    await b.begin_attempt(batch, guid(2), 1, 1)
    assert await b.recover_interrupted() == [(batch, guid(2))]
    assert (await b.guid_state(batch, guid(1))).status is GuidStatus.IN_PROGRESS  # A's claim
    assert await a.recover_interrupted() == [(batch, guid(1))]
    # Once A has let go of it, any station resumes the GUID.
    assert await b.begin_attempt(batch, guid(1), 2, 3) == 2
    mine = await b.interrupted_in_slot(1, 1)  # B's own rig 1 slot 1: GUID 2, not A's GUID 1
    assert mine is not None
    assert mine.guid == guid(2)
    assert await a.interrupted_in_slot(1, 1) is None  # A's GUID 1 was resumed on B since


async def test_a_station_gone_for_good_is_released_after_the_quiet_time(
    site: tuple[Store, Store],
) -> None:
    a, b = site
    batch = await a.import_batch(rows(1, 2), "WO", "P", "m.csv")
    await a.heartbeat("[]", host="bench-a", pid=42, started_at=T0)
    await a.begin_attempt(batch, guid(1), 1, 1)
    a_pending = await a.outbox_depth()
    assert a_pending >= 1  # the import's summary, A's to publish
    assert await b.outbox_depth() == 0
    with pytest.raises(StationActiveError, match="last heard from"):
        await b.release_station("A", quiet_for=QUIET)
    with pytest.raises(StationActiveError, match="not itself"):
        await a.release_station("A", quiet_for=timedelta(0))
    assert await b.release_station("A", quiet_for=timedelta(0)) == [(batch, guid(1))]
    state = await b.guid_state(batch, guid(1))
    assert state.status is GuidStatus.INTERRUPTED
    [attempt] = await b.attempts(batch, guid(1))
    assert attempt.error_code == "interrupted"
    assert "released by B" in (attempt.error_detail or "")
    # A's unpublished events are B's to publish now, under A's name.
    handed = await b.outbox_pending()
    assert len(handed) == a_pending
    assert {m.station for m in handed} == {"A"}
    assert await a.outbox_depth() == 0
    assert await b.begin_attempt(batch, guid(1), 1, 1) == 2


async def test_stations_slots_rejections_and_outbox_are_each_stations_own(
    site: tuple[Store, Store],
) -> None:
    a, b = site
    await a.heartbeat('[{"rig": 1}]', host="bench-a", pid=1, started_at=T0)
    await b.heartbeat("[]", host="bench-b", pid=2, started_at=T0)
    listed = await b.stations()
    assert [(s.station, s.host, s.pid, s.slots) for s in listed] == [
        ("A", "bench-a", 1, '[{"rig": 1}]'),
        ("B", "bench-b", 2, "[]"),
    ]
    await a.set_slot_service(1, 1, disabled=True, reason="worn", by="tech")
    assert [s.slot for s in await a.slot_services()] == [1]
    assert await b.slot_services() == []
    await b.record_rejected(guid(9), 1, 2, "not_in_batch")
    assert await a.list_rejected() == []
    assert [r.guid for r in await b.list_rejected()] == [guid(9)]
    mine = await b.outbox_pending()
    assert mine
    assert {m.station for m in mine} == {"B"}
    theirs = {n.event_id for n in await a.outbox_pending()}
    assert theirs
    assert not theirs & {m.event_id for m in mine}


async def test_the_first_station_to_open_an_older_store_adopts_what_can_change(
    tmp_path: Path,
) -> None:
    """A SQLite store of schema 5 with a GUID left in progress, unpublished events and a slot
    out of service: opened by station S, they are S's; B, next, holds nothing of them."""
    path = tmp_path / "old.sqlite3"
    old = await SqliteStore.open(path, migrations=MIGRATIONS[:5])
    await old.close()
    insert_old_batch(path, [None, None])
    conn = sqlite3.connect(path)
    try:
        conn.execute(
            "UPDATE guid_states SET status = 'in_progress', attempts = 1, rig = 1, slot = 2 "
            "WHERE guid = ?",
            (str(guid(1)),),
        )
        conn.execute(
            "INSERT INTO attempts (batch_id, guid, attempt, rig, slot, started_at) "
            "VALUES ('B000001', ?, 1, 1, 2, ?)",
            (str(guid(1)), OLD_TS),
        )
        conn.execute(
            "INSERT INTO slot_service (rig, slot, disabled, reason, changed_by, changed_at) "
            "VALUES (1, 3, 1, 'worn', 'tech', ?)",
            (OLD_TS,),
        )
        conn.execute(
            "INSERT INTO outbox (event_id, kind, payload, created_at) "
            "VALUES ('e-old', 'alert', '{}', ?)",
            (OLD_TS,),
        )
        conn.commit()
    finally:
        conn.close()
    async with await open_store(sqlite_url(path), station="B") as b:
        assert await b.slot_services() != []  # B opened first: it adopted them
    async with await open_store(sqlite_url(path), station="S") as s:
        assert await s.recover_interrupted() == []  # B's now
        assert await s.slot_services() == []
        assert await s.outbox_depth() == 0
    async with await open_store(sqlite_url(path), station="B") as b:
        assert [m.event_id for m in await b.outbox_pending()] == ["e-old"]
        assert await b.recover_interrupted() == [("B000001", guid(1))]
        assert [(x.rig, x.slot, x.reason) for x in await b.slot_services()] == [(1, 3, "worn")]
