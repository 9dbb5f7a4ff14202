"""The SQLite store's journal, rejected hubs, alerts and outbox operations.

Each operation is one job on the worker thread (see jigd.store.sqlite.worker); the contract
(jigd.store.contract.Store) describes it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable

from jigd.events import (
    AlertKind,
    EventKind,
    alert_event,
    format_utc,
    parse_utc,
    rejected_alert_event,
)
from jigd.model import DeviceModel, Guid
from jigd.store import records as rec
from jigd.store.errors import InvalidRecordError, StoreError
from jigd.store.sqlite import rows as db
from jigd.store.sqlite.worker import SqliteWorker, notifies, on_worker
from jigd.store.values import JournalEvent, OutboxMessage, RejectedHub

__all__ = ["OutboxOperations"]

_LOGGER = logging.getLogger(__package__)  # one logger for the backend: jigd.store.sqlite

_MARK_PUBLISHED_SQL = "UPDATE outbox SET published_at = ? WHERE published_at IS NULL AND id IN ({})"


class OutboxOperations(SqliteWorker):
    """Rejected hubs and alerts, the journal, and the outbox of events to deliver."""

    @notifies
    @on_worker
    def record_rejected(
        self, guid: Guid, rig: int, slot: int, reason: str, *, detail: str | None = None
    ) -> int:
        rec.check_slot(rig, slot)
        if not reason.strip():
            raise InvalidRecordError(f"rig {rig} slot {slot} GUID {guid}: rejection needs a reason")
        why = reason.strip()
        now_dt = self._clock()
        now = format_utc(now_dt)
        with self._write() as conn:
            cursor = conn.execute(
                "INSERT INTO rejected_hubs (guid, rig, slot, reason, ts, station) "
                "VALUES (?, ?, ?, ?, ?, jigd_station())",
                (str(guid), rig, slot, why, now),
            )
            row_id = cursor.lastrowid
            if row_id is None:  # never after a successful INSERT into a rowid table
                raise StoreError(f"{self.path}: no row id for the rejected hub {guid}")
            db.journal(conn, now, "rejected", guid=guid, rig=rig, slot=slot, reason=why)
            db.enqueue(
                conn, rejected_alert_event(guid, rig, slot, why, now=now_dt, detail=detail), now
            )
        _LOGGER.warning("rig %d slot %d GUID %s: rejected (%s)", rig, slot, guid, reason)
        return row_id

    @notifies
    @on_worker
    def record_alert(
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
        rec.check_alert(kind, detail, rig, slot, model)
        now_dt = self._clock()
        now = format_utc(now_dt)
        event = alert_event(
            kind,
            detail=detail.strip(),
            rig=rig,
            slot=slot,
            guid=guid,
            model=model,
            reason=reason,
            now=now_dt,
        )
        with self._write() as conn:
            db.journal(
                conn,
                now,
                "alert",
                guid=guid,
                rig=rig,
                slot=slot,
                alert=str(kind),
                model=rec.opt_str(model),
                reason=reason,
                detail=detail.strip(),
                event_id=event.event_id,
            )
            db.enqueue(conn, event, now)
        _LOGGER.warning("alert %s: %s", kind, event.message)
        return event.event_id

    @on_worker
    def list_rejected(self) -> list[RejectedHub]:
        rows = self._db.execute(
            "SELECT id, guid, rig, slot, reason, ts FROM rejected_hubs "
            "WHERE station = jigd_station() ORDER BY id"
        ).fetchall()
        return [
            RejectedHub(id=i, guid=Guid.parse(g), rig=r, slot=s, reason=why, ts=parse_utc(ts))
            for i, g, r, s, why, ts in rows
        ]

    @on_worker
    def journal(
        self, *, batch_id: str | None = None, guid: Guid | None = None
    ) -> list[JournalEvent]:
        rows = self._db.execute(
            "SELECT id, ts, kind, batch_id, guid, rig, slot, data FROM events "
            "WHERE (?1 IS NULL OR batch_id = ?1) AND (?2 IS NULL OR guid = ?2) ORDER BY id",
            (batch_id, rec.opt_str(guid)),
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

    @on_worker
    def outbox_pending(self, limit: int = 100) -> list[OutboxMessage]:
        if limit < 1:
            raise InvalidRecordError(f"outbox limit {limit} is less than 1")
        rows = self._db.execute(
            "SELECT id, kind, payload, event_id, created_at, published_at, station FROM outbox "
            "WHERE published_at IS NULL AND publisher = jigd_station() ORDER BY id LIMIT ?",
            (limit,),
        ).fetchall()
        return [
            OutboxMessage(
                id=i,
                kind=EventKind(kind),
                payload=payload,
                event_id=event_id,
                created_at=parse_utc(created),
                published_at=rec.opt_time(published),
                station=station,
            )
            for i, kind, payload, event_id, created, published, station in rows
        ]

    @on_worker
    def mark_published(self, ids: Iterable[int]) -> int:
        pending = sorted(set(ids))
        now = self._now()
        changed = 0
        with self._write() as conn:
            for chunk in db.chunks(pending):
                query = _MARK_PUBLISHED_SQL.format(db.placeholders(len(chunk)))
                cursor = conn.execute(query, (now, *chunk))
                changed += cursor.rowcount
        return changed

    @on_worker
    def outbox_depth(self) -> int:
        row = self._db.execute(
            "SELECT COUNT(*) FROM outbox WHERE published_at IS NULL AND publisher = jigd_station()"
        ).fetchone()
        return int(row[0])
