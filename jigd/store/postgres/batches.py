"""The PostgreSQL store's batch operations: import, list, close; finding and reading GUID states.

Each operation is one transaction (jigd.store.postgres.pool); the contract
(jigd.store.contract.Store) describes it. An import locks the batches table against other
imports (SHARE ROW EXCLUSIVE), so two stations never give out the same batch id nor put a
GUID in two open batches; a close locks its batch row, so no attempt begins in it meanwhile.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime

from jigd.events import BatchStatus, format_utc, parse_utc, set_aside_alert_event
from jigd.manifest import ManifestRow
from jigd.model import Guid, Stage
from jigd.store import logs
from jigd.store import records as rec
from jigd.store.errors import BatchBusyError
from jigd.store.postgres import rows as db
from jigd.store.postgres.pool import (
    Conn,
    PostgresPool,
    completes,
    fetch_all,
    fetch_one,
    notifies,
)
from jigd.store.values import BatchInfo, BatchRef, GuidState, SetAsideHub

__all__ = ["BatchOperations"]

_LOGGER = logging.getLogger(__package__)  # one logger for the backend: jigd.store.postgres

_OPEN_CONFLICTS_SQL = (
    "SELECT e.guid, e.batch_id, e.line, b.source FROM expected_guids e "
    "JOIN batches b ON b.id = e.batch_id WHERE b.status = 'open' AND e.guid = ANY(%s)"
)


class BatchOperations(PostgresPool):
    """Batches and the GUID states they list."""

    @notifies
    @completes
    async def import_batch(
        self, rows: Sequence[ManifestRow], booking: str, party: str, source: str
    ) -> str:
        stripped = (booking.strip(), party.strip())
        rec.check_import(rows, *stripped, source)
        now = self._now()
        by_guid = {str(row.guid): row for row in rows}
        async with self._write(queues=True) as conn:
            await conn.execute("LOCK TABLE batches IN SHARE ROW EXCLUSIVE MODE")
            conflicts: dict[Guid, tuple[str, int, str]] = {}
            for guid, other, line, other_source in await fetch_all(
                conn, _OPEN_CONFLICTS_SQL, (list(by_guid),)
            ):
                conflicts[Guid.parse(guid)] = (other, line, other_source)
            if conflicts:
                raise rec.conflict_error(source, by_guid, conflicts)
            batch_id = await _insert_batch(conn, (*stripped, source), by_guid, now)
            aside = await _queue_set_aside(conn, batch_id, now)
        logs.imported(_LOGGER, batch_id, (source, booking, party), len(rows), aside)
        return batch_id

    async def list_batches(self, status: BatchStatus | None = None) -> list[BatchInfo]:
        async with self._read() as conn:
            rows = await fetch_all(
                conn,
                "SELECT id FROM batches WHERE %s::text IS NULL OR status = %s ORDER BY seq",
                (rec.opt_str(status), rec.opt_str(status)),
            )
            return [await db.batch_info(conn, batch_id) for (batch_id,) in rows]

    async def get_batch(self, batch_id: str) -> BatchInfo:
        async with self._read() as conn:
            return await db.batch_info(conn, batch_id)

    async def set_aside(self, batch_id: str) -> list[SetAsideHub]:
        async with self._read() as conn:
            return await db.set_aside(conn, batch_id)

    @notifies
    @completes
    async def close_batch(self, batch_id: str) -> BatchInfo:
        now_dt = self._clock()
        now = format_utc(now_dt)
        async with self._write(queues=True) as conn:
            await db.open_batch_info(conn, batch_id, db.FOR_UPDATE)
            busy = await fetch_all(
                conn,
                "SELECT s.guid, s.rig, s.slot FROM guid_states s JOIN attempts a "
                "USING (batch_id, guid) WHERE s.batch_id = %s AND s.status = 'in_progress' "
                "AND a.finished_at IS NULL ORDER BY s.guid",
                (batch_id,),
            )
            if busy:
                raise BatchBusyError(batch_id, [(Guid.parse(g), r, s) for g, r, s in busy])
            await _fail_unfinished(conn, batch_id, now_dt)
            missing = await fetch_all(
                conn,
                "UPDATE guid_states SET status = 'final', outcome = 'not_received', "
                "updated_at = %s WHERE batch_id = %s AND status = 'pending' RETURNING guid",
                (now, batch_id),
            )
            async with conn.cursor() as cursor:
                await cursor.executemany(
                    "INSERT INTO events (ts, kind, batch_id, guid, data, station) "
                    "VALUES (%s, 'not_received', %s, %s, '{}', "
                    "NULLIF(current_setting('jigd.station'), ''))",
                    [(now, batch_id, guid) for (guid,) in sorted(missing)],
                )
            await conn.execute(
                "UPDATE batches SET status = 'closed', closed_at = %s WHERE id = %s",
                (now, batch_id),
            )
            await db.enqueue_summary(conn, batch_id, now, with_guids=True)
            info = await db.batch_info(conn, batch_id)
            await db.journal(
                conn,
                now,
                "batch_closed",
                batch_id=batch_id,
                counts={str(o): n for o, n in info.counts.items()},
            )
        logs.closed(_LOGGER, info)
        return info

    async def find_open_batch(self, guid: Guid) -> BatchRef | None:
        async with self._read() as conn:
            rows = await fetch_all(
                conn,
                "SELECT b.id, b.booking, b.party, e.line, e.declared_model, e.declared_firmware, "
                "s.status, s.outcome, s.station "
                "FROM expected_guids e JOIN batches b ON b.id = e.batch_id "
                "JOIN guid_states s USING (batch_id, guid) "
                "WHERE e.guid = %s AND b.status = 'open' ORDER BY b.seq",
                (str(guid),),
            )
        return rec.oldest_open_batch(guid, rows, _LOGGER)

    async def interrupted_in_slot(self, rig: int, slot: int) -> GuidState | None:
        async with self._read() as conn:
            row = await fetch_one(
                conn,
                "SELECT s.batch_id, s.guid FROM guid_states s JOIN batches b ON b.id = s.batch_id "
                "WHERE b.status = 'open' AND s.status = 'interrupted' AND s.rig = %s "
                "AND s.slot = %s AND s.station = current_setting('jigd.station') "
                "ORDER BY s.updated_at DESC LIMIT 1",
                (rig, slot),
            )
            if row is None:
                return None
            return await db.state_row(conn, row[0], Guid.parse(row[1]))

    async def guid_state(self, batch_id: str, guid: Guid) -> GuidState:
        async with self._read() as conn:
            return await db.state_row(conn, batch_id, guid)

    async def batch_results(self, batch_id: str) -> list[GuidState]:
        async with self._read() as conn:
            await db.batch_row(conn, batch_id)
            rows = await fetch_all(
                conn,
                f"SELECT {rec.STATE_COLUMNS} FROM {rec.STATE_FROM} "  # noqa: S608 - constant SQL fragments
                "WHERE batch_id = %s ORDER BY guid",
                (batch_id,),
            )
        return [rec.to_state(row) for row in rows]


async def _insert_batch(
    conn: Conn, names: tuple[str, str, str], by_guid: dict[str, ManifestRow], now: str
) -> str:
    """Insert the batch (booking, party, source) and its GUIDs; journal it and queue its first
    summary; its id. The caller holds the lock on the batches table."""
    booking, party, source = names
    row = await fetch_one(conn, "SELECT COALESCE(MAX(seq), 0) + 1 FROM batches")
    seq = 1 if row is None else int(row[0])
    batch_id = rec.batch_id_of(seq)
    await conn.execute(
        "INSERT INTO batches (id, seq, booking, party, source, status, created_at) "
        "VALUES (%s, %s, %s, %s, %s, 'open', %s)",
        (batch_id, seq, booking, party, source, now),
    )
    async with conn.cursor() as cursor:
        await cursor.executemany(
            "INSERT INTO expected_guids "
            "(batch_id, guid, line, declared_model, declared_firmware) "
            "VALUES (%s, %s, %s, %s, %s)",
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
        await cursor.executemany(
            "INSERT INTO guid_states (batch_id, guid, updated_at) VALUES (%s, %s, %s)",
            [(batch_id, key, now) for key in by_guid],
        )
    await db.journal(
        conn,
        now,
        "batch_imported",
        batch_id=batch_id,
        source=source,
        booking=booking,
        party=party,
        guids=len(by_guid),
    )
    await db.enqueue_summary(conn, batch_id, now, with_guids=False)
    return batch_id


async def _queue_set_aside(conn: Conn, batch_id: str, now: str) -> list[SetAsideHub]:
    """Journal and alert each GUID of the new batch rejected before the import."""
    aside = await db.set_aside(conn, batch_id)
    for hub in aside:
        await db.journal(
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
        await db.enqueue(conn, alert, now)
    return aside


async def _fail_unfinished(conn: Conn, batch_id: str, now: datetime) -> None:
    """Seen hubs without an outcome at close (interrupted, or between attempts) fail."""
    rows = await fetch_all(
        conn,
        f"SELECT {rec.STATE_COLUMNS} FROM {rec.STATE_FROM} "  # noqa: S608 - constant SQL fragments
        "WHERE batch_id = %s AND status IN ('interrupted', 'in_progress') ORDER BY guid",
        (batch_id,),
    )
    for row in rows:
        state = rec.to_state(row)
        stage_row = await fetch_one(
            conn,
            "SELECT stage_reached FROM attempts WHERE batch_id = %s AND guid = %s "
            "AND stage_reached IS NOT NULL ORDER BY attempt DESC LIMIT 1",
            (batch_id, str(state.guid)),
        )
        stage = Stage(stage_row[0]) if stage_row else Stage.IDENTIFY
        result = rec.failed_at_close(state, stage, now)
        await db.write_result(conn, result, format_utc(now), summary=False)
