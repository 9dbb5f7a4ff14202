"""The PostgreSQL store's attempt operations: begin, stages, end, interrupt, the final result,
and the recovery of attempts a previous run left open.

Each operation is one transaction (jigd.store.postgres.pool); the contract
(jigd.store.contract.Store) describes it. An operation that decides from a GUID's state first
locks its batch row (FOR SHARE: the batch cannot close meanwhile) and then the GUID's row
(FOR UPDATE: two slots cannot both begin it), always in that order.
"""

from __future__ import annotations

import logging

from jigd.events import GuidResult
from jigd.model import DeviceModel, FirmwareVersion, Guid, Stage
from jigd.store import logs
from jigd.store import records as rec
from jigd.store.errors import (
    GuidBusyElsewhereError,
    GuidBusyError,
    OutcomeAlreadyRecordedError,
    UnknownAttemptError,
)
from jigd.store.postgres import rows as db
from jigd.store.postgres.pool import (
    Conn,
    PostgresPool,
    completes,
    fetch_all,
    fetch_one,
    notifies,
)
from jigd.store.values import INTERRUPTED_CODE, AttemptRecord, GuidStatus, InterruptedGuid

__all__ = ["AttemptOperations"]

_LOGGER = logging.getLogger(__package__)  # one logger for the backend: jigd.store.postgres


class AttemptOperations(PostgresPool):
    """Attempts on the GUIDs of a batch, and their final results."""

    @completes
    async def recover_interrupted(self) -> list[InterruptedGuid]:
        async with self._write() as conn:
            found = await recover(
                conn, self._now(), self.station, "jigd stopped during this attempt"
            )
        logs.recovered(_LOGGER, found)
        return found

    @completes
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
        rec.check_slot(rig, slot)
        now = self._now()
        async with self._write() as conn:
            await db.open_batch_info(conn, batch_id, db.FOR_SHARE)
            state = await db.state_row(conn, batch_id, guid, db.FOR_UPDATE)
            if state.outcome is not None:
                raise OutcomeAlreadyRecordedError(batch_id, guid, state.outcome)
            resumed = state.status is GuidStatus.INTERRUPTED
            running = await _open_attempt(conn, batch_id, guid)
            if running is not None:
                if running[3] != self.station:
                    raise GuidBusyElsewhereError(batch_id, guid, running[3])
                if (running[1], running[2]) != (rig, slot):
                    raise GuidBusyError(batch_id, guid, running[1], running[2])
                # The same slot begins again, so its previous attempt is over: it was cut off
                # before it could be closed (the rig lost while a failed attempt was closed).
                await _close_cut_off_attempt(conn, now, batch_id, guid, running)
                resumed = True
            attempt = state.attempts + 1
            await conn.execute(
                "INSERT INTO attempts (batch_id, guid, attempt, rig, slot, started_at, station) "
                "VALUES (%s, %s, %s, %s, %s, %s, current_setting('jigd.station'))",
                (batch_id, str(guid), attempt, rig, slot, now),
            )
            await conn.execute(
                "UPDATE guid_states SET status = 'in_progress', attempts = %s, rig = %s, "
                "station = current_setting('jigd.station'), slot = %s, "
                "started_at = COALESCE(started_at, %s), updated_at = %s, "
                "model = COALESCE(model, %s), from_version = COALESCE(from_version, %s) "
                "WHERE batch_id = %s AND guid = %s",
                (
                    attempt,
                    rig,
                    slot,
                    now,
                    now,
                    rec.opt_str(model),
                    rec.opt_str(from_version),
                    batch_id,
                    str(guid),
                ),
            )
            await db.journal(
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
        _LOGGER.info(
            "rig %d slot %d GUID %s: attempt %d (batch %s)", rig, slot, guid, attempt, batch_id
        )
        return attempt

    @completes
    async def record_stage(
        self, batch_id: str, guid: Guid, attempt: int, stage: Stage, detail: str | None = None
    ) -> None:
        now = self._now()
        async with self._write() as conn:
            row = await fetch_one(
                conn,
                "UPDATE attempts SET stage_reached = %s "
                "WHERE batch_id = %s AND guid = %s AND attempt = %s RETURNING rig, slot",
                (str(stage), batch_id, str(guid), attempt),
            )
            if row is None:
                raise UnknownAttemptError(batch_id, guid, attempt)
            await db.journal(
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

    @completes
    async def end_attempt(
        self,
        batch_id: str,
        guid: Guid,
        attempt: int,
        *,
        stage: Stage,
        error_code: str,
        error_detail: str | None = None,
        locked: bool | None = None,
    ) -> None:
        now = self._now()
        async with self._write() as conn:
            rig, slot = await _close_attempt(
                conn, now, (batch_id, guid, attempt), stage, (error_code, error_detail)
            )
            await db.journal(
                conn,
                now,
                "attempt_failed",
                batch_id=batch_id,
                guid=guid,
                rig=rig,
                slot=slot,
                attempt=attempt,
                stage=str(stage),
                code=error_code,
                detail=error_detail,
                locked=locked,
            )

    @completes
    async def interrupt_attempt(
        self, batch_id: str, guid: Guid, attempt: int, *, stage: Stage, reason: str
    ) -> None:
        now = self._now()
        async with self._write() as conn:
            await db.lock_guid(conn, batch_id, guid)
            key = (batch_id, guid, attempt)
            where = await _close_attempt(conn, now, key, stage, (INTERRUPTED_CODE, reason))
            await _mark_interrupted(conn, now, key, where, stage=stage, reason=reason)
        logs.interrupted(_LOGGER, (batch_id, guid, attempt), stage, reason)

    @completes
    async def release_guid(
        self, batch_id: str, guid: Guid, rig: int, slot: int, *, stage: Stage, reason: str
    ) -> int | None:
        now = self._now()
        async with self._write() as conn:
            await db.batch_row(conn, batch_id, db.FOR_SHARE)
            if (await db.state_row(conn, batch_id, guid, db.FOR_UPDATE)).outcome is not None:
                return None
            running = await _open_attempt(conn, batch_id, guid)
            closed = None
            if running is not None and running[1:] == (rig, slot, self.station):
                closed = running[0]
                await _close_attempt(
                    conn, now, (batch_id, guid, closed), stage, (INTERRUPTED_CODE, reason)
                )
            key = (batch_id, guid, closed)
            if not await _mark_interrupted(conn, now, key, (rig, slot), stage=stage, reason=reason):
                return None
        logs.released(_LOGGER, (batch_id, guid, closed), (rig, slot), stage, reason)
        return closed

    async def attempts(self, batch_id: str, guid: Guid) -> list[AttemptRecord]:
        async with self._read() as conn:
            await db.state_row(conn, batch_id, guid)
            rows = await fetch_all(
                conn,
                f"SELECT {rec.ATTEMPT_COLUMNS} FROM attempts "  # noqa: S608 - constant SQL
                "WHERE batch_id = %s AND guid = %s ORDER BY attempt",
                (batch_id, str(guid)),
            )
        return [rec.to_attempt(row) for row in rows]

    @notifies
    @completes
    async def record_result(self, result: GuidResult) -> None:
        now = self._now()
        async with self._write(queues=True) as conn:
            await db.batch_row(conn, result.batch_id, db.FOR_SHARE)
            state = await db.state_row(conn, result.batch_id, result.guid, db.FOR_UPDATE)
            if state.outcome is not None:
                raise OutcomeAlreadyRecordedError(result.batch_id, result.guid, state.outcome)
            rec.check_holder(state, self.station)
            await db.open_batch_info(conn, result.batch_id)
            await db.write_result(conn, result, now, summary=True)
        logs.recorded(_LOGGER, result)


async def recover(conn: Conn, now: str, station: str, detail: str) -> list[InterruptedGuid]:
    """Every GUID `station` holds (in progress, or left so by a jigd older than schema 6)
    becomes interrupted, its open attempt closed with `detail`, journalled; returns them."""
    rows = await fetch_all(
        conn,
        "UPDATE guid_states SET status = 'interrupted', updated_at = %s "
        "WHERE status = 'in_progress' AND COALESCE(station, '') IN (%s, '') "
        "RETURNING batch_id, guid, rig, slot",
        (now, station),
    )
    found = []
    for batch_id, guid_text, rig, slot in sorted(rows):
        guid = Guid.parse(guid_text)
        await conn.execute(
            "UPDATE attempts SET finished_at = %s, error_code = %s, error_detail = %s "
            "WHERE batch_id = %s AND guid = %s AND finished_at IS NULL",
            (now, INTERRUPTED_CODE, detail, batch_id, guid_text),
        )
        await db.journal(conn, now, "interrupted", batch_id=batch_id, guid=guid, rig=rig, slot=slot)
        found.append(InterruptedGuid(batch_id, guid))
    return found


async def _open_attempt(conn: Conn, batch_id: str, guid: Guid) -> tuple[int, int, int, str] | None:
    """The GUID's open attempt, if any: its number, rig, slot and station."""
    row = await fetch_one(
        conn,
        "SELECT attempt, rig, slot, station FROM attempts "
        "WHERE batch_id = %s AND guid = %s AND finished_at IS NULL "
        "ORDER BY attempt DESC LIMIT 1",
        (batch_id, str(guid)),
    )
    return None if row is None else (int(row[0]), int(row[1]), int(row[2]), str(row[3]))


async def _close_cut_off_attempt(
    conn: Conn, now: str, batch_id: str, guid: Guid, running: tuple[int, int, int, str]
) -> None:
    attempt, rig, slot, _ = running
    detail = "cut off before it was closed; the slot began a new attempt"
    await conn.execute(
        "UPDATE attempts SET finished_at = %s, error_code = %s, error_detail = %s "
        "WHERE batch_id = %s AND guid = %s AND attempt = %s",
        (now, INTERRUPTED_CODE, detail, batch_id, str(guid), attempt),
    )
    await db.journal(
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


async def _close_attempt(
    conn: Conn,
    now: str,
    key: tuple[str, Guid, int],
    stage: Stage,
    error: tuple[str, str | None],
) -> tuple[int, int]:
    """Close the running attempt (batch, GUID, number) at `stage` with an error (code, detail);
    its rig and slot. UnknownAttemptError if it is not running."""
    batch_id, guid, attempt = key
    code, detail = error
    row = await fetch_one(
        conn,
        "UPDATE attempts SET finished_at = %s, stage_reached = %s, error_code = %s, "
        "error_detail = %s WHERE batch_id = %s AND guid = %s AND attempt = %s "
        "AND finished_at IS NULL RETURNING rig, slot",
        (now, str(stage), code, detail, batch_id, str(guid), attempt),
    )
    if row is None:
        raise UnknownAttemptError(batch_id, guid, attempt)
    return int(row[0]), int(row[1])


async def _mark_interrupted(
    conn: Conn,
    now: str,
    key: tuple[str, Guid, int | None],
    where: tuple[int, int],
    *,
    stage: Stage,
    reason: str,
) -> bool:
    """After the attempt `key` names was closed as interrupted (None: no attempt was open), the
    GUID, if in progress in that rig and slot, becomes interrupted; journalled. False when
    nothing changed."""
    batch_id, guid, attempt = key
    rig, slot = where
    cursor = await conn.execute(
        "UPDATE guid_states SET status = 'interrupted', updated_at = %s "
        "WHERE batch_id = %s AND guid = %s AND status = 'in_progress' AND rig = %s AND slot = %s "
        "AND station = current_setting('jigd.station')",
        (now, batch_id, str(guid), rig, slot),
    )
    if attempt is None and not cursor.rowcount:
        return False
    await db.journal(
        conn,
        now,
        "interrupted",
        batch_id=batch_id,
        guid=guid,
        rig=rig,
        slot=slot,
        attempt=attempt,
        stage=str(stage),
        detail=reason,
    )
    return True
