"""Rows shared by the PostgreSQL store's operations: the journal, the outbox, batches, GUID
states and results, read and written inside a transaction (jigd.store.postgres.pool).

The same rows, and the same JSON text, as the SQLite backend's jigd.store.sqlite.rows writes:
a store's values, journal and payloads do not depend on its backend. A `lock` argument is a
row-locking clause (`FOR UPDATE`, `FOR SHARE`) for a write that must keep what it read.
"""

from __future__ import annotations

import json
from typing import Any, Final

from jigd.events import BatchStatus, GuidResult, OutboxEvent, parse_utc, result_event
from jigd.model import Guid, Outcome
from jigd.store import records as rec
from jigd.store.errors import BatchClosedError, UnknownBatchError, UnknownGuidError
from jigd.store.postgres.pool import Conn, fetch_all, fetch_one
from jigd.store.values import BatchInfo, GuidState, SetAsideHub, summary_event

FOR_UPDATE: Final = "FOR UPDATE"
FOR_SHARE: Final = "FOR SHARE"

# The batch's GUIDs rejected as `not_in_batch` and never attempted since, each with its last
# such rejection (DISTINCT ON keeps the first row of each GUID: the latest).
_SET_ASIDE_SQL = """
SELECT DISTINCT ON (r.guid) r.guid, r.rig, r.slot, r.ts
FROM guid_states s JOIN rejected_hubs r ON r.guid = s.guid
WHERE s.batch_id = %s AND r.reason = 'not_in_batch'
  AND s.attempts = 0 AND (s.status = 'pending' OR s.outcome = 'not_received')
ORDER BY r.guid, r.ts DESC, r.id DESC
"""


def placeholders(count: int) -> str:
    return ", ".join(["%s"] * count)


async def journal(
    conn: Conn,
    now: str,
    kind: str,
    *,
    batch_id: str | None = None,
    guid: Guid | None = None,
    rig: int | None = None,
    slot: int | None = None,
    **data: Any,
) -> None:
    """Append an event to the journal."""
    await conn.execute(
        "INSERT INTO events (ts, kind, batch_id, guid, rig, slot, data) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s)",
        (now, kind, batch_id, rec.opt_str(guid), rig, slot, json.dumps(data, sort_keys=True)),
    )


async def enqueue(conn: Conn, event: OutboxEvent, now: str) -> None:
    """Queue an event in the outbox: its kind and its payload text, as delivered. The
    transaction holds OUTBOX_LOCK (PostgresPool._write(queues=True))."""
    await conn.execute(
        "INSERT INTO outbox (event_id, kind, payload, created_at) VALUES (%s, %s, %s, %s)",
        (event.event_id, str(event.KIND), event.to_json(), now),
    )


async def batch_row(conn: Conn, batch_id: str, lock: str = "") -> tuple[Any, ...]:
    row = await fetch_one(
        conn,
        "SELECT id, booking, party, source, status, created_at, closed_at "  # noqa: S608 - lock is one of two constants
        f"FROM batches WHERE id = %s {lock}",
        (batch_id,),
    )
    if row is None:
        raise UnknownBatchError(batch_id)
    return row


async def batch_info(conn: Conn, batch_id: str, lock: str = "") -> BatchInfo:
    """The batch with its counts, read from batch_counts (kept by triggers, schema 0005)."""
    _, booking, party, source, status, created_at, closed_at = await batch_row(conn, batch_id, lock)
    row = await fetch_one(
        conn,
        f"SELECT expected, received, pending, {rec.OUTCOME_COLUMNS} FROM batch_counts "  # noqa: S608 - constant SQL fragment
        "WHERE batch_id = %s",
        (batch_id,),
    )
    if row is None:
        raise UnknownBatchError(batch_id)
    expected, received, pending, *numbers = row
    return BatchInfo(
        batch_id=batch_id,
        booking=booking,
        party=party,
        source=source,
        status=BatchStatus(status),
        created_at=parse_utc(created_at),
        closed_at=rec.opt_time(closed_at),
        expected=expected,
        received=received,
        pending=pending,
        counts=dict(zip(Outcome, numbers, strict=True)),
    )


async def open_batch_info(conn: Conn, batch_id: str, lock: str = "") -> BatchInfo:
    info = await batch_info(conn, batch_id, lock)
    if info.closed_at is not None:
        raise BatchClosedError(batch_id, info.closed_at)
    return info


async def state_row(conn: Conn, batch_id: str, guid: Guid, lock: str = "") -> GuidState:
    await batch_row(conn, batch_id)
    row = await fetch_one(
        conn,
        f"SELECT {rec.STATE_COLUMNS} FROM {rec.STATE_FROM} "  # noqa: S608 - constant SQL fragments
        f"WHERE batch_id = %s AND guid = %s {lock and f'{lock} OF s'}",
        (batch_id, str(guid)),
    )
    if row is None:
        raise UnknownGuidError(batch_id, guid)
    return rec.to_state(row)


async def lock_guid(conn: Conn, batch_id: str, guid: Guid) -> None:
    """Lock the GUID's state row (if any) before its attempts' rows, the order every write
    takes them in, so two writes on one GUID wait for each other instead of deadlocking."""
    await conn.execute(
        "SELECT 1 FROM guid_states WHERE batch_id = %s AND guid = %s FOR UPDATE",
        (batch_id, str(guid)),
    )


async def set_aside(conn: Conn, batch_id: str) -> list[SetAsideHub]:
    """The batch's GUIDs rejected as `not_in_batch` and never attempted since (the store
    contract's `set_aside`), with their last such rejection."""
    await batch_row(conn, batch_id)  # UnknownBatchError
    rows = await fetch_all(conn, _SET_ASIDE_SQL, (batch_id,))
    return [
        SetAsideHub(guid=Guid.parse(g), rig=r, slot=sl, seen_at=parse_utc(ts))
        for g, r, sl, ts in rows
    ]


async def enqueue_summary(conn: Conn, batch_id: str, now: str, *, with_guids: bool) -> None:
    """Queue the batch's summary event (with the GUID lists per outcome when `with_guids`)."""
    info = await batch_info(conn, batch_id)
    guids: dict[Outcome, list[Guid]] | None = None
    aside: list[Guid] = []
    if with_guids:
        aside = [hub.guid for hub in await set_aside(conn, batch_id)]
        guids = {o: [] for o in Outcome}
        for guid, outcome in await fetch_all(
            conn,
            "SELECT guid, outcome FROM guid_states "
            "WHERE batch_id = %s AND outcome IS NOT NULL ORDER BY guid",
            (batch_id,),
        ):
            guids[Outcome(outcome)].append(Guid.parse(guid))
    await enqueue(conn, summary_event(info, guids, now=parse_utc(now), set_aside=aside), now)


async def write_result(conn: Conn, result: GuidResult, now: str, *, summary: bool) -> None:
    """The GUID's final state, its attempt closed, a journal entry and the result event (and
    the batch's summary event when `summary`)."""
    key = (result.batch_id, str(result.guid))
    state = rec.final_state(result)
    await conn.execute(
        "UPDATE guid_states SET status = 'final', updated_at = %s, "  # noqa: S608 - constant SQL fragments
        f"({rec.FINAL_STATE_COLUMNS}) = ({placeholders(len(state))}) "
        "WHERE batch_id = %s AND guid = %s",
        (now, *state, *key),
    )
    attempt = rec.final_attempt(result)
    await conn.execute(
        f"INSERT INTO attempts (batch_id, guid, {rec.ATTEMPT_COLUMNS}) "  # noqa: S608 - constant SQL fragments
        f"VALUES ({placeholders(2 + len(attempt))}) "
        "ON CONFLICT (batch_id, guid, attempt) DO UPDATE SET "
        "finished_at = COALESCE(attempts.finished_at, excluded.finished_at), "
        "stage_reached = excluded.stage_reached, error_code = excluded.error_code, "
        "error_detail = excluded.error_detail",
        (*key, *attempt),
    )
    event = result_event(result, now=parse_utc(now))
    await journal(conn, now, "result", **rec.result_journal(result, event.event_id))
    await enqueue(conn, event, now)
    if summary:
        await enqueue_summary(conn, result.batch_id, now, with_guids=False)
