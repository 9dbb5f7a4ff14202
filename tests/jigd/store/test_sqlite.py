"""The SQLite backend: WAL and durability, its worker thread, its schema files and migrations.
The behaviour every backend shares is tested in test_contract.py."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import sqlite3
import sys
import threading
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from jigd.events import (
    BatchStatus,
    Event,
    EventKind,
    format_utc,
    rejected_alert_event,
    result_event,
)
from jigd.manifest import ManifestRow
from jigd.model import FirmwareVersion, Outcome
from jigd.mqtt import MqttPublisher
from jigd.store import (
    BatchInfo,
    GuidStatus,
    InterruptedGuid,
    SchemaVersionError,
    Store,
    StoreClosedError,
    StoreError,
    summary_event,
)
from jigd.store.sqlite import MIGRATIONS, SqliteStore
from tests.jigd.mqtt_helpers import (
    STATION,
    Subscriber,
    config_for,
    outbox_drained,
    outbox_messages,
    running,
)
from tests.jigd.store.books import MODEL, OLD, StepClock, flash, guid, result, route, rows
from tests.jigd.store.old_schema import OLD_OUTCOMES, insert_old_batch
from tests.services import Mosquitto

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "var" / "jigd.sqlite3"


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[SqliteStore]:
    async with await SqliteStore.open(db_path, clock=StepClock()) as opened:
        yield opened


# --- opening --------------------------------------------------------------------------------------


async def test_open_creates_directories_and_uses_wal_full_sync_foreign_keys(
    store: SqliteStore, db_path: Path
) -> None:
    assert await asyncio.to_thread(db_path.is_file)
    assert await store.schema_version() == len(MIGRATIONS)

    def pragmas() -> tuple[str, int, int]:
        conn = store._db  # the worker thread's own connection
        return (
            conn.execute("PRAGMA journal_mode").fetchone()[0],
            conn.execute("PRAGMA synchronous").fetchone()[0],
            conn.execute("PRAGMA foreign_keys").fetchone()[0],
        )

    assert await store._run(pragmas) == ("wal", 2, 1)  # 2 is FULL


def test_sqlite_store_implements_the_store_contract() -> None:
    # Checked by mypy too: the station, MQTT publisher and reports depend on `Store` only.
    implementation: type[Store] = SqliteStore
    assert implementation is SqliteStore


async def test_all_database_work_runs_on_one_worker_thread(store: SqliteStore) -> None:
    threads = {await store._run(threading.get_ident) for _ in range(5)}
    assert len(threads) == 1
    assert threading.get_ident() not in threads


async def test_close_stops_the_thread_and_refuses_further_use(db_path: Path) -> None:
    store = await SqliteStore.open(db_path)
    before = {t.name for t in threading.enumerate()}
    assert any(name.startswith("jigd-store") for name in before)
    await store.close()
    await store.close()  # idempotent
    assert not any(t.name.startswith("jigd-store") for t in threading.enumerate())
    with pytest.raises(StoreClosedError):
        await store.list_batches()


async def test_open_names_the_path_when_it_cannot_create_the_store(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    await asyncio.to_thread(blocker.write_text, "not a directory")
    with pytest.raises(StoreError, match=r"file/jigd\.sqlite3: cannot create"):
        await SqliteStore.open(blocker / "jigd.sqlite3")
    assert not any(t.name.startswith("jigd-store") for t in threading.enumerate())


# --- the books in the database --------------------------------------------------------------------


async def test_final_outcome_and_journal_are_protected_in_the_database(
    store: SqliteStore, db_path: Path
) -> None:
    batch_id = await store.import_batch(rows(1), "WO", "P", "m.csv")
    await flash(store, batch_id, 1, Outcome.REFLASHED)
    await store.close()
    conn = sqlite3.connect(db_path)
    try:
        with pytest.raises(sqlite3.IntegrityError, match="final outcome cannot change"):
            conn.execute("UPDATE guid_states SET outcome = 'failed'")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("DELETE FROM events")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("UPDATE events SET kind = 'x'")
    finally:
        conn.close()


# --- durability and recovery ----------------------------------------------------------------------


CHILD = """
import asyncio, os, signal, sys
from datetime import UTC, datetime
from pathlib import Path

from jigd.manifest import parse_manifest
from jigd.model import FirmwareVersion, Outcome
from jigd.events import GuidResult
from jigd.store.sqlite import SqliteStore


async def main(path):
    store = await SqliteStore.open(Path(path))
    rows = parse_manifest(b"guid\\n00DB000000000001\\n00DB000000000002\\n00DB000000000003\\n", "m")
    batch_id = await store.import_batch(rows, "WO", "P", "m.csv")
    one, two, _ = (row.guid for row in rows)
    await store.begin_attempt(batch_id, two, 1, 2)
    attempt = await store.begin_attempt(batch_id, one, 1, 1)
    now = datetime.now(UTC)
    await store.record_result(GuidResult(
        batch_id=batch_id, guid=one, outcome=Outcome.REFLASHED, rig=1, slot=1, attempts=attempt,
        started=now, finished=now, from_version=FirmwareVersion(1), to_version=FirmwareVersion(2),
        image_sha256="cd" * 32,
    ))
    print(batch_id, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # no close, no checkpoint: the WAL must carry it


asyncio.run(main(sys.argv[1]))
"""


async def test_results_survive_sigkill_and_in_progress_becomes_interrupted(db_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        str(db_path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    out, err = await proc.communicate()
    assert proc.returncode == -signal.SIGKILL, err.decode()
    batch_id = out.decode().strip()

    async with await SqliteStore.open(db_path) as store:
        state = await store.guid_state(batch_id, guid(1))
        assert (state.outcome, state.to_version, state.image_sha256) == (
            Outcome.REFLASHED,
            FirmwareVersion(2),
            "cd" * 32,
        )
        topics = [route(m).topic for m in await store.outbox_pending()]
        assert topics == [
            f"batches/{batch_id}/summary",
            f"batches/{batch_id}/results/{guid(1)}",
            f"batches/{batch_id}/summary",
        ]
        assert (await store.guid_state(batch_id, guid(2))).status is GuidStatus.IN_PROGRESS

        assert await store.recover_interrupted() == [InterruptedGuid(batch_id, guid(2))]
        assert await store.recover_interrupted() == []
        state = await store.guid_state(batch_id, guid(2))
        assert (state.status, state.outcome) == (GuidStatus.INTERRUPTED, None)
        [attempt] = await store.attempts(batch_id, guid(2))
        assert attempt.error_code == "interrupted"
        assert [e.kind for e in await store.journal(guid=guid(2))] == [
            "attempt_started",
            "interrupted",
        ]
        # Seen again: resumed as the next attempt.
        assert await store.begin_attempt(batch_id, guid(2), 1, 4) == 2
        assert (await store.journal(guid=guid(2)))[-1].data["resumed"] is True


# --- the event loop -------------------------------------------------------------------------------


async def test_event_loop_keeps_ticking_during_a_large_import(store: SqliteStore) -> None:
    loop = asyncio.get_running_loop()
    manifest = [ManifestRow(i + 2, guid(i), MODEL, OLD) for i in range(10_000)]
    gaps: list[float] = []
    importing = asyncio.Event()
    done = asyncio.Event()

    async def ticker() -> None:
        last = loop.time()
        while not done.is_set():
            await asyncio.sleep(0.005)
            now = loop.time()
            if importing.is_set():
                gaps.append(now - last)
            last = now

    # Which threads run SQL: the connection reports every statement it executes.
    sql_threads: set[int] = set()
    await store._run(
        store._db.set_trace_callback, lambda statement: sql_threads.add(threading.get_ident())
    )
    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.01)
    importing.set()
    await store.import_batch(manifest, "WO", "P", "big.csv")
    done.set()
    await task
    await store._run(store._db.set_trace_callback, None)
    assert (await store.get_batch("B000001")).expected == 10_000
    # No statement ran on the event loop's thread, and the loop kept ticking meanwhile (a
    # blocking import would give no tick at all until it returned).
    assert sql_threads
    assert threading.get_ident() not in sql_threads
    assert len(gaps) >= 3


# --- migrations -----------------------------------------------------------------------------------


SYNTHETIC_NEXT = """
ALTER TABLE batches ADD COLUMN site TEXT NOT NULL DEFAULT 'unknown';
CREATE TABLE station_notes (id INTEGER PRIMARY KEY, note TEXT NOT NULL) STRICT;
"""


async def test_an_older_database_upgrades_and_keeps_its_data(db_path: Path) -> None:
    async with await SqliteStore.open(db_path) as store:
        assert await store.schema_version() == len(MIGRATIONS)
        batch_id = await store.import_batch(rows(1, 2), "WO", "P", "m.csv")
        await flash(store, batch_id, 1, Outcome.REFLASHED)

    migrations = (*MIGRATIONS, SYNTHETIC_NEXT)
    async with await SqliteStore.open(db_path, migrations=migrations) as store:
        assert await store.schema_version() == len(MIGRATIONS) + 1
        assert (await store.guid_state(batch_id, guid(1))).outcome is Outcome.REFLASHED
        assert (await store.get_batch(batch_id)).expected == 2

        def site() -> str:
            return str(store._db.execute("SELECT site FROM batches").fetchone()[0])

        assert await store._run(site) == "unknown"
    conn = sqlite3.connect(db_path)
    try:
        versions = conn.execute("SELECT version FROM schema_migrations ORDER BY version")
        assert [v for (v,) in versions] == list(range(1, len(MIGRATIONS) + 2))
    finally:
        conn.close()


async def test_a_failing_migration_rolls_back_whole(db_path: Path) -> None:
    async with await SqliteStore.open(db_path, migrations=MIGRATIONS[:1]):
        pass
    broken = (*MIGRATIONS[:1], SYNTHETIC_NEXT + "\nINSERT INTO no_such_table VALUES (1);")
    with pytest.raises(StoreError, match="version 2 failed and was rolled back"):
        await SqliteStore.open(db_path, migrations=broken)
    conn = sqlite3.connect(db_path)
    try:
        columns = [row[1] for row in conn.execute("PRAGMA table_info(batches)")]
        assert "site" not in columns
        assert conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone() == (1,)
    finally:
        conn.close()


async def test_a_database_from_a_newer_jigd_is_refused(db_path: Path) -> None:
    async with await SqliteStore.open(db_path, migrations=(*MIGRATIONS, SYNTHETIC_NEXT)):
        pass
    with pytest.raises(SchemaVersionError, match="newer than this jigd"):
        await SqliteStore.open(db_path)
    assert not any(t.name.startswith("jigd-store") for t in threading.enumerate())


# The SHA-256 of each released migration: a store file at that version must keep opening, so
# its SQL never changes. Append a new version instead.
RELEASED_MIGRATIONS = {
    1: "780a3dfeb5f9dd62f5836937516e77ebcd0e8e184d84e93fe9dacfae2d2548b9",
    2: "f3f466c93e658493d64dd8ac01ec8a3f2ec855aee445373b9aad50c8bf907e2a",
    3: "8663f15cab10e5bc1963c3f56331a7a2f69f553b5f89f73305e6c996b20a5c23",
    4: "3ac5ef04b1235a1525b08b73629f80082194572bc02683b29592e7aaa9c125d5",
    5: "69776b304876f7f8a77afdd54b4e9b8dacfd5cbd1155dfdd9b97684ad6a544bc",
    6: "960ba5137e395b00e9e55271063652606270760f130bc191aacf9972c8ea2824",
}


def test_released_migrations_are_unchanged() -> None:
    assert len(MIGRATIONS) >= len(RELEASED_MIGRATIONS)
    for version, digest in RELEASED_MIGRATIONS.items():
        text = MIGRATIONS[version - 1]
        assert hashlib.sha256(text.encode()).hexdigest() == digest, f"version {version} changed"


# --- version 1 outboxes: MQTT topics in the store ------------------------------------------------

V1_OUTBOX_SQL = (
    "INSERT INTO outbox (event_id, topic, payload, qos, retain, created_at, published_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)


def _version_1_outbox(now: datetime) -> list[tuple[Event, str, int, bool]]:
    """Outbox rows as jigd wrote them at schema version 1: event, topic suffix, QoS, retain."""
    info = BatchInfo(
        batch_id="B000001",
        booking="WO",
        party="P",
        source="m.csv",
        status=BatchStatus.OPEN,
        created_at=now,
        closed_at=None,
        expected=2,
        received=1,
        pending=1,
        counts={Outcome.REFLASHED: 1},
    )
    return [
        (summary_event(replace(info, received=0, pending=2, counts={}), None, now=now),
         "batches/B000001/summary", 1, True),
        (result_event(result("B000001", 1, Outcome.REFLASHED), now=now),
         f"batches/B000001/results/{guid(1)}", 1, False),
        (summary_event(info, None, now=now), "batches/B000001/summary", 1, True),
        (rejected_alert_event(guid(50), 2, 8, "not_in_batch", now=now), "alerts", 1, False),
    ]  # fmt: skip


def _write_version_1_store(path: Path, outbox: list[tuple[Event, str, int, bool]]) -> None:
    """A version 1 store file, made with version 1's SQL; the first outbox row published."""
    path.parent.mkdir(parents=True)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.executescript(
            "BEGIN;\nCREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, "
            "applied_at TEXT NOT NULL) STRICT;\n" + MIGRATIONS[0]
        )
        conn.execute("INSERT INTO schema_migrations VALUES (1, '2025-03-01T08:00:00.000000Z')")
        for n, (event, topic, qos, retain) in enumerate(outbox):
            created = format_utc(event.ts)
            published = created if n == 0 else None
            conn.execute(
                V1_OUTBOX_SQL,
                (event.event_id, topic, event.to_json(), qos, int(retain), created, published),
            )
        conn.execute("COMMIT")
    finally:
        conn.close()


async def test_version_1_outbox_rows_are_delivered_unchanged_after_the_upgrade(
    db_path: Path, mosquitto: Mosquitto
) -> None:
    outbox = _version_1_outbox(datetime(2025, 3, 1, 8, 0, tzinfo=UTC))
    await asyncio.to_thread(_write_version_1_store, db_path, outbox)
    pending = outbox[1:]

    async with await SqliteStore.open(db_path) as store:
        assert await store.schema_version() == len(MIGRATIONS)
        messages = await store.outbox_pending()
        assert [(m.id, m.event_id, m.payload) for m in messages] == [
            (n, event.event_id, event.to_json()) for n, (event, *_) in enumerate(pending, start=2)
        ]
        assert [tuple(route(m)) for m in messages] == [tuple(row[1:]) for row in pending]
        assert [m.kind for m in messages] == [EventKind.RESULT, EventKind.SUMMARY, EventKind.ALERT]

        publisher = MqttPublisher(config_for(mosquitto.port), STATION, store, password=None)
        async with Subscriber(mosquitto.port) as sub, running(publisher):
            await outbox_drained(store)
            await sub.wait_for(lambda s: len(outbox_messages(s.messages)) >= 3, "the outbox")
        delivered = outbox_messages(sub.messages)
        assert [(m.suffix, m.payload) for m in delivered] == [
            (topic, event.to_json().encode()) for event, topic, _, _ in pending
        ]
        # Retained as before: a consumer that comes later gets the latest summary, nothing else.
        async with Subscriber(mosquitto.port) as late:
            await late.wait_for(lambda s: len(outbox_messages(s.messages)) >= 1, "retained")
            await asyncio.sleep(0.2)  # anything else retained would have arrived meanwhile
        [retained] = outbox_messages(late.messages)
        summary, topic, _, _ = pending[1]
        assert (retained.suffix, retained.payload, retained.retain) == (
            topic,
            summary.to_json().encode(),
            True,
        )

        # New events follow the old ones: ids are never reused.
        await store.import_batch(rows(7), "WO-2", "P", "n.csv")
        [new] = await store.outbox_pending()
        assert new.id == len(outbox) + 1


async def test_batch_counts_are_backfilled_from_the_guid_states(db_path: Path) -> None:
    async with await SqliteStore.open(db_path, migrations=MIGRATIONS[:3]):
        pass
    insert_old_batch(db_path, OLD_OUTCOMES)
    async with await SqliteStore.open(db_path) as store:
        info = await store.get_batch("B000001")
        assert await store.check_books() == []
    assert (info.expected, info.received, info.pending) == (7, 4, 2)
    assert dict(info.counts) == {
        Outcome.REFLASHED: 2,
        Outcome.ALREADY_CURRENT: 1,
        Outcome.FAILED: 1,
        Outcome.NOT_RECEIVED: 1,
    }
