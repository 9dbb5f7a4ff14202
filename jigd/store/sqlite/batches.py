"""The SQLite store's batch operations: import, list, close; finding and reading GUID states.

Each operation is one job on the worker thread (see jigd.store.sqlite.worker); the contract
(jigd.store.contract.Store) describes it.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence
from datetime import datetime

from jigd.events import BatchStatus, format_utc, parse_utc, set_aside_alert_event
from jigd.manifest import ManifestRow
from jigd.model import Guid, Stage
from jigd.store import logs
from jigd.store import records as rec
from jigd.store.errors import BatchBusyError
from jigd.store.sqlite import rows as db
from jigd.store.sqlite.worker import SqliteWorker, notifies, on_worker
from jigd.store.values import (
    BatchInfo,
    BatchRef,
    GuidState,
    SetAsideHub,
)

__all__ = ["BatchOperations"]

_LOGGER = logging.getLogger(__package__)  # one logger for the backend: jigd.store.sqlite

# `{}` takes a list of `?` placeholders, nothing else.
_OPEN_CONFLICTS_SQL = (
    "SELECT e.guid, e.batch_id, e.line, b.source FROM expected_guids e "
    "JOIN batches b ON b.id = e.batch_id WHERE b.status = 'open' AND e.guid IN ({})"
)


class BatchOperations(SqliteWorker):
    """Batches and the GUID states they list."""

    @notifies
    @on_worker
    def import_batch(
        self, rows: Sequence[ManifestRow], booking: str, party: str, source: str
    ) -> str:
        stripped = (booking.strip(), party.strip())
        rec.check_import(rows, *stripped, source)
        now = self._now()
        by_guid = {str(row.guid): row for row in rows}
        with self._write() as conn:
            conflicts: dict[Guid, tuple[str, int, str]] = {}
            for chunk in db.chunks(list(by_guid)):
                query = _OPEN_CONFLICTS_SQL.format(db.placeholders(len(chunk)))
                for guid, other, line, other_source in conn.execute(query, chunk):
                    conflicts[Guid.parse(guid)] = (other, line, other_source)
            if conflicts:
                raise rec.conflict_error(source, by_guid, conflicts)
            seq = int(conn.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM batches").fetchone()[0])
            batch_id = rec.batch_id_of(seq)
            conn.execute(
                "INSERT INTO batches (id, seq, booking, party, source, status, created_at) "
                "VALUES (?, ?, ?, ?, ?, 'open', ?)",
                (batch_id, seq, *stripped, source, now),
            )
            conn.executemany(
                "INSERT INTO expected_guids "
                "(batch_id, guid, line, declared_model, declared_firmware) VALUES (?, ?, ?, ?, ?)",
                [
                    (
                        batch_id,
                        key,
                        row.line,
                        rec.opt_str(row.model),
                        rec.opt_str(row.firmware_version),
                    )
                    for key, row in by_guid.items()
                ],
            )
            conn.executemany(
                "INSERT INTO guid_states (batch_id, guid, updated_at) VALUES (?, ?, ?)",
                [(batch_id, key, now) for key in by_guid],
            )
            db.journal(
                conn,
                now,
                "batch_imported",
                batch_id=batch_id,
                source=source,
                booking=stripped[0],
                party=stripped[1],
                guids=len(by_guid),
            )
            db.enqueue_summary(conn, batch_id, now, with_guids=False)
            aside = db.set_aside(conn, batch_id)
            for hub in aside:
                db.journal(
                    conn,
                    now,
                    "set_aside",
                    batch_id=batch_id,
                    guid=hub.guid,
                    rig=hub.rig,
                    slot=hub.slot,
                    seen_at=format_utc(hub.seen_at),
                )
                alert = set_aside_alert_event(
                    batch_id, hub.guid, hub.rig, hub.slot, hub.seen_at, now=parse_utc(now)
                )
                db.enqueue(conn, alert, now)
        logs.imported(_LOGGER, batch_id, (source, booking, party), len(rows), aside)
        return batch_id

    @on_worker
    def list_batches(self, status: BatchStatus | None = None) -> list[BatchInfo]:
        with self._read() as conn:
            ids = [
                row[0]
                for row in conn.execute(
                    "SELECT id FROM batches WHERE ? IS NULL OR status = ? ORDER BY seq",
                    (rec.opt_str(status), rec.opt_str(status)),
                )
            ]
            return [db.batch_info(conn, batch_id) for batch_id in ids]

    @on_worker
    def get_batch(self, batch_id: str) -> BatchInfo:
        with self._read() as conn:
            return db.batch_info(conn, batch_id)

    @on_worker
    def set_aside(self, batch_id: str) -> list[SetAsideHub]:
        with self._read() as conn:
            return db.set_aside(conn, batch_id)

    @notifies
    @on_worker
    def close_batch(self, batch_id: str) -> BatchInfo:
        now_dt = self._clock()
        now = format_utc(now_dt)
        with self._write() as conn:
            db.open_batch_info(conn, batch_id)
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
                "INSERT INTO events (ts, kind, batch_id, guid, data, station) "
                "VALUES (?, 'not_received', ?, ?, '{}', NULLIF(jigd_station(), ''))",
                [(now, batch_id, guid) for (guid,) in missing],
            )
            conn.execute(
                "UPDATE batches SET status = 'closed', closed_at = ? WHERE id = ?",
                (now, batch_id),
            )
            db.enqueue_summary(conn, batch_id, now, with_guids=True)
            info = db.batch_info(conn, batch_id)
            db.journal(
                conn,
                now,
                "batch_closed",
                batch_id=batch_id,
                counts={str(o): n for o, n in info.counts.items()},
            )
        logs.closed(_LOGGER, info)
        return info

    def _fail_unfinished(self, conn: sqlite3.Connection, batch_id: str, now: datetime) -> None:
        """Seen hubs without an outcome at close (interrupted, or between attempts) fail."""
        rows = conn.execute(
            f"SELECT {rec.STATE_COLUMNS} FROM {rec.STATE_FROM} "  # noqa: S608 - constant SQL fragments
            "WHERE batch_id = ? AND status IN ('interrupted', 'in_progress') ORDER BY guid",
            (batch_id,),
        ).fetchall()
        for row in rows:
            state = rec.to_state(row)
            stage_row = conn.execute(
                "SELECT stage_reached FROM attempts WHERE batch_id = ? AND guid = ? "
                "AND stage_reached IS NOT NULL ORDER BY attempt DESC LIMIT 1",
                (batch_id, str(state.guid)),
            ).fetchone()
            stage = Stage(stage_row[0]) if stage_row else Stage.IDENTIFY
            result = rec.failed_at_close(state, stage, now)
            db.write_result(conn, result, format_utc(now), summary=False)

    @on_worker
    def find_open_batch(self, guid: Guid) -> BatchRef | None:
        with self._read() as conn:
            rows = conn.execute(
                "SELECT b.id, b.booking, b.party, e.line, e.declared_model, e.declared_firmware, "
                "s.status, s.outcome, s.station "
                "FROM expected_guids e JOIN batches b ON b.id = e.batch_id "
                "JOIN guid_states s USING (batch_id, guid) "
                "WHERE e.guid = ? AND b.status = 'open' ORDER BY b.seq",
                (str(guid),),
            ).fetchall()
        return rec.oldest_open_batch(guid, rows, _LOGGER)

    @on_worker
    def interrupted_in_slot(self, rig: int, slot: int) -> GuidState | None:
        with self._read() as conn:
            row = conn.execute(
                "SELECT s.batch_id, s.guid FROM guid_states s JOIN batches b ON b.id = s.batch_id "
                "WHERE b.status = 'open' AND s.status = 'interrupted' AND s.rig = ? AND s.slot = ? "
                "AND s.station = jigd_station() "
                "ORDER BY s.updated_at DESC LIMIT 1",
                (rig, slot),
            ).fetchone()
            if row is None:
                return None
            return db.state_row(conn, row[0], Guid.parse(row[1]))

    @on_worker
    def guid_state(self, batch_id: str, guid: Guid) -> GuidState:
        with self._read() as conn:
            return db.state_row(conn, batch_id, guid)

    @on_worker
    def batch_results(self, batch_id: str) -> list[GuidState]:
        with self._read() as conn:
            db.batch_row(conn, batch_id)
            rows = conn.execute(
                f"SELECT {rec.STATE_COLUMNS} FROM {rec.STATE_FROM} "  # noqa: S608 - constant SQL fragments
                "WHERE batch_id = ? ORDER BY guid",
                (batch_id,),
            ).fetchall()
        return [rec.to_state(row) for row in rows]
