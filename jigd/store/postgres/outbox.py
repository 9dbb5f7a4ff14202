"""The PostgreSQL store's journal, rejected hubs, alerts and outbox operations.

Each operation is one transaction (jigd.store.postgres.pool); the contract
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
from jigd.store.postgres import rows as db
from jigd.store.postgres.pool import (
    PostgresPool,
    completes,
    fetch_all,
    fetch_one,
    notifies,
)
from jigd.store.values import JournalEvent, OutboxMessage, RejectedHub

__all__ = ["OutboxOperations"]

_LOGGER = logging.getLogger(__package__)  # one logger for the backend: jigd.store.postgres


class OutboxOperations(PostgresPool):
    """Rejected hubs and alerts, the journal, and the outbox of events to deliver."""

    @notifies
    @completes
    async def record_rejected(
        self, guid: Guid, rig: int, slot: int, reason: str, *, detail: str | None = None
    ) -> int:
        rec.check_slot(rig, slot)
        if not reason.strip():
            raise InvalidRecordError(f"rig {rig} slot {slot} GUID {guid}: rejection needs a reason")
        why = reason.strip()
        now_dt = self._clock()
        now = format_utc(now_dt)
        async with self._write(queues=True) as conn:
            row = await fetch_one(
                conn,
                "INSERT INTO rejected_hubs (guid, rig, slot, reason, ts, station) "
                "VALUES (%s, %s, %s, %s, %s, current_setting('jigd.station')) RETURNING id",
                (str(guid), rig, slot, why, now),
            )
            if row is None:  # never after a successful INSERT ... RETURNING
                raise StoreError(f"{self.where}: no row id for the rejected hub {guid}")
            await db.journal(conn, now, "rejected", guid=guid, rig=rig, slot=slot, reason=why)
            await db.enqueue(
                conn, rejected_alert_event(guid, rig, slot, why, now=now_dt, detail=detail), now
            )
        _LOGGER.warning("rig %d slot %d GUID %s: rejected (%s)", rig, slot, guid, reason)
        return int(row[0])

    @notifies
    @completes
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
        async with self._write(queues=True) as conn:
            await db.journal(
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
            await db.enqueue(conn, event, now)
        _LOGGER.warning("alert %s: %s", kind, event.message)
        return event.event_id

    async def list_rejected(self) -> list[RejectedHub]:
        async with self._read() as conn:
            rows = await fetch_all(
                conn,
                "SELECT id, guid, rig, slot, reason, ts FROM rejected_hubs "
                "WHERE station = current_setting('jigd.station') ORDER BY id",
            )
        return [
            RejectedHub(id=i, guid=Guid.parse(g), rig=r, slot=s, reason=why, ts=parse_utc(ts))
            for i, g, r, s, why, ts in rows
        ]

    async def journal(
        self, *, batch_id: str | None = None, guid: Guid | None = None
    ) -> list[JournalEvent]:
        async with self._read() as conn:
            rows = await fetch_all(
                conn,
                "SELECT id, ts, kind, batch_id, guid, rig, slot, data FROM events "
                "WHERE (%s::text IS NULL OR batch_id = %s) "
                "AND (%s::text IS NULL OR guid = %s) ORDER BY id",
                (batch_id, batch_id, rec.opt_str(guid), rec.opt_str(guid)),
            )
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

    async def outbox_pending(self, limit: int = 100) -> list[OutboxMessage]:
        if limit < 1:
            raise InvalidRecordError(f"outbox limit {limit} is less than 1")
        async with self._read() as conn:
            rows = await fetch_all(
                conn,
                "SELECT id, kind, payload, event_id, created_at, published_at, station "
                "FROM outbox WHERE published_at IS NULL "
                "AND publisher = current_setting('jigd.station') ORDER BY id LIMIT %s",
                (limit,),
            )
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

    @completes
    async def mark_published(self, ids: Iterable[int]) -> int:
        pending = sorted(set(ids))
        now = self._now()
        async with self._write() as conn:
            cursor = await conn.execute(
                "UPDATE outbox SET published_at = %s "
                "WHERE published_at IS NULL AND id = ANY(%s::bigint[])",
                (now, pending),
            )
            return cursor.rowcount

    async def outbox_depth(self) -> int:
        async with self._read() as conn:
            row = await fetch_one(
                conn,
                "SELECT COUNT(*) FROM outbox "
                "WHERE published_at IS NULL AND publisher = current_setting('jigd.station')",
            )
        return 0 if row is None else int(row[0])
