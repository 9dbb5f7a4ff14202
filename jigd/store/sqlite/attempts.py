"""The SQLite store's attempt operations: begin, stages, end, interrupt, the final result, and
the recovery of attempts a previous run left open.

Each operation is one job on the worker thread (see jigd.store.sqlite.worker); the contract
(jigd.store.contract.Store) describes it.
"""

from __future__ import annotations

import logging
import sqlite3

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
from jigd.store.sqlite import rows as db
from jigd.store.sqlite.worker import SqliteWorker, notifies, on_worker
from jigd.store.values import INTERRUPTED_CODE, AttemptRecord, GuidStatus, InterruptedGuid

__all__ = ["AttemptOperations"]

_LOGGER = logging.getLogger(__package__)  # one logger for the backend: jigd.store.sqlite


class AttemptOperations(SqliteWorker):
    """Attempts on the GUIDs of a batch, and their final results."""

    @on_worker
    def recover_interrupted(self) -> list[InterruptedGuid]:
        with self._write() as conn:
            found = recover(conn, self._now(), self.station, "jigd stopped during this attempt")
        logs.recovered(_LOGGER, found)
        return found

    @on_worker
    def begin_attempt(
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
        with self._write() as conn:
            db.open_batch_info(conn, batch_id)
            state = db.state_row(conn, batch_id, guid)
            if state.outcome is not None:
                raise OutcomeAlreadyRecordedError(batch_id, guid, state.outcome)
            resumed = state.status is GuidStatus.INTERRUPTED
            running = _open_attempt(conn, batch_id, guid)
            if running is not None:
                if running[3] != self.station:
                    raise GuidBusyElsewhereError(batch_id, guid, running[3])
                if (running[1], running[2]) != (rig, slot):
                    raise GuidBusyError(batch_id, guid, running[1], running[2])
                # The same slot begins again, so its previous attempt is over: it was cut off
                # before it could be closed (the rig lost while a failed attempt was closed).
                _close_cut_off_attempt(conn, now, batch_id, guid, running)
                resumed = True
            attempt = state.attempts + 1
            conn.execute(
                "INSERT INTO attempts (batch_id, guid, attempt, rig, slot, started_at, station) "
                "VALUES (?, ?, ?, ?, ?, ?, jigd_station())",
                (batch_id, str(guid), attempt, rig, slot, now),
            )
            conn.execute(
                "UPDATE guid_states SET status = 'in_progress', attempts = ?, rig = ?, slot = ?, "
                "station = jigd_station(), started_at = COALESCE(started_at, ?), updated_at = ?, "
                "model = COALESCE(model, ?), from_version = COALESCE(from_version, ?) "
                "WHERE batch_id = ? AND guid = ?",
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
            db.journal(
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

    @on_worker
    def record_stage(
        self, batch_id: str, guid: Guid, attempt: int, stage: Stage, detail: str | None = None
    ) -> None:
        now = self._now()
        with self._write() as conn:
            row = conn.execute(
                "UPDATE attempts SET stage_reached = ? "
                "WHERE batch_id = ? AND guid = ? AND attempt = ? RETURNING rig, slot",
                (str(stage), batch_id, str(guid), attempt),
            ).fetchone()
            if row is None:
                raise UnknownAttemptError(batch_id, guid, attempt)
            db.journal(
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

    @on_worker
    def end_attempt(
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
        with self._write() as conn:
            rig, slot = _close_attempt(
                conn, now, (batch_id, guid, attempt), stage, (error_code, error_detail)
            )
            db.journal(
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

    @on_worker
    def interrupt_attempt(
        self, batch_id: str, guid: Guid, attempt: int, *, stage: Stage, reason: str
    ) -> None:
        now = self._now()
        with self._write() as conn:
            key = (batch_id, guid, attempt)
            where = _close_attempt(conn, now, key, stage, (INTERRUPTED_CODE, reason))
            _mark_interrupted(conn, now, key, where, stage=stage, reason=reason)
        logs.interrupted(_LOGGER, (batch_id, guid, attempt), stage, reason)

    @on_worker
    def release_guid(
        self, batch_id: str, guid: Guid, rig: int, slot: int, *, stage: Stage, reason: str
    ) -> int | None:
        now = self._now()
        with self._write() as conn:
            if db.state_row(conn, batch_id, guid).outcome is not None:
                return None
            running = _open_attempt(conn, batch_id, guid)
            closed = None
            if running is not None and running[1:] == (rig, slot, self.station):
                closed = running[0]
                _close_attempt(
                    conn, now, (batch_id, guid, closed), stage, (INTERRUPTED_CODE, reason)
                )
            key = (batch_id, guid, closed)
            if not _mark_interrupted(conn, now, key, (rig, slot), stage=stage, reason=reason):
                return None
        logs.released(_LOGGER, (batch_id, guid, closed), (rig, slot), stage, reason)
        return closed

    @on_worker
    def attempts(self, batch_id: str, guid: Guid) -> list[AttemptRecord]:
        with self._read() as conn:
            db.state_row(conn, batch_id, guid)
            rows = conn.execute(
                f"SELECT {rec.ATTEMPT_COLUMNS} FROM attempts "  # noqa: S608 - constant SQL
                "WHERE batch_id = ? AND guid = ? ORDER BY attempt",
                (batch_id, str(guid)),
            ).fetchall()
        return [rec.to_attempt(row) for row in rows]

    @notifies
    @on_worker
    def record_result(self, result: GuidResult) -> None:
        now = self._now()
        with self._write() as conn:
            state = db.state_row(conn, result.batch_id, result.guid)
            if state.outcome is not None:
                raise OutcomeAlreadyRecordedError(result.batch_id, result.guid, state.outcome)
            rec.check_holder(state, self.station)
            db.open_batch_info(conn, result.batch_id)
            db.write_result(conn, result, now, summary=True)
        logs.recorded(_LOGGER, result)


def recover(conn: sqlite3.Connection, now: str, station: str, detail: str) -> list[InterruptedGuid]:
    """Every GUID `station` holds (in progress, or left so by a jigd older than schema 6)
    becomes interrupted, its open attempt closed with `detail`, journalled; returns them."""
    rows = conn.execute(
        "UPDATE guid_states SET status = 'interrupted', updated_at = ? "
        "WHERE status = 'in_progress' AND COALESCE(station, '') IN (?, '') "
        "RETURNING batch_id, guid, rig, slot",
        (now, station),
    ).fetchall()
    found = []
    for batch_id, guid_text, rig, slot in sorted(rows):
        guid = Guid.parse(guid_text)
        conn.execute(
            "UPDATE attempts SET finished_at = ?, error_code = ?, error_detail = ? "
            "WHERE batch_id = ? AND guid = ? AND finished_at IS NULL",
            (now, INTERRUPTED_CODE, detail, batch_id, guid_text),
        )
        db.journal(conn, now, "interrupted", batch_id=batch_id, guid=guid, rig=rig, slot=slot)
        found.append(InterruptedGuid(batch_id, guid))
    return found


def _open_attempt(
    conn: sqlite3.Connection, batch_id: str, guid: Guid
) -> tuple[int, int, int, str] | None:
    """The GUID's open attempt, if any: its number, rig, slot and station."""
    row = conn.execute(
        "SELECT attempt, rig, slot, station FROM attempts "
        "WHERE batch_id = ? AND guid = ? AND finished_at IS NULL "
        "ORDER BY attempt DESC LIMIT 1",
        (batch_id, str(guid)),
    ).fetchone()
    return None if row is None else (int(row[0]), int(row[1]), int(row[2]), str(row[3]))


def _close_cut_off_attempt(
    conn: sqlite3.Connection,
    now: str,
    batch_id: str,
    guid: Guid,
    running: tuple[int, int, int, str],
) -> None:
    attempt, rig, slot, _ = running
    detail = "cut off before it was closed; the slot began a new attempt"
    conn.execute(
        "UPDATE attempts SET finished_at = ?, error_code = ?, error_detail = ? "
        "WHERE batch_id = ? AND guid = ? AND attempt = ?",
        (now, INTERRUPTED_CODE, detail, batch_id, str(guid), attempt),
    )
    db.journal(
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


def _close_attempt(
    conn: sqlite3.Connection,
    now: str,
    key: tuple[str, Guid, int],
    stage: Stage,
    error: tuple[str, str | None],
) -> tuple[int, int]:
    """Close the running attempt (batch, GUID, number) at `stage` with an error (code, detail);
    its rig and slot. UnknownAttemptError if it is not running."""
    batch_id, guid, attempt = key
    code, detail = error
    row = conn.execute(
        "UPDATE attempts SET finished_at = ?, stage_reached = ?, error_code = ?, "
        "error_detail = ? WHERE batch_id = ? AND guid = ? AND attempt = ? "
        "AND finished_at IS NULL RETURNING rig, slot",
        (now, str(stage), code, detail, batch_id, str(guid), attempt),
    ).fetchone()
    if row is None:
        raise UnknownAttemptError(batch_id, guid, attempt)
    return int(row[0]), int(row[1])


def _mark_interrupted(
    conn: sqlite3.Connection,
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
    released = conn.execute(
        "UPDATE guid_states SET status = 'interrupted', updated_at = ? "
        "WHERE batch_id = ? AND guid = ? AND status = 'in_progress' AND rig = ? AND slot = ? "
        "AND station = jigd_station()",
        (now, batch_id, str(guid), rig, slot),
    ).rowcount
    if attempt is None and not released:
        return False
    db.journal(
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
