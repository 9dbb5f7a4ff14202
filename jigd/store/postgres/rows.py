"""Rows shared by the PostgreSQL store's operations: the journal, the outbox, batches, GUID
states and results, read and written inside a transaction (jigd.store.postgres.pool).

The same rows, and the same JSON text, as the SQLite backend's jigd.store.sqlite.rows writes:
a store's values, journal and payloads do not depend on its backend. A `lock` argument is a
row-locking clause (`FOR UPDATE`, `FOR SHARE`) for a write that must keep what it read.

Outbox order (jigd.store.postgres.pool): a caller queues a GUID's event holding the GUID's
state row or its batch's row, and a batch's summary after changing the batch's counts (or
holding its row `FOR UPDATE`). A result reads its batch first and then sends everything
that changes the batch's counts, up to the summary that counts it, without reading anything
back (`write_result`, `enqueue_counted_summary`): in a pipelined write these statements go to
the server with the COMMIT, so the batch's counts row, which every result and first attempt
of the batch waits for, is held for that one round trip and the commit's flush.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from typing import Any, Final

from jigd.events import BatchStatus, GuidResult, OutboxEvent, parse_utc, result_event
from jigd.model import Guid, Outcome
from jigd.store import records as rec
from jigd.store.errors import BatchClosedError, StoreError, UnknownBatchError, UnknownGuidError
from jigd.store.postgres.pool import Conn, fetch_all, fetch_one
from jigd.store.values import BatchInfo, GuidState, SetAsideHub, summary_event

FOR_UPDATE: Final = "FOR UPDATE"
FOR_SHARE: Final = "FOR SHARE"

_COUNT_COLUMNS: Final = ", ".join(f"c.{o}" for o in Outcome)

# A summary queued by enqueue_counted_summary: its payload is written with a stand-in number for
# each count (`"pending":-4611686018427387906`), which the INSERT replaces with the count it
# reads from batch_counts (`"pending":17`); nothing else in the text can match a stand-in, since
# a `"` inside a JSON string is escaped.
_STAND_INS: Final = {
    name: -(2**62) - n
    for n, name in enumerate(("expected", "received", "pending", *(str(o) for o in Outcome)))
}
_COUNTED_PAYLOAD: Final = functools.reduce(
    lambda text, name: f"replace({text}, %s::text, %s::text || c.{name})", _STAND_INS, "%s::text"
)
_COUNTED_SUMMARY: Final = (
    "INSERT INTO outbox (event_id, kind, payload, created_at, station, publisher) "  # noqa: S608 - constant SQL fragments
    f"SELECT %s, %s, {_COUNTED_PAYLOAD}, %s, current_setting('jigd.station'), "
    "current_setting('jigd.station') FROM batch_counts c WHERE c.batch_id = %s"
)

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
        "INSERT INTO events (ts, kind, batch_id, guid, rig, slot, data, station) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, NULLIF(current_setting('jigd.station'), ''))",
        (now, kind, batch_id, rec.opt_str(guid), rig, slot, json.dumps(data, sort_keys=True)),
    )


async def enqueue(conn: Conn, event: OutboxEvent, now: str) -> None:
    """Queue an event in the outbox: its kind and its payload text, as delivered. Its id orders
    it after the events of its GUID and batch already queued: the caller holds the row that
    orders them (see the module's docstring)."""
    await conn.execute(
        "INSERT INTO outbox (event_id, kind, payload, created_at, station, publisher) "
        "VALUES (%s, %s, %s, %s, current_setting('jigd.station'), current_setting('jigd.station'))",
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
    """The batch with its counts, read from batch_counts (kept by triggers, schema 0005), in
    one query; `lock` locks the batch row only."""
    row = await fetch_one(
        conn,
        "SELECT b.booking, b.party, b.source, b.status, b.created_at, b.closed_at, "  # noqa: S608 - constant SQL fragments, lock one of two constants
        f"c.expected, c.received, c.pending, {_COUNT_COLUMNS} "
        "FROM batches b JOIN batch_counts c ON c.batch_id = b.id "
        f"WHERE b.id = %s {lock and f'{lock} OF b'}",
        (batch_id,),
    )
    if row is None:
        raise UnknownBatchError(batch_id)
    booking, party, source, status, created_at, closed_at, expected, received, pending = row[:9]
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
        counts=dict(zip(Outcome, row[9:], strict=True)),
    )


async def open_batch_info(conn: Conn, batch_id: str, lock: str = "") -> BatchInfo:
    info = await batch_info(conn, batch_id, lock)
    if info.closed_at is not None:
        raise BatchClosedError(batch_id, info.closed_at)
    return info


async def state_row(conn: Conn, batch_id: str, guid: Guid, lock: str = "") -> GuidState:
    """The GUID's state; UnknownBatchError for a batch that does not exist, UnknownGuidError
    for a GUID it does not list. One query when the GUID is there."""
    row = await fetch_one(
        conn,
        f"SELECT {rec.STATE_COLUMNS} FROM {rec.STATE_FROM} "  # noqa: S608 - constant SQL fragments
        f"WHERE batch_id = %s AND guid = %s {lock and f'{lock} OF s'}",
        (batch_id, str(guid)),
    )
    if row is None:
        await batch_row(conn, batch_id)  # UnknownBatchError first, as the contract says
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


async def enqueue_counted_summary(conn: Conn, info: BatchInfo, now: str) -> None:
    """Queue the summary of the batch `info` read, with the counts batch_counts holds when the
    row is inserted: the server fills them in (see _COUNTED_SUMMARY), so a transaction that has
    just changed the counts needs no round trip between that change and its commit."""
    stand_in = dataclasses.replace(
        info,
        expected=_STAND_INS["expected"],
        received=_STAND_INS["received"],
        pending=_STAND_INS["pending"],
        counts={o: _STAND_INS[str(o)] for o in Outcome},
    )
    event = summary_event(stand_in, None, now=parse_utc(now))
    template = event.to_json()
    params: list[str] = [event.event_id, str(event.KIND), template]
    for name, number in _STAND_INS.items():
        token = f'"{name}":{number}'
        if template.count(token) != 1:  # never: the keys are the payload's own
            raise StoreError(f"the summary payload has no single {token!r}: {template}")
        params += [token, f'"{name}":']
    await conn.execute(_COUNTED_SUMMARY, (*params, now, info.batch_id))


async def write_result(conn: Conn, result: GuidResult, now: str, *, summary: bool) -> None:
    """The GUID's final state (its batch's counts change with it, schema 0005), its attempt
    closed, a journal entry and the result event, and when `summary`, the batch's summary that
    counts it. The batch is read first: nothing is read back after the state changes (see the
    module's docstring)."""
    key = (result.batch_id, str(result.guid))
    info = await batch_info(conn, result.batch_id) if summary else None
    state = rec.final_state(result)
    await conn.execute(
        "UPDATE guid_states SET status = 'final', updated_at = %s, "  # noqa: S608 - constant SQL fragments
        "station = current_setting('jigd.station'), "
        f"({rec.FINAL_STATE_COLUMNS}) = ({placeholders(len(state))}) "
        "WHERE batch_id = %s AND guid = %s",
        (now, *state, *key),
    )
    attempt = rec.final_attempt(result)
    await conn.execute(
        f"INSERT INTO attempts (batch_id, guid, {rec.ATTEMPT_COLUMNS}, station) "  # noqa: S608 - constant SQL fragments
        f"VALUES ({placeholders(2 + len(attempt))}, current_setting('jigd.station')) "
        "ON CONFLICT (batch_id, guid, attempt) DO UPDATE SET "
        "finished_at = COALESCE(attempts.finished_at, excluded.finished_at), "
        "stage_reached = excluded.stage_reached, error_code = excluded.error_code, "
        "error_detail = excluded.error_detail",
        (*key, *attempt),
    )
    event = result_event(result, now=parse_utc(now))
    await journal(conn, now, "result", **rec.result_journal(result, event.event_id))
    await enqueue(conn, event, now)
    if info is not None:
        await enqueue_counted_summary(conn, info, now)
