"""The SQLite store: the embedded default of a station (DESIGN.md, "Storage").

WAL journal, `synchronous=FULL` (a commit is on disk when it returns), foreign keys on. All
database work runs on one dedicated worker thread that owns the connection, so the event loop
never blocks on disk; each public method is one job on that thread, and each write is one
`BEGIN IMMEDIATE` transaction, so a result, its journal entry and its outbox messages commit
together or not at all.

A public method whose caller is cancelled still finishes its job on the worker thread: a
cancelled `record_result` may or may not have committed; re-reading `guid_state` tells.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, ParamSpec, Self, TypeVar

from jigd.manifest import FILE_FIELD, ManifestError, ManifestProblem, ManifestRow
from jigd.model import DeviceModel, FirmwareVersion, Guid, Outcome, Stage
from jigd.payloads import (
    AlertKind,
    AlertPayload,
    Outgoing,
    alert_message,
    format_utc,
    parse_utc,
    rejected_alert_message,
    result_message,
    summary_message,
)
from jigd.store import (
    MAX_SLOT,
    AttemptRecord,
    BatchBusyError,
    BatchClosedError,
    BatchInfo,
    BatchRef,
    BatchStatus,
    GuidBusyError,
    GuidInOpenBatchError,
    GuidResult,
    GuidState,
    GuidStatus,
    InterruptedGuid,
    InvalidRecordError,
    JournalEvent,
    OutboxMessage,
    OutcomeAlreadyRecordedError,
    RejectedHub,
    SchemaVersionError,
    StoreClosedError,
    StoreError,
    UnknownAttemptError,
    UnknownBatchError,
    UnknownGuidError,
)

__all__ = ["MIGRATIONS", "Clock", "SqliteStore", "utc_now"]

_LOGGER = logging.getLogger(__name__)

_P = ParamSpec("_P")
_T = TypeVar("_T")

Clock = Callable[[], datetime]

BUSY_TIMEOUT_MS = 5000
# Rows per `IN (...)` query; far below SQLite's limit on bound parameters.
_CHUNK = 500
INTERRUPTED_CODE = "interrupted"

# Numbered migrations: MIGRATIONS[0] makes version 1, and so on. Each is applied in one
# transaction together with its row in schema_migrations, so it never half-applies. A script
# must not contain BEGIN/COMMIT. Append new versions; never edit a released one.
_V1 = """
CREATE TABLE batches (
    id          TEXT PRIMARY KEY,
    seq         INTEGER NOT NULL UNIQUE,
    booking     TEXT NOT NULL,
    party       TEXT NOT NULL,
    source      TEXT NOT NULL,
    status      TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed')),
    created_at  TEXT NOT NULL,
    closed_at   TEXT,
    CHECK ((status = 'closed') = (closed_at IS NOT NULL))
) STRICT;

-- The GUIDs a manifest lists, with what the sending party declared. Never changes.
CREATE TABLE expected_guids (
    batch_id            TEXT NOT NULL REFERENCES batches (id),
    guid                TEXT NOT NULL,
    line                INTEGER NOT NULL,
    declared_model      TEXT,
    declared_firmware   TEXT,
    PRIMARY KEY (batch_id, guid)
) STRICT, WITHOUT ROWID;
CREATE INDEX expected_guids_by_guid ON expected_guids (guid);

-- Where each listed GUID is; once final, its one outcome never changes (trigger below).
CREATE TABLE guid_states (
    batch_id            TEXT NOT NULL,
    guid                TEXT NOT NULL,
    status              TEXT NOT NULL DEFAULT 'pending'
                        CHECK (status IN ('pending', 'in_progress', 'interrupted', 'final')),
    outcome             TEXT
                        CHECK (outcome IN ('reflashed', 'already_current', 'failed',
                                           'not_received')),
    model               TEXT,
    from_version        TEXT,
    to_version          TEXT,
    image_sha256        TEXT,
    rig                 INTEGER,
    slot                INTEGER,
    attempts            INTEGER NOT NULL DEFAULT 0,
    started_at          TEXT,
    finished_at         TEXT,
    failure_stage       TEXT,
    failure_code        TEXT,
    failure_detail      TEXT,
    last_link_errors    TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(last_link_errors)),
    updated_at          TEXT NOT NULL,
    PRIMARY KEY (batch_id, guid),
    FOREIGN KEY (batch_id, guid) REFERENCES expected_guids (batch_id, guid),
    CHECK ((status = 'final') = (outcome IS NOT NULL))
) STRICT, WITHOUT ROWID;
CREATE INDEX guid_states_by_status ON guid_states (status);
CREATE TRIGGER guid_states_final_is_final BEFORE UPDATE ON guid_states
WHEN OLD.status = 'final'
BEGIN
    SELECT RAISE(ABORT, 'a GUID with a final outcome cannot change');
END;

CREATE TABLE attempts (
    batch_id        TEXT NOT NULL,
    guid            TEXT NOT NULL,
    attempt         INTEGER NOT NULL CHECK (attempt >= 1),
    rig             INTEGER NOT NULL,
    slot            INTEGER NOT NULL,
    started_at      TEXT NOT NULL,
    finished_at     TEXT,
    stage_reached   TEXT,
    error_code      TEXT,
    error_detail    TEXT,
    PRIMARY KEY (batch_id, guid, attempt),
    FOREIGN KEY (batch_id, guid) REFERENCES guid_states (batch_id, guid)
) STRICT, WITHOUT ROWID;

-- Append-only: every action, traceable per GUID, rig and slot.
CREATE TABLE events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    ts          TEXT NOT NULL,
    kind        TEXT NOT NULL,
    batch_id    TEXT,
    guid        TEXT,
    rig         INTEGER,
    slot        INTEGER,
    data        TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(data))
) STRICT;
CREATE INDEX events_by_guid ON events (guid) WHERE guid IS NOT NULL;
CREATE INDEX events_by_batch ON events (batch_id) WHERE batch_id IS NOT NULL;
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'the journal is append-only');
END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN
    SELECT RAISE(ABORT, 'the journal is append-only');
END;

-- Hubs seen in a slot that no open batch lists: outside every batch's books.
CREATE TABLE rejected_hubs (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    guid    TEXT NOT NULL,
    rig     INTEGER NOT NULL,
    slot    INTEGER NOT NULL,
    reason  TEXT NOT NULL,
    ts      TEXT NOT NULL
) STRICT;
CREATE INDEX rejected_hubs_by_guid ON rejected_hubs (guid);

-- MQTT messages, committed with what they report; id order is commit order.
CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id        TEXT NOT NULL UNIQUE,
    topic           TEXT NOT NULL,
    payload         TEXT NOT NULL CHECK (json_valid(payload)),
    qos             INTEGER NOT NULL CHECK (qos IN (0, 1, 2)),
    retain          INTEGER NOT NULL CHECK (retain IN (0, 1)),
    created_at      TEXT NOT NULL,
    published_at    TEXT
) STRICT;
CREATE INDEX outbox_pending ON outbox (id) WHERE published_at IS NULL;
"""

MIGRATIONS: tuple[str, ...] = (_V1,)

_BOOTSTRAP = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     INTEGER PRIMARY KEY,
    applied_at  TEXT NOT NULL
) STRICT;
"""

_STATE_COLUMNS = """
    s.batch_id, s.guid, e.line, e.declared_model, e.declared_firmware, s.status, s.outcome,
    s.model, s.from_version, s.to_version, s.image_sha256, s.rig, s.slot, s.attempts,
    s.started_at, s.finished_at, s.failure_stage, s.failure_code, s.failure_detail,
    s.last_link_errors
"""
_STATE_FROM = "guid_states s JOIN expected_guids e USING (batch_id, guid)"
# `{}` takes a list of `?` placeholders, nothing else.
_OPEN_CONFLICTS_SQL = (
    "SELECT e.guid, e.batch_id, e.line, b.source FROM expected_guids e "
    "JOIN batches b ON b.id = e.batch_id WHERE b.status = 'open' AND e.guid IN ({})"
)
_MARK_PUBLISHED_SQL = "UPDATE outbox SET published_at = ? WHERE published_at IS NULL AND id IN ({})"


def utc_now() -> datetime:
    return datetime.now(UTC)


def _placeholders(count: int) -> str:
    return ",".join("?" * count)


def _chunks(items: Sequence[_T]) -> Iterator[Sequence[_T]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def _opt_time(text: str | None) -> datetime | None:
    return None if text is None else parse_utc(text)


def _opt_str(value: object | None) -> str | None:
    return None if value is None else str(value)


def _batch_id(seq: int) -> str:
    """Topic-safe (no `/`, `+`, `#`) and sortable for the first million batches."""
    return f"B{seq:06d}"


class SqliteStore:
    """The station's store on one SQLite file; create with `await SqliteStore.open(path)`."""

    def __init__(self, path: Path, clock: Clock) -> None:
        self.path = path
        self._clock = clock
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jigd-store")
        self._conn: sqlite3.Connection | None = None  # touched only on the worker thread
        self._closed = False
        self._outbox_changed = asyncio.Event()

    # --- lifecycle ----------------------------------------------------------------------------

    @classmethod
    async def open(
        cls, path: Path, *, clock: Clock = utc_now, migrations: Sequence[str] = MIGRATIONS
    ) -> SqliteStore:
        """Open (creating directories and file) and migrate to the newest schema version."""
        store = cls(path, clock)
        try:
            await store._run(store._open_sync, migrations)
        except BaseException:
            await store.close()
            raise
        return store

    async def close(self) -> None:
        """Close the connection and stop the worker thread; idempotent."""
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._close_sync)
        finally:
            # The worker is idle now (its last job just finished), so this join is immediate.
            self._executor.shutdown(wait=True)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def outbox_changed(self) -> asyncio.Event:
        """Set whenever a commit adds to the outbox; the publisher clears it before reading."""
        return self._outbox_changed

    async def _run(self, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        if self._closed:
            raise StoreClosedError(f"{self.path}: the store is closed")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(
                self._executor, functools.partial(fn, *args, **kwargs)
            )
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: database error: {exc}") from exc

    # --- worker-thread helpers ----------------------------------------------------------------

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreClosedError(f"{self.path}: the store is not open")
        return self._conn

    def _open_sync(self, migrations: Sequence[str]) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"{self.path}: cannot create the store's directory: {exc.strerror}"
            ) from exc
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, one transaction per job.
        conn = sqlite3.connect(self.path, isolation_level=None)
        self._conn = conn
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(
                f"{self.path}: SQLite cannot use WAL journal mode here (got {mode!r}); "
                "put the store on a local filesystem"
            )
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS:d}")
        self._migrate(conn, migrations)

    def _migrate(self, conn: sqlite3.Connection, migrations: Sequence[str]) -> None:
        conn.executescript(_BOOTSTRAP)
        current = self._version(conn)
        if current > len(migrations):
            raise SchemaVersionError(str(self.path), current, len(migrations))
        for version in range(current + 1, len(migrations) + 1):
            _LOGGER.info("%s: migrating the schema to version %d", self.path, version)
            try:
                # executescript runs the script's statements inside our open transaction; it
                # would commit a pending transaction first, so BEGIN is part of the script.
                conn.executescript("BEGIN IMMEDIATE;\n" + migrations[version - 1])
                conn.execute(
                    "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
                    (version, format_utc(self._clock())),
                )
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise StoreError(
                    f"{self.path}: migration to schema version {version} failed and was rolled "
                    f"back (the database stays at version {version - 1}): {exc}"
                ) from exc

    @staticmethod
    def _version(conn: sqlite3.Connection) -> int:
        row = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()
        return int(row[0])

    def _close_sync(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; rolled back if anything in it raises."""
        conn = self._db
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """One read transaction: several queries see the same snapshot."""
        conn = self._db
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    def _journal(
        self,
        conn: sqlite3.Connection,
        now: str,
        kind: str,
        *,
        batch_id: str | None = None,
        guid: Guid | None = None,
        rig: int | None = None,
        slot: int | None = None,
        **data: Any,
    ) -> None:
        conn.execute(
            "INSERT INTO events (ts, kind, batch_id, guid, rig, slot, data) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (now, kind, batch_id, _opt_str(guid), rig, slot, json.dumps(data, sort_keys=True)),
        )

    @staticmethod
    def _enqueue(conn: sqlite3.Connection, message: Outgoing, now: str) -> None:
        conn.execute(
            "INSERT INTO outbox (event_id, topic, payload, qos, retain, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (
                message.payload.event_id,
                message.topic,
                message.payload.to_json(),
                message.qos,
                int(message.retain),
                now,
            ),
        )

    @staticmethod
    def _batch_row(conn: sqlite3.Connection, batch_id: str) -> tuple[Any, ...]:
        row = conn.execute(
            "SELECT id, booking, party, source, status, created_at, closed_at "
            "FROM batches WHERE id = ?",
            (batch_id,),
        ).fetchone()
        if row is None:
            raise UnknownBatchError(batch_id)
        return tuple(row)

    def _batch_info(self, conn: sqlite3.Connection, batch_id: str) -> BatchInfo:
        _, booking, party, source, status, created_at, closed_at = self._batch_row(conn, batch_id)
        counts = dict.fromkeys(Outcome, 0)
        expected = received = pending = 0
        for outcome, number, seen in conn.execute(
            "SELECT outcome, COUNT(*), SUM(attempts > 0) FROM guid_states "
            "WHERE batch_id = ? GROUP BY outcome",
            (batch_id,),
        ):
            expected += number
            received += seen
            if outcome is None:
                pending += number
            else:
                counts[Outcome(outcome)] = number
        return BatchInfo(
            batch_id=batch_id,
            booking=booking,
            party=party,
            source=source,
            status=BatchStatus(status),
            created_at=parse_utc(created_at),
            closed_at=_opt_time(closed_at),
            expected=expected,
            received=received,
            pending=pending,
            counts=counts,
        )

    def _open_batch_info(self, conn: sqlite3.Connection, batch_id: str) -> BatchInfo:
        info = self._batch_info(conn, batch_id)
        if info.closed_at is not None:
            raise BatchClosedError(batch_id, info.closed_at)
        return info

    def _state_row(self, conn: sqlite3.Connection, batch_id: str, guid: Guid) -> GuidState:
        self._batch_row(conn, batch_id)
        row = conn.execute(
            f"SELECT {_STATE_COLUMNS} FROM {_STATE_FROM} WHERE batch_id = ? AND guid = ?",  # noqa: S608 - constant SQL fragments
            (batch_id, str(guid)),
        ).fetchone()
        if row is None:
            raise UnknownGuidError(batch_id, guid)
        return _to_state(row)

    def _open_attempt(
        self, conn: sqlite3.Connection, batch_id: str, guid: Guid
    ) -> tuple[int, int, int] | None:
        row = conn.execute(
            "SELECT attempt, rig, slot FROM attempts "
            "WHERE batch_id = ? AND guid = ? AND finished_at IS NULL "
            "ORDER BY attempt DESC LIMIT 1",
            (batch_id, str(guid)),
        ).fetchone()
        return None if row is None else (int(row[0]), int(row[1]), int(row[2]))

    def _summary(
        self, conn: sqlite3.Connection, batch_id: str, now: datetime, *, with_guids: bool
    ) -> Outgoing:
        info = self._batch_info(conn, batch_id)
        guids: dict[Outcome, list[Guid]] | None = None
        if with_guids:
            guids = {o: [] for o in Outcome}
            for guid, outcome in conn.execute(
                "SELECT guid, outcome FROM guid_states "
                "WHERE batch_id = ? AND outcome IS NOT NULL ORDER BY guid",
                (batch_id,),
            ):
                guids[Outcome(outcome)].append(Guid.parse(guid))
        return summary_message(info, guids, now=now)

    # --- start-up -----------------------------------------------------------------------------

    async def schema_version(self) -> int:
        return await self._run(lambda: self._version(self._db))

    async def recover_interrupted(self) -> list[InterruptedGuid]:
        """Mark every GUID left in progress by a previous run interrupted; returns them."""
        found = await self._run(self._recover_sync)
        for item in found:
            _LOGGER.warning(
                "batch %s GUID %s: flash interrupted by a restart; it resumes when the hub "
                "is seen again",
                item.batch_id,
                item.guid,
            )
        return found

    def _recover_sync(self) -> list[InterruptedGuid]:
        now = format_utc(self._clock())
        with self._write() as conn:
            rows = conn.execute(
                "UPDATE guid_states SET status = 'interrupted', updated_at = ? "
                "WHERE status = 'in_progress' RETURNING batch_id, guid, rig, slot",
                (now,),
            ).fetchall()
            found = []
            for batch_id, guid_text, rig, slot in sorted(rows):
                guid = Guid.parse(guid_text)
                conn.execute(
                    "UPDATE attempts SET finished_at = ?, error_code = ?, error_detail = ? "
                    "WHERE batch_id = ? AND guid = ? AND finished_at IS NULL",
                    (
                        now,
                        INTERRUPTED_CODE,
                        "jigd stopped during this attempt",
                        batch_id,
                        guid_text,
                    ),
                )
                self._journal(
                    conn, now, "interrupted", batch_id=batch_id, guid=guid, rig=rig, slot=slot
                )
                found.append(InterruptedGuid(batch_id, guid))
        return found

    # --- batches ------------------------------------------------------------------------------

    async def import_batch(
        self, rows: Sequence[ManifestRow], booking: str, party: str, source: str
    ) -> str:
        """Store a validated manifest as a new open batch, atomically; returns its id.

        Refused with ManifestError (nothing stored) if booking or party is empty, the rows are
        empty or repeat a GUID, or (GuidInOpenBatchError) a GUID is in another open batch.
        """
        batch_id = await self._run(
            self._import_sync, list(rows), booking.strip(), party.strip(), source
        )
        self._outbox_changed.set()
        _LOGGER.info(
            "batch %s imported from %s: %d GUID(s), booking %s, party %s",
            batch_id,
            source,
            len(rows),
            booking,
            party,
        )
        return batch_id

    def _import_sync(self, rows: list[ManifestRow], booking: str, party: str, source: str) -> str:
        _check_import(rows, booking, party, source)
        now_dt = self._clock()
        now = format_utc(now_dt)
        by_guid = {str(row.guid): row for row in rows}
        with self._write() as conn:
            conflicts: dict[Guid, tuple[str, int, str]] = {}
            keys = list(by_guid)
            for chunk in _chunks(keys):
                query = _OPEN_CONFLICTS_SQL.format(_placeholders(len(chunk)))
                for guid, other, line, other_source in conn.execute(query, chunk):
                    conflicts[Guid.parse(guid)] = (other, line, other_source)
            if conflicts:
                raise _conflict_error(source, by_guid, conflicts)
            seq = int(conn.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM batches").fetchone()[0])
            batch_id = _batch_id(seq)
            conn.execute(
                "INSERT INTO batches (id, seq, booking, party, source, status, created_at) "
                "VALUES (?, ?, ?, ?, ?, 'open', ?)",
                (batch_id, seq, booking, party, source, now),
            )
            conn.executemany(
                "INSERT INTO expected_guids "
                "(batch_id, guid, line, declared_model, declared_firmware) VALUES (?, ?, ?, ?, ?)",
                [
                    (batch_id, key, row.line, _opt_str(row.model), _opt_str(row.firmware_version))
                    for key, row in by_guid.items()
                ],
            )
            conn.executemany(
                "INSERT INTO guid_states (batch_id, guid, updated_at) VALUES (?, ?, ?)",
                [(batch_id, key, now) for key in by_guid],
            )
            self._journal(
                conn,
                now,
                "batch_imported",
                batch_id=batch_id,
                source=source,
                booking=booking,
                party=party,
                guids=len(by_guid),
            )
            self._enqueue(conn, self._summary(conn, batch_id, now_dt, with_guids=False), now)
        return batch_id

    async def list_batches(self, status: BatchStatus | None = None) -> list[BatchInfo]:
        """Every batch (or those with `status`), oldest first, with counts."""
        return await self._run(self._list_batches_sync, status)

    def _list_batches_sync(self, status: BatchStatus | None) -> list[BatchInfo]:
        with self._read() as conn:
            ids = [
                row[0]
                for row in conn.execute(
                    "SELECT id FROM batches WHERE ? IS NULL OR status = ? ORDER BY seq",
                    (_opt_str(status), _opt_str(status)),
                )
            ]
            return [self._batch_info(conn, batch_id) for batch_id in ids]

    async def get_batch(self, batch_id: str) -> BatchInfo:
        """The batch with counts per outcome and pending; UnknownBatchError if there is none."""
        return await self._run(self._get_batch_sync, batch_id)

    def _get_batch_sync(self, batch_id: str) -> BatchInfo:
        with self._read() as conn:
            return self._batch_info(conn, batch_id)

    async def close_batch(self, batch_id: str) -> BatchInfo:
        """Close the batch: never-seen GUIDs become not_received, the final summary is queued.

        A GUID interrupted by a restart and not seen again becomes `failed` (code
        `interrupted`, at the stage it reached). Refused while a hub of the batch is being
        flashed (BatchBusyError), for an unknown (UnknownBatchError) or closed batch
        (BatchClosedError).
        """
        info = await self._run(self._close_batch_sync, batch_id)
        self._outbox_changed.set()
        _LOGGER.info(
            "batch %s closed: %s",
            batch_id,
            ", ".join(f"{o} {n}" for o, n in info.counts.items()),
        )
        return info

    def _close_batch_sync(self, batch_id: str) -> BatchInfo:
        now_dt = self._clock()
        now = format_utc(now_dt)
        with self._write() as conn:
            self._open_batch_info(conn, batch_id)
            busy = conn.execute(
                "SELECT s.guid, s.rig, s.slot FROM guid_states s JOIN attempts a "
                "USING (batch_id, guid) WHERE s.batch_id = ? AND s.status = 'in_progress' "
                "AND a.finished_at IS NULL ORDER BY s.guid",
                (batch_id,),
            ).fetchall()
            if busy:
                raise BatchBusyError(batch_id, [(Guid.parse(g), r, s) for g, r, s in busy])
            self._fail_unfinished(conn, batch_id, now_dt)
            missing = conn.execute(
                "UPDATE guid_states SET status = 'final', outcome = 'not_received', "
                "updated_at = ? WHERE batch_id = ? AND status = 'pending' RETURNING guid",
                (now, batch_id),
            ).fetchall()
            conn.executemany(
                "INSERT INTO events (ts, kind, batch_id, guid, data) "
                "VALUES (?, 'not_received', ?, ?, '{}')",
                [(now, batch_id, guid) for (guid,) in missing],
            )
            conn.execute(
                "UPDATE batches SET status = 'closed', closed_at = ? WHERE id = ?",
                (now, batch_id),
            )
            summary = self._summary(conn, batch_id, now_dt, with_guids=True)
            self._enqueue(conn, summary, now)
            info = self._batch_info(conn, batch_id)
            self._journal(
                conn,
                now,
                "batch_closed",
                batch_id=batch_id,
                counts={str(o): n for o, n in info.counts.items()},
            )
        return info

    def _fail_unfinished(self, conn: sqlite3.Connection, batch_id: str, now: datetime) -> None:
        """Seen hubs without an outcome at close (interrupted, or between attempts) fail."""
        rows = conn.execute(
            f"SELECT {_STATE_COLUMNS} FROM {_STATE_FROM} "  # noqa: S608 - constant SQL fragments
            "WHERE batch_id = ? AND status IN ('interrupted', 'in_progress') ORDER BY guid",
            (batch_id,),
        ).fetchall()
        for row in rows:
            state = _to_state(row)
            stage_row = conn.execute(
                "SELECT stage_reached FROM attempts WHERE batch_id = ? AND guid = ? "
                "AND stage_reached IS NOT NULL ORDER BY attempt DESC LIMIT 1",
                (batch_id, str(state.guid)),
            ).fetchone()
            stage = Stage(stage_row[0]) if stage_row else Stage.IDENTIFY
            if state.rig is None or state.slot is None or state.started is None:
                # begin_attempt sets all three before a GUID can be in these states.
                raise StoreError(
                    f"{self.path}: GUID {state.guid} of batch {batch_id} is {state.status} "
                    "without rig, slot or start time; the database is inconsistent"
                )
            result = GuidResult(
                batch_id=batch_id,
                guid=state.guid,
                outcome=Outcome.FAILED,
                rig=state.rig,
                slot=state.slot,
                attempts=max(state.attempts, 1),
                started=state.started,
                finished=now,
                model=state.model,
                from_version=state.from_version,
                failure_stage=stage,
                failure_code=INTERRUPTED_CODE,
                failure_detail=(
                    "the flash was cut short and the hub was not seen again before the batch "
                    "closed; flash it again in a new batch"
                ),
                last_link_errors=state.last_link_errors,
            )
            self._write_result(conn, result, format_utc(now), summary=False)

    async def find_open_batch(self, guid: Guid) -> BatchRef | None:
        """The open batch listing this GUID, or None (the hub is then rejected)."""
        return await self._run(self._find_open_batch_sync, guid)

    def _find_open_batch_sync(self, guid: Guid) -> BatchRef | None:
        with self._read() as conn:
            rows = conn.execute(
                "SELECT b.id, b.booking, b.party, e.line, e.declared_model, e.declared_firmware, "
                "s.status, s.outcome FROM expected_guids e JOIN batches b ON b.id = e.batch_id "
                "JOIN guid_states s USING (batch_id, guid) "
                "WHERE e.guid = ? AND b.status = 'open' ORDER BY b.seq",
                (str(guid),),
            ).fetchall()
        if not rows:
            return None
        if len(rows) > 1:
            _LOGGER.warning(
                "GUID %s is in %d open batches (%s); using the oldest",
                guid,
                len(rows),
                ", ".join(r[0] for r in rows),
            )
        batch_id, booking, party, line, model, firmware, status, outcome = rows[0]
        return BatchRef(
            batch_id=batch_id,
            booking=booking,
            party=party,
            guid=guid,
            line=line,
            declared_model=None if model is None else DeviceModel.parse(model),
            declared_firmware_version=None if firmware is None else FirmwareVersion.parse(firmware),
            status=GuidStatus(status),
            outcome=None if outcome is None else Outcome(outcome),
        )

    async def interrupted_in_slot(self, rig: int, slot: int) -> GuidState | None:
        """The GUID of an open batch whose last attempt, in this rig and slot, was interrupted:
        the hub jigd was flashing there when it stopped or lost the rig (latest first)."""
        return await self._run(self._interrupted_in_slot_sync, rig, slot)

    def _interrupted_in_slot_sync(self, rig: int, slot: int) -> GuidState | None:
        with self._read() as conn:
            row = conn.execute(
                "SELECT s.batch_id, s.guid FROM guid_states s JOIN batches b ON b.id = s.batch_id "
                "WHERE b.status = 'open' AND s.status = 'interrupted' AND s.rig = ? AND s.slot = ? "
                "ORDER BY s.updated_at DESC LIMIT 1",
                (rig, slot),
            ).fetchone()
            if row is None:
                return None
            return self._state_row(conn, row[0], Guid.parse(row[1]))

    async def guid_state(self, batch_id: str, guid: Guid) -> GuidState:
        """Everything recorded about the GUID in the batch (UnknownGuidError if not listed)."""
        return await self._run(self._guid_state_sync, batch_id, guid)

    def _guid_state_sync(self, batch_id: str, guid: Guid) -> GuidState:
        with self._read() as conn:
            return self._state_row(conn, batch_id, guid)

    async def batch_results(self, batch_id: str) -> list[GuidState]:
        """Every GUID of the batch with its state, sorted by GUID."""
        return await self._run(self._batch_results_sync, batch_id)

    def _batch_results_sync(self, batch_id: str) -> list[GuidState]:
        with self._read() as conn:
            self._batch_row(conn, batch_id)
            rows = conn.execute(
                f"SELECT {_STATE_COLUMNS} FROM {_STATE_FROM} WHERE batch_id = ? ORDER BY guid",  # noqa: S608 - constant SQL fragments
                (batch_id,),
            ).fetchall()
        return [_to_state(row) for row in rows]

    async def attempts(self, batch_id: str, guid: Guid) -> list[AttemptRecord]:
        """Every attempt on the GUID in the batch, first first."""
        return await self._run(self._attempts_sync, batch_id, guid)

    def _attempts_sync(self, batch_id: str, guid: Guid) -> list[AttemptRecord]:
        with self._read() as conn:
            self._state_row(conn, batch_id, guid)
            rows = conn.execute(
                "SELECT attempt, rig, slot, started_at, finished_at, stage_reached, error_code, "
                "error_detail FROM attempts WHERE batch_id = ? AND guid = ? ORDER BY attempt",
                (batch_id, str(guid)),
            ).fetchall()
        return [
            AttemptRecord(
                attempt=attempt,
                rig=rig,
                slot=slot,
                started=parse_utc(started),
                finished=_opt_time(finished),
                stage_reached=None if stage is None else Stage(stage),
                error_code=code,
                error_detail=detail,
            )
            for attempt, rig, slot, started, finished, stage, code, detail in rows
        ]

    # --- attempts and results -----------------------------------------------------------------

    async def begin_attempt(
        self,
        batch_id: str,
        guid: Guid,
        rig: int,
        slot: int,
        *,
        model: DeviceModel | None = None,
        from_version: FirmwareVersion | None = None,
    ) -> int:
        """Start an attempt on the GUID in rig/slot; returns its number (1, 2, ...).

        `model` and `from_version` are what the hub identified as; the first ones recorded for
        the GUID are kept, so after an interruption the batch still knows the firmware the hub
        arrived with.
        """
        _check_slot(rig, slot)
        attempt = await self._run(
            self._begin_attempt_sync, batch_id, guid, rig, slot, model, from_version
        )
        _LOGGER.info(
            "rig %d slot %d GUID %s: attempt %d (batch %s)", rig, slot, guid, attempt, batch_id
        )
        return attempt

    def _begin_attempt_sync(  # noqa: PLR0917 - called through _run(*args)
        self,
        batch_id: str,
        guid: Guid,
        rig: int,
        slot: int,
        model: DeviceModel | None,
        from_version: FirmwareVersion | None,
    ) -> int:
        now = format_utc(self._clock())
        with self._write() as conn:
            self._open_batch_info(conn, batch_id)
            state = self._state_row(conn, batch_id, guid)
            if state.outcome is not None:
                raise OutcomeAlreadyRecordedError(batch_id, guid, state.outcome)
            resumed = state.status is GuidStatus.INTERRUPTED
            running = self._open_attempt(conn, batch_id, guid)
            if running is not None:
                if (running[1], running[2]) != (rig, slot):
                    raise GuidBusyError(batch_id, guid, running[1], running[2])
                # The same slot begins again, so its previous attempt is over: it was cut off
                # before it could be closed (the rig lost while a failed attempt was closed).
                self._close_cut_off_attempt(conn, now, batch_id, guid, running)
                resumed = True
            attempt = state.attempts + 1
            conn.execute(
                "INSERT INTO attempts (batch_id, guid, attempt, rig, slot, started_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (batch_id, str(guid), attempt, rig, slot, now),
            )
            conn.execute(
                "UPDATE guid_states SET status = 'in_progress', attempts = ?, rig = ?, slot = ?, "
                "started_at = COALESCE(started_at, ?), updated_at = ?, "
                "model = COALESCE(model, ?), from_version = COALESCE(from_version, ?) "
                "WHERE batch_id = ? AND guid = ?",
                (
                    attempt,
                    rig,
                    slot,
                    now,
                    now,
                    None if model is None else str(model),
                    None if from_version is None else str(from_version),
                    batch_id,
                    str(guid),
                ),
            )
            self._journal(
                conn,
                now,
                "attempt_started",
                batch_id=batch_id,
                guid=guid,
                rig=rig,
                slot=slot,
                attempt=attempt,
                resumed=resumed,
            )
        return attempt

    def _close_cut_off_attempt(
        self,
        conn: sqlite3.Connection,
        now: str,
        batch_id: str,
        guid: Guid,
        running: tuple[int, int, int],
    ) -> None:
        attempt, rig, slot = running
        detail = "cut off before it was closed; the slot began a new attempt"
        conn.execute(
            "UPDATE attempts SET finished_at = ?, error_code = ?, error_detail = ? "
            "WHERE batch_id = ? AND guid = ? AND attempt = ?",
            (now, INTERRUPTED_CODE, detail, batch_id, str(guid), attempt),
        )
        self._journal(
            conn,
            now,
            "interrupted",
            batch_id=batch_id,
            guid=guid,
            rig=rig,
            slot=slot,
            attempt=attempt,
            detail=detail,
        )
        _LOGGER.warning("batch %s GUID %s: attempt %d %s", batch_id, guid, attempt, detail)

    async def record_stage(
        self, batch_id: str, guid: Guid, attempt: int, stage: Stage, detail: str | None = None
    ) -> None:
        """Journal that the attempt reached `stage` (and remember it as the stage reached)."""
        await self._run(self._record_stage_sync, batch_id, guid, attempt, stage, detail)

    def _record_stage_sync(
        self, batch_id: str, guid: Guid, attempt: int, stage: Stage, detail: str | None
    ) -> None:
        now = format_utc(self._clock())
        with self._write() as conn:
            row = conn.execute(
                "UPDATE attempts SET stage_reached = ? "
                "WHERE batch_id = ? AND guid = ? AND attempt = ? RETURNING rig, slot",
                (str(stage), batch_id, str(guid), attempt),
            ).fetchone()
            if row is None:
                raise UnknownAttemptError(batch_id, guid, attempt)
            self._journal(
                conn,
                now,
                "stage",
                batch_id=batch_id,
                guid=guid,
                rig=row[0],
                slot=row[1],
                attempt=attempt,
                stage=str(stage),
                detail=detail,
            )

    async def end_attempt(
        self,
        batch_id: str,
        guid: Guid,
        attempt: int,
        *,
        stage: Stage,
        error_code: str,
        error_detail: str | None = None,
    ) -> None:
        """Close an attempt that failed at `stage` and will be retried (no outcome yet)."""
        await self._run(
            self._end_attempt_sync,
            batch_id,
            guid,
            attempt,
            stage=stage,
            error_code=error_code,
            error_detail=error_detail,
        )

    def _end_attempt_sync(
        self,
        batch_id: str,
        guid: Guid,
        attempt: int,
        *,
        stage: Stage,
        error_code: str,
        error_detail: str | None,
    ) -> None:
        now = format_utc(self._clock())
        with self._write() as conn:
            row = conn.execute(
                "UPDATE attempts SET finished_at = ?, stage_reached = ?, error_code = ?, "
                "error_detail = ? WHERE batch_id = ? AND guid = ? AND attempt = ? "
                "AND finished_at IS NULL RETURNING rig, slot",
                (now, str(stage), error_code, error_detail, batch_id, str(guid), attempt),
            ).fetchone()
            if row is None:
                raise UnknownAttemptError(batch_id, guid, attempt)
            self._journal(
                conn,
                now,
                "attempt_failed",
                batch_id=batch_id,
                guid=guid,
                rig=row[0],
                slot=row[1],
                attempt=attempt,
                stage=str(stage),
                code=error_code,
                detail=error_detail,
            )

    async def interrupt_attempt(
        self, batch_id: str, guid: Guid, attempt: int, *, stage: Stage, reason: str
    ) -> None:
        """Close a running attempt cut short by something other than the hub (its rig went away,
        it was pulled, jigd is stopping): the GUID becomes `interrupted` and resumes when seen."""
        await self._run(self._interrupt_attempt_sync, batch_id, guid, attempt, stage, reason)
        _LOGGER.warning(
            "batch %s GUID %s: attempt %d interrupted at stage %s: %s",
            batch_id,
            guid,
            attempt,
            stage,
            reason,
        )

    def _interrupt_attempt_sync(
        self, batch_id: str, guid: Guid, attempt: int, stage: Stage, reason: str
    ) -> None:
        now = format_utc(self._clock())
        with self._write() as conn:
            row = conn.execute(
                "UPDATE attempts SET finished_at = ?, stage_reached = ?, error_code = ?, "
                "error_detail = ? WHERE batch_id = ? AND guid = ? AND attempt = ? "
                "AND finished_at IS NULL RETURNING rig, slot",
                (now, str(stage), INTERRUPTED_CODE, reason, batch_id, str(guid), attempt),
            ).fetchone()
            if row is None:
                raise UnknownAttemptError(batch_id, guid, attempt)
            conn.execute(
                "UPDATE guid_states SET status = 'interrupted', updated_at = ? "
                "WHERE batch_id = ? AND guid = ? AND status = 'in_progress'",
                (now, batch_id, str(guid)),
            )
            self._journal(
                conn,
                now,
                "interrupted",
                batch_id=batch_id,
                guid=guid,
                rig=row[0],
                slot=row[1],
                attempt=attempt,
                stage=str(stage),
                detail=reason,
            )

    async def record_result(self, result: GuidResult) -> None:
        """Record the GUID's one final outcome; durable (on disk) when this returns.

        In one transaction: the per-GUID state, the attempt row closed, a journal event, the
        `result` message and an updated batch `summary` in the outbox. A second result for the
        same GUID raises OutcomeAlreadyRecordedError and changes nothing.
        """
        await self._run(self._record_result_sync, result)
        self._outbox_changed.set()
        _LOGGER.info(
            "rig %d slot %d GUID %s: %s (batch %s)",
            result.rig,
            result.slot,
            result.guid,
            result.outcome,
            result.batch_id,
        )

    def _record_result_sync(self, result: GuidResult) -> None:
        now = format_utc(self._clock())
        with self._write() as conn:
            state = self._state_row(conn, result.batch_id, result.guid)
            if state.outcome is not None:
                raise OutcomeAlreadyRecordedError(result.batch_id, result.guid, state.outcome)
            self._open_batch_info(conn, result.batch_id)
            self._write_result(conn, result, now, summary=True)

    def _write_result(
        self, conn: sqlite3.Connection, result: GuidResult, now: str, *, summary: bool
    ) -> None:
        key = (result.batch_id, str(result.guid))
        conn.execute(
            "UPDATE guid_states SET status = 'final', outcome = ?, model = ?, from_version = ?, "
            "to_version = ?, image_sha256 = ?, rig = ?, slot = ?, attempts = ?, started_at = ?, "
            "finished_at = ?, failure_stage = ?, failure_code = ?, failure_detail = ?, "
            "last_link_errors = ?, updated_at = ? WHERE batch_id = ? AND guid = ?",
            (
                str(result.outcome),
                _opt_str(result.model),
                _opt_str(result.from_version),
                _opt_str(result.to_version),
                result.image_sha256,
                result.rig,
                result.slot,
                result.attempts,
                format_utc(result.started),
                format_utc(result.finished),
                _opt_str(result.failure_stage),
                result.failure_code,
                result.failure_detail,
                json.dumps(list(result.last_link_errors)),
                now,
                *key,
            ),
        )
        stage = result.failure_stage or Stage.RECORD
        conn.execute(
            "INSERT INTO attempts (batch_id, guid, attempt, rig, slot, started_at, finished_at, "
            "stage_reached, error_code, error_detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (batch_id, guid, attempt) DO UPDATE SET "
            "finished_at = COALESCE(finished_at, excluded.finished_at), "
            "stage_reached = excluded.stage_reached, error_code = excluded.error_code, "
            "error_detail = excluded.error_detail",
            (
                *key,
                result.attempts,
                result.rig,
                result.slot,
                format_utc(result.started),
                format_utc(result.finished),
                str(stage),
                result.failure_code,
                result.failure_detail,
            ),
        )
        message = result_message(result, now=parse_utc(now))
        self._journal(
            conn,
            now,
            "result",
            batch_id=result.batch_id,
            guid=result.guid,
            rig=result.rig,
            slot=result.slot,
            outcome=str(result.outcome),
            to_version=_opt_str(result.to_version),
            failure_stage=_opt_str(result.failure_stage),
            failure_code=result.failure_code,
            event_id=message.payload.event_id,
        )
        self._enqueue(conn, message, now)
        if summary:
            self._enqueue(
                conn, self._summary(conn, result.batch_id, parse_utc(now), with_guids=False), now
            )

    # --- rejected hubs and the journal --------------------------------------------------------

    async def record_rejected(self, guid: Guid, rig: int, slot: int, reason: str) -> int:
        """Record a hub no open batch lists (journal + `alerts` message); returns its row id."""
        _check_slot(rig, slot)
        if not reason.strip():
            raise InvalidRecordError(f"rig {rig} slot {slot} GUID {guid}: rejection needs a reason")
        row_id = await self._run(self._record_rejected_sync, guid, rig, slot, reason.strip())
        self._outbox_changed.set()
        _LOGGER.warning("rig %d slot %d GUID %s: rejected (%s)", rig, slot, guid, reason)
        return row_id

    def _record_rejected_sync(self, guid: Guid, rig: int, slot: int, reason: str) -> int:
        now_dt = self._clock()
        now = format_utc(now_dt)
        with self._write() as conn:
            cursor = conn.execute(
                "INSERT INTO rejected_hubs (guid, rig, slot, reason, ts) VALUES (?, ?, ?, ?, ?)",
                (str(guid), rig, slot, reason, now),
            )
            row_id = cursor.lastrowid
            if row_id is None:  # never after a successful INSERT into a rowid table
                raise StoreError(f"{self.path}: no row id for the rejected hub {guid}")
            self._journal(conn, now, "rejected", guid=guid, rig=rig, slot=slot, reason=reason)
            self._enqueue(conn, rejected_alert_message(guid, rig, slot, reason, now=now_dt), now)
        return row_id

    async def record_alert(
        self,
        kind: AlertKind,
        *,
        detail: str,
        rig: int | None = None,
        slot: int | None = None,
        guid: Guid | None = None,
        model: DeviceModel | None = None,
        reason: str | None = None,
    ) -> str:
        """Journal an alert (`rig_offline`, `no_firmware`, `unidentified_hub`) and queue its
        `alerts` message in one transaction, so it is as durable as a result; returns the
        message's event_id.

        A rejected hub is recorded with record_rejected, which also keeps it on the station's
        record of rejected hubs.
        """
        if kind is AlertKind.REJECTED_HUB:
            raise InvalidRecordError("a rejected hub is recorded with record_rejected")
        if kind is AlertKind.RIG_OFFLINE and rig is None:
            raise InvalidRecordError("a rig_offline alert needs the rig")
        if kind is AlertKind.NO_FIRMWARE and model is None:
            raise InvalidRecordError("a no_firmware alert needs the Device Model")
        if rig is not None and rig < 1:
            raise InvalidRecordError(f"rig {rig} is not a rig number (1 or more)")
        if slot is not None:
            if rig is None:
                raise InvalidRecordError(f"slot {slot} of which rig? an alert needs both")
            _check_slot(rig, slot)
        if not detail.strip():
            raise InvalidRecordError(f"{kind} alert: the detail is empty")
        event_id, text = await self._run(
            self._record_alert_sync,
            kind,
            detail.strip(),
            rig=rig,
            slot=slot,
            guid=guid,
            model=model,
            reason=reason,
        )
        self._outbox_changed.set()
        _LOGGER.warning("alert %s: %s", kind, text)
        return event_id

    def _record_alert_sync(
        self,
        kind: AlertKind,
        detail: str,
        *,
        rig: int | None,
        slot: int | None,
        guid: Guid | None,
        model: DeviceModel | None,
        reason: str | None,
    ) -> tuple[str, str]:
        """Returns the alert's event_id and message."""
        now_dt = self._clock()
        now = format_utc(now_dt)
        message = alert_message(
            kind,
            detail=detail,
            rig=rig,
            slot=slot,
            guid=guid,
            model=model,
            reason=reason,
            now=now_dt,
        )
        with self._write() as conn:
            self._journal(
                conn,
                now,
                "alert",
                guid=guid,
                rig=rig,
                slot=slot,
                alert=str(kind),
                model=_opt_str(model),
                reason=reason,
                detail=detail,
                event_id=message.payload.event_id,
            )
            self._enqueue(conn, message, now)
        payload = message.payload
        assert isinstance(payload, AlertPayload)  # alert_message builds nothing else
        return payload.event_id, payload.message

    async def list_rejected(self) -> list[RejectedHub]:
        """Every rejected hub, oldest first."""
        return await self._run(self._list_rejected_sync)

    def _list_rejected_sync(self) -> list[RejectedHub]:
        rows = self._db.execute(
            "SELECT id, guid, rig, slot, reason, ts FROM rejected_hubs ORDER BY id"
        ).fetchall()
        return [
            RejectedHub(id=i, guid=Guid.parse(g), rig=r, slot=s, reason=why, ts=parse_utc(ts))
            for i, g, r, s, why, ts in rows
        ]

    async def journal(
        self, *, batch_id: str | None = None, guid: Guid | None = None
    ) -> list[JournalEvent]:
        """Journal events in order, optionally only those of a batch and/or GUID."""
        return await self._run(self._journal_sync, batch_id, guid)

    def _journal_sync(self, batch_id: str | None, guid: Guid | None) -> list[JournalEvent]:
        rows = self._db.execute(
            "SELECT id, ts, kind, batch_id, guid, rig, slot, data FROM events "
            "WHERE (?1 IS NULL OR batch_id = ?1) AND (?2 IS NULL OR guid = ?2) ORDER BY id",
            (batch_id, _opt_str(guid)),
        ).fetchall()
        return [
            JournalEvent(
                id=i,
                ts=parse_utc(ts),
                kind=kind,
                batch_id=b,
                guid=None if g is None else Guid.parse(g),
                rig=r,
                slot=s,
                data=json.loads(data),
            )
            for i, ts, kind, b, g, r, s, data in rows
        ]

    # --- outbox -------------------------------------------------------------------------------

    async def outbox_pending(self, limit: int = 100) -> list[OutboxMessage]:
        """Up to `limit` unpublished messages in commit order."""
        if limit < 1:
            raise InvalidRecordError(f"outbox limit {limit} is less than 1")
        return await self._run(self._outbox_pending_sync, limit)

    def _outbox_pending_sync(self, limit: int) -> list[OutboxMessage]:
        rows = self._db.execute(
            "SELECT id, topic, payload, qos, retain, event_id, created_at, published_at "
            "FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT ?",
            (limit,),
        ).fetchall()
        return [
            OutboxMessage(
                id=i,
                topic=topic,
                payload=payload,
                qos=qos,
                retain=bool(retain),
                event_id=event_id,
                created_at=parse_utc(created),
                published_at=_opt_time(published),
            )
            for i, topic, payload, qos, retain, event_id, created, published in rows
        ]

    async def mark_published(self, ids: Iterable[int]) -> int:
        """Mark messages acknowledged by the broker; returns how many were pending."""
        return await self._run(self._mark_published_sync, sorted(set(ids)))

    def _mark_published_sync(self, ids: list[int]) -> int:
        now = format_utc(self._clock())
        changed = 0
        with self._write() as conn:
            for chunk in _chunks(ids):
                query = _MARK_PUBLISHED_SQL.format(_placeholders(len(chunk)))
                cursor = conn.execute(query, (now, *chunk))
                changed += cursor.rowcount
        return changed

    async def outbox_depth(self) -> int:
        """How many messages wait to be published."""
        return await self._run(self._outbox_depth_sync)

    def _outbox_depth_sync(self) -> int:
        row = self._db.execute("SELECT COUNT(*) FROM outbox WHERE published_at IS NULL").fetchone()
        return int(row[0])


def _check_slot(rig: int, slot: int) -> None:
    if rig < 1 or not 1 <= slot <= MAX_SLOT:
        raise InvalidRecordError(f"rig {rig} slot {slot} is not a rig (1+) and slot (1-{MAX_SLOT})")


def _check_import(rows: Sequence[ManifestRow], booking: str, party: str, source: str) -> None:
    """Input checks that need no database; raise ManifestError naming each problem."""
    problems = []
    if not booking.strip():
        problems.append(
            ManifestProblem(
                source, None, "booking", "empty; give the Work Order's booking reference"
            )
        )
    if not party.strip():
        problems.append(
            ManifestProblem(source, None, "party", "empty; give the SEC Party that sent the hubs")
        )
    if not rows:
        problems.append(ManifestProblem(source, None, FILE_FIELD, "no GUIDs to import"))
    first: dict[Guid, int] = {}
    for row in rows:
        if row.guid in first:
            problems.append(
                ManifestProblem(
                    source,
                    row.line,
                    "guid",
                    f"{row.guid} is listed twice, on lines {first[row.guid]} and {row.line}; "
                    "list each GUID once",
                )
            )
        else:
            first[row.guid] = row.line
    if problems:
        raise ManifestError(source, problems)


def _conflict_error(
    source: str, rows: dict[str, ManifestRow], conflicts: dict[Guid, tuple[str, int, str]]
) -> GuidInOpenBatchError:
    problems = []
    for guid, (other, other_line, other_source) in sorted(conflicts.items()):
        row = rows[str(guid)]
        problems.append(
            ManifestProblem(
                source,
                row.line,
                "guid",
                f"{guid} is already in open batch {other} (line {other_line} of {other_source}); "
                f"remove this line, or close batch {other} first",
            )
        )
    return GuidInOpenBatchError(source, problems, {g: c[0] for g, c in conflicts.items()})


def _to_state(row: Sequence[Any]) -> GuidState:
    (
        batch_id,
        guid,
        line,
        declared_model,
        declared_firmware,
        status,
        outcome,
        model,
        from_version,
        to_version,
        image_sha256,
        rig,
        slot,
        attempts,
        started,
        finished,
        failure_stage,
        failure_code,
        failure_detail,
        last_link_errors,
    ) = row
    return GuidState(
        batch_id=batch_id,
        guid=Guid.parse(guid),
        line=line,
        declared_model=None if declared_model is None else DeviceModel.parse(declared_model),
        declared_firmware_version=(
            None if declared_firmware is None else FirmwareVersion.parse(declared_firmware)
        ),
        status=GuidStatus(status),
        outcome=None if outcome is None else Outcome(outcome),
        model=None if model is None else DeviceModel.parse(model),
        from_version=None if from_version is None else FirmwareVersion.parse(from_version),
        to_version=None if to_version is None else FirmwareVersion.parse(to_version),
        image_sha256=image_sha256,
        rig=rig,
        slot=slot,
        attempts=attempts,
        started=_opt_time(started),
        finished=_opt_time(finished),
        failure_stage=None if failure_stage is None else Stage(failure_stage),
        failure_code=failure_code,
        failure_detail=failure_detail,
        last_link_errors=tuple(json.loads(last_link_errors)),
    )
