"""The PostgreSQL backend: its URLs, migrations, several stores on one database, errors that
name the server and never a password, and the same books as SQLite for the same operations.
The behaviour every backend shares is tested in test_contract.py; these run against the
throwaway cluster of jigd/demo/pgcluster.py (tests/postgres.py)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from jigd.events import AlertKind, EventKind, format_utc, rejected_alert_event
from jigd.model import Outcome, Stage
from jigd.store import (
    BackupError,
    GuidBusyError,
    GuidInOpenBatchError,
    SchemaVersionError,
    SelftestCheck,
    Store,
    StoreClosedError,
    StoreError,
    StoreUrlError,
    open_store,
    resolve_store_url,
)
from jigd.store import sqlite as sqlite_backend
from jigd.store.postgres import MIGRATIONS, PostgresStore, masked_url
from jigd.store.postgres.urls import scrub
from tests.jigd.store.books import (
    T0,
    StepClock,
    books_of,
    counted_in_order,
    flash,
    guid,
    result,
    rows,
)
from tests.jigd.store.old_schema import OLD_OUTCOMES, insert_old_batch_pg
from tests.postgres import PostgresCluster
from tests.services import free_port

SYNTHETIC_NEXT = """
ALTER TABLE batches ADD COLUMN site text NOT NULL DEFAULT 'unknown';
CREATE TABLE station_notes (id integer PRIMARY KEY, note text NOT NULL);
"""
PASSWORD = "s3cret-pw"


@pytest.fixture
def pg_url(postgres_cluster: PostgresCluster) -> str:
    return postgres_cluster.new_database()


@pytest.fixture
async def store(pg_url: str) -> AsyncIterator[PostgresStore]:
    async with await PostgresStore.open(pg_url, clock=StepClock()) as opened:
        yield opened


def database_of(url: str) -> str:
    return url.rsplit("/", 1)[1]


def with_password(url: str) -> str:
    return url.replace("jigd_test@", f"jigd_test:{PASSWORD}@")


# --- URLs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://jigd@db.example/jigd",
        "postgresql://jigd:pw@db.example:5433/jigd?sslmode=require",
        "postgres://db.example/jigd",
        "postgresql:///jigd?host=/run/postgresql",
        "postgresql://db.example?dbname=jigd",
    ],
)
def test_postgresql_urls_that_name_a_server_and_database_resolve_unchanged(url: str) -> None:
    assert resolve_store_url(url, Path("/etc/jigd")) == url


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("postgresql://db.example", "names no database"),
        ("postgresql://db.example/", "names no database"),
        ("postgresql:///jigd", "names no server"),
        (f"postgresql://jigd:{PASSWORD}@/jigd", "names no server"),
        (f"postgres://jigd:{PASSWORD}@db.example/jigd#x", "has a fragment"),
        (f"postgresql://jigd:{PASSWORD}@db.example:99999/jigd", "is not a URL"),
    ],
)
async def test_postgresql_urls_without_a_server_or_database_are_refused_masked(
    url: str, problem: str
) -> None:
    with pytest.raises(StoreUrlError, match=problem) as caught:
        resolve_store_url(url, Path("/etc/jigd"))
    assert PASSWORD not in str(caught.value)
    assert repr(masked_url(url)) in str(caught.value)
    with pytest.raises(StoreUrlError, match=problem):
        await open_store(url)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://jigd:pw@db:5432/jigd", "postgresql://jigd:***@db:5432/jigd"),
        ("postgresql://jigd:p%40ss@db/jigd?x=1", "postgresql://jigd:***@db/jigd?x=1"),
        ("postgresql://jigd@db/jigd", "postgresql://jigd@db/jigd"),
        ("postgresql://db/jigd", "postgresql://db/jigd"),
        (
            "postgresql://db/jigd?password=pw&sslmode=require",
            "postgresql://db/jigd?password=***&sslmode=require",
        ),
        (
            "postgresql:///jigd?host=/run/pg&password=pw",
            "postgresql:///jigd?host=/run/pg&password=***",
        ),
    ],
)
def test_a_password_is_masked(url: str, shown: str) -> None:
    assert masked_url(url) == shown


def test_a_password_is_scrubbed_from_a_message_raw_or_quoted() -> None:
    url = "postgresql://jigd:p%40ss@db/jigd?password=other"
    message = "FATAL: p@ss, p%40ss and other were wrong"
    assert scrub(message, url) == "FATAL: ***, *** and *** were wrong"


# --- opening and migrations -----------------------------------------------------------------------


async def test_a_new_database_is_migrated_to_the_version_sqlite_has(
    store: PostgresStore, pg_url: str, postgres_cluster: PostgresCluster
) -> None:
    assert await store.schema_version() == len(MIGRATIONS) == len(sqlite_backend.MIGRATIONS)
    applied = postgres_cluster.sql(
        "SELECT version FROM schema_migrations ORDER BY version", database_of(pg_url)
    )
    assert applied.split() == [str(v) for v in range(1, len(MIGRATIONS) + 1)]
    tables = postgres_cluster.sql(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename",
        database_of(pg_url),
    )
    assert tables.split() == [
        "attempts",
        "batch_counts",
        "batches",
        "events",
        "expected_guids",
        "guid_states",
        "outbox",
        "rejected_hubs",
        "schema_migrations",
        "selftest_checks",
        "selftests",
        "slot_service",
        "stations",
    ]


async def test_a_database_newer_than_this_jigd_is_refused(pg_url: str) -> None:
    async with await PostgresStore.open(pg_url, migrations=(*MIGRATIONS, SYNTHETIC_NEXT)) as s:
        assert await s.schema_version() == len(MIGRATIONS) + 1
    newer = with_password(pg_url)
    with pytest.raises(SchemaVersionError) as caught:
        await open_store(newer)
    assert caught.value.found == len(MIGRATIONS) + 1
    assert caught.value.known == len(MIGRATIONS)
    assert str(caught.value).startswith(
        f"{masked_url(newer)}: database schema version {len(MIGRATIONS) + 1} is newer"
    )
    assert PASSWORD not in str(caught.value)


async def test_an_older_database_is_migrated_and_a_failed_migration_rolled_back(
    pg_url: str,
) -> None:
    async with await PostgresStore.open(pg_url, migrations=MIGRATIONS[:3]) as old:
        assert await old.schema_version() == 3
    broken = (*MIGRATIONS[:4], "CREATE TABLE t (x integer);\nINSERT INTO no_such_table VALUES (1);")
    with pytest.raises(StoreError, match=r"migration to schema version 5 failed and was rolled"):
        await PostgresStore.open(pg_url, migrations=broken)
    async with await PostgresStore.open(pg_url, migrations=MIGRATIONS[:4]) as kept:
        assert await kept.schema_version() == 4  # version 4 committed, 5 rolled back
    async with await PostgresStore.open(pg_url) as new:
        assert await new.schema_version() == len(MIGRATIONS)
        batch_id = await new.import_batch(rows(1), "WO-1", "P", "m.csv")
        assert (await new.get_batch(batch_id)).expected == 1


async def test_two_stations_starting_together_migrate_once(
    pg_url: str, postgres_cluster: PostgresCluster
) -> None:
    first, second = await asyncio.gather(PostgresStore.open(pg_url), PostgresStore.open(pg_url))
    async with first, second:
        batch_id = await first.import_batch(rows(1, 2), "WO-1", "P", "m.csv")
        assert (await second.get_batch(batch_id)).expected == 2
    applied = postgres_cluster.sql("SELECT COUNT(*) FROM schema_migrations", database_of(pg_url))
    assert applied.strip() == str(len(MIGRATIONS))


async def test_an_unreachable_server_is_a_store_error_naming_it_without_the_password() -> None:
    port = free_port()  # nothing listens there
    url = f"postgresql://jigd:{PASSWORD}@127.0.0.1:{port}/jigd"
    with pytest.raises(StoreError, match="cannot connect") as caught:
        await open_store(url)
    assert f"127.0.0.1:{port}/jigd" in str(caught.value)
    assert PASSWORD not in str(caught.value)


async def test_a_missing_database_is_a_store_error_naming_it(
    postgres_cluster: PostgresCluster, caplog: pytest.LogCaptureFixture
) -> None:
    url = with_password(postgres_cluster.url("no_such_db"))
    with caplog.at_level(logging.DEBUG), pytest.raises(StoreError) as caught:
        await open_store(url)
    assert f"127.0.0.1:{postgres_cluster.port}/no_such_db" in str(caught.value)
    assert "no_such_db" in str(caught.value).split(": cannot connect: ", 1)[1]
    assert PASSWORD not in str(caught.value)
    assert PASSWORD not in caplog.text


async def test_opening_and_working_logs_no_password(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        async with await open_store(with_password(pg_url)) as opened:
            await opened.import_batch(rows(1), "WO-1", "P", "m.csv")
    assert "migrating the schema" in caplog.text
    assert PASSWORD not in caplog.text


async def test_a_closed_store_refuses_calls(pg_url: str) -> None:
    opened = await PostgresStore.open(pg_url)
    await opened.close()
    await opened.close()  # idempotent
    with pytest.raises(StoreClosedError, match="closed"):
        await opened.list_batches()


async def test_backup_names_pg_dump(store: PostgresStore, tmp_path: Path) -> None:
    with pytest.raises(BackupError, match="pg_dump") as caught:
        await store.backup(tmp_path / "copy.sqlite3")
    assert "copy.sqlite3" in str(caught.value)
    assert not (tmp_path / "copy.sqlite3").exists()


# --- several stores on one database ---------------------------------------------------------------


async def test_two_stores_never_flash_one_guid_in_two_slots(pg_url: str) -> None:
    async with await PostgresStore.open(pg_url) as a, await PostgresStore.open(pg_url) as b:
        batch_id = await a.import_batch(rows(1), "WO-1", "P", "m.csv")
        results = await asyncio.gather(
            a.begin_attempt(batch_id, guid(1), 1, 1),
            b.begin_attempt(batch_id, guid(1), 2, 1),
            return_exceptions=True,
        )
        assert sorted(type(r).__name__ for r in results) == ["GuidBusyError", "int"]
        assert [r for r in results if isinstance(r, GuidBusyError)]
        assert (await b.guid_state(batch_id, guid(1))).attempts == 1


async def test_two_stores_importing_together_get_distinct_ids_and_one_owner_per_guid(
    pg_url: str,
) -> None:
    async with await PostgresStore.open(pg_url) as a, await PostgresStore.open(pg_url) as b:
        ids = await asyncio.gather(
            a.import_batch(rows(1), "WO-1", "P", "a.csv"),
            b.import_batch(rows(2), "WO-2", "P", "b.csv"),
        )
        assert sorted(ids) == ["B000001", "B000002"]
        same = await asyncio.gather(
            a.import_batch(rows(3), "WO-3", "P", "a.csv"),
            b.import_batch(rows(3), "WO-3", "P", "b.csv"),
            return_exceptions=True,
        )
        assert sorted(type(r).__name__ for r in same) == ["GuidInOpenBatchError", "str"]
        assert [r for r in same if isinstance(r, GuidInOpenBatchError)]


async def test_a_result_from_one_store_is_in_the_others_outbox_in_commit_order(
    pg_url: str,
) -> None:
    async with await PostgresStore.open(pg_url) as a, await PostgresStore.open(pg_url) as b:
        batch_id = await a.import_batch(rows(*range(1, 9)), "WO-1", "P", "m.csv")
        await asyncio.gather(
            *(flash(a if n % 2 else b, batch_id, n, Outcome.REFLASHED) for n in range(1, 9))
        )
        pending = await a.outbox_pending(limit=100)
        assert [m.id for m in pending] == sorted(m.id for m in pending)
        assert len(pending) == 1 + 2 * 8  # the first summary, then a result and a summary each
        last = json.loads(pending[-1].payload)
        assert last["counts"]["reflashed"] == 8
        assert await b.check_books() == []


async def _wait_for_lock_waiters(url: str, count: int) -> None:
    """Until `count` sessions of the database wait for a lock."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as watcher:
        async with asyncio.timeout(30):
            while True:
                cursor = await watcher.execute(
                    "SELECT COUNT(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
                row = await cursor.fetchone()
                if row is not None and row[0] >= count:
                    return
                await asyncio.sleep(0.02)


async def test_results_of_one_batch_from_two_stores_queue_its_summaries_in_count_order(
    pg_url: str,
) -> None:
    """Eight results of one batch, from two stations, held at the batch's counts row until all
    eight are under way, then let go together: whatever order they commit in, each summary in
    the outbox counts one more result than the one before it, and every result comes before
    the summary that counts it. (Queued before the counts row is locked, the summaries would
    all count none.)"""
    async with await PostgresStore.open(pg_url) as a, await PostgresStore.open(pg_url) as b:
        batch_id = await a.import_batch(rows(*range(1, 9)), "WO-1", "P", "m.csv")
        for n in range(1, 9):
            await a.begin_attempt(batch_id, guid(n), 1, n)
        holder = await psycopg.AsyncConnection.connect(pg_url, autocommit=True)
        async with holder, holder.transaction():
            await holder.execute(
                "SELECT 1 FROM batch_counts WHERE batch_id = %s FOR UPDATE", (batch_id,)
            )
            recording = [
                asyncio.ensure_future(
                    (a if n % 2 else b).record_result(
                        result(batch_id, n, Outcome.REFLASHED, slot=n)
                    )
                )
                for n in range(1, 9)
            ]
            await _wait_for_lock_waiters(pg_url, 8)  # all eight wait for the counts row
        await asyncio.gather(*recording)
        pending = await b.outbox_pending(limit=100)
        assert counted_in_order(pending, batch_id) == list(range(9))
        assert [m.kind for m in pending].count(EventKind.RESULT) == 8
        assert await a.check_books() == []


# --- the same books as SQLite ---------------------------------------------------------------------


async def _operate(store: Store) -> list[str]:
    """A day at a station: imports, rejections, attempts of each kind, alerts, a close."""
    await store.record_rejected(guid(9), 1, 2, "not_in_batch")
    first = await store.import_batch(rows(1, 2, 3, 9), "WO-1", "Party", "m.csv")
    second = await store.import_batch(rows(4, 5), "WO-2", "Party", "n.csv")
    await flash(store, first, 1, Outcome.REFLASHED)
    await flash(store, first, 2, Outcome.FAILED)
    attempt = await store.begin_attempt(first, guid(3), 1, 3)
    await store.record_stage(first, guid(3), attempt, Stage.UPLOAD, "uploaded 1 bytes")
    await store.end_attempt(first, guid(3), attempt, stage=Stage.VERIFY, error_code="x")
    attempt = await store.begin_attempt(first, guid(3), 1, 3)
    await store.interrupt_attempt(first, guid(3), attempt, stage=Stage.RESET, reason="pulled")
    await flash(store, second, 4, Outcome.ALREADY_CURRENT)
    await store.set_slot_service(1, 4, disabled=True, reason="bent pin", by="ops")
    await store.record_alert(AlertKind.RIG_OFFLINE, detail="rig 2 lost", rig=2)
    await store.record_selftest(1, [SelftestCheck(None, "controller", True, "ok")])
    await store.close_batch(first)
    published = [m.id for m in await store.outbox_pending(limit=3)]
    assert await store.mark_published([*published, 999]) == 3
    purged = await store.purge(outbox_age=timedelta(0), journal_age=timedelta(days=1))
    assert (purged.outbox, purged.journal) == (3, 0)
    return [first, second]


def _without_event_ids(value: Any) -> Any:
    """Event ids are random: compare everything else."""
    if isinstance(value, dict):
        return {k: "*" if k == "event_id" else _without_event_ids(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_event_ids(v) for v in value]
    return value


async def _everything(store: Store, batch_ids: list[str]) -> dict[str, Any]:
    outbox = await store.outbox_pending(limit=1000)
    return {
        "batches": await store.list_batches(),
        "results": [await store.batch_results(b) for b in batch_ids],
        "attempts": [await store.attempts(batch_ids[0], guid(n)) for n in (1, 2, 3)],
        "set_aside": [await store.set_aside(b) for b in batch_ids],
        "journal": [
            (e.id, e.ts, e.kind, e.batch_id, e.guid, e.rig, e.slot, _without_event_ids(e.data))
            for e in await store.journal()
        ],
        "outbox": [  # the payload text byte for byte, but for its random event id
            (m.id, m.kind, m.created_at, m.payload.replace(m.event_id, "*")) for m in outbox
        ],
        "rejected": await store.list_rejected(),
        "slots": await store.slot_services(),
        "selftests": await store.last_selftests(),
        "depth": await store.outbox_depth(),
        "times": await store.hub_times(),
        "books": await store.check_books(),
        "reports": await books_of(store, batch_ids),
    }


async def test_the_same_operations_give_the_same_books_as_sqlite(
    pg_url: str, tmp_path: Path
) -> None:
    seen = []
    for url in (sqlite_backend.sqlite_url(tmp_path / "jigd.sqlite3"), pg_url):
        async with await open_store(url, clock=StepClock()) as opened:
            seen.append(await _everything(opened, await _operate(opened)))
    sqlite_books, postgres_books = seen
    assert postgres_books.keys() == sqlite_books.keys()
    for key, value in sqlite_books.items():
        assert postgres_books[key] == value, key


async def test_a_write_whose_caller_is_cancelled_still_commits(pg_url: str) -> None:
    """As the contract says: re-reading tells; close() waits for the write."""
    async with await PostgresStore.open(pg_url) as first:
        batch_id = await first.import_batch(rows(1), "WO-1", "P", "m.csv")
        attempt = await first.begin_attempt(batch_id, guid(1), 1, 1)
        call = asyncio.create_task(
            first.record_result(result(batch_id, 1, Outcome.REFLASHED, attempts=attempt))
        )
        await asyncio.sleep(0)  # the write has started
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
    async with await PostgresStore.open(pg_url) as again:
        assert (await again.guid_state(batch_id, guid(1))).outcome is Outcome.REFLASHED


async def test_version_1_outbox_rows_keep_their_id_and_payload_after_the_upgrade(
    pg_url: str, postgres_cluster: PostgresCluster
) -> None:
    async with await PostgresStore.open(pg_url, migrations=MIGRATIONS[:1]):
        pass
    event = rejected_alert_event(guid(1), 1, 2, "not_in_batch", now=T0)
    postgres_cluster.sql(
        "INSERT INTO outbox (event_id, topic, payload, qos, retain, created_at) VALUES "
        f"('{event.event_id}', 'alerts', '{event.to_json()}', 1, false, '{format_utc(T0)}'), "
        f"('old', 'alerts', '{event.to_json()}', 1, false, '{format_utc(T0)}')",
        database_of(pg_url),
    )
    postgres_cluster.sql("DELETE FROM outbox WHERE event_id = 'old'", database_of(pg_url))
    async with await PostgresStore.open(pg_url, clock=StepClock()) as upgraded:
        [kept] = await upgraded.outbox_pending()
        assert (kept.id, kept.kind, kept.payload) == (1, EventKind.ALERT, event.to_json())
        await upgraded.record_rejected(guid(2), 1, 3, "not_in_batch")
        ids = [m.id for m in await upgraded.outbox_pending()]
    assert ids == [1, 3]  # id 2 was used, and ids are never reused


# The SHA-256 of each released migration: a database at that version must keep opening, so its
# SQL never changes. Append a new version instead.
RELEASED_MIGRATIONS = {
    1: "df08bc2c8e465fc273fc09936579a20e33775a8b88ab49815dd293729b42b20b",
    2: "bc15335102c32772d80e0cede7a818e2f427443b50645cf9a93ba3400b7451e4",
    3: "2b9b09d21d8026fb763484bbc047027e9d90019564d7ebe80a17daf7d7a8289f",
    4: "909c3532169d1fb6a53c29e561a115486933195c564bb0a9c6a662dead70f57a",
    5: "9e02c7e81a1e3be910ec99ed0038641f23bd2c08da5bd6c7945992774eacfbd2",
    6: "eef970c4ef3e94bbb582bf6e56dd15061855058e1e78ec21d87a4c974c8d58ac",
}


def test_released_migrations_are_unchanged() -> None:
    assert len(MIGRATIONS) >= len(RELEASED_MIGRATIONS)
    for version, digest in RELEASED_MIGRATIONS.items():
        text = MIGRATIONS[version - 1]
        assert hashlib.sha256(text.encode()).hexdigest() == digest, f"version {version} changed"


async def test_the_store_works_on_after_the_server_restarts(
    pg_url: str, postgres_cluster: PostgresCluster
) -> None:
    async with await PostgresStore.open(pg_url) as opened:
        batch_id = await opened.import_batch(rows(1), "WO-1", "P", "m.csv")
        opened._pool.timeout = 1.0  # a test waits less than a station for the server
        await asyncio.to_thread(postgres_cluster.stop)
        try:
            with pytest.raises(StoreError, match=rf"127\.0\.0\.1:{postgres_cluster.port}/"):
                await opened.get_batch(batch_id)
        finally:
            await asyncio.to_thread(postgres_cluster.start)
        opened._pool.timeout = 30.0  # the pool reconnects after a back-off of a few seconds
        assert (await opened.get_batch(batch_id)).expected == 1


async def test_a_database_of_the_previous_version_is_migrated_with_its_books(
    pg_url: str,
) -> None:
    async with await PostgresStore.open(pg_url, migrations=MIGRATIONS[:-1]) as old:
        assert await old.schema_version() == len(MIGRATIONS) - 1
    insert_old_batch_pg(pg_url, OLD_OUTCOMES)  # as the jigd of that version wrote them
    async with await PostgresStore.open(pg_url, station="bench-1") as store:
        assert await store.schema_version() == len(MIGRATIONS)
        info = await store.get_batch("B000001")
        assert (info.expected, info.received, info.pending) == (7, 4, 2)
        states = await store.batch_results("B000001")
        assert [s.outcome for s in states] == [
            None if o is None else Outcome(o) for o in OLD_OUTCOMES
        ]
        assert {s.station for s in states} == {None}  # recorded before stations: none named
        assert await store.check_books() == []
        await flash(store, "B000001", 1, Outcome.REFLASHED)
        assert (await store.guid_state("B000001", guid(1))).station == "bench-1"
