"""Rows shared by the SQLite store's operations: the journal, the outbox, batches, GUID states
and results, read and written inside a transaction on the worker thread."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

from jigd.events import BatchStatus, GuidResult, OutboxEvent, parse_utc, result_event
from jigd.model import Guid, Outcome
from jigd.store import records as rec
from jigd.store.errors import BatchClosedError, UnknownBatchError, UnknownGuidError
from jigd.store.records import (
    OUTCOME_COLUMNS,
    STATE_COLUMNS,
    STATE_FROM,
    opt_str,
    opt_time,
    to_state,
)
from jigd.store.values import BatchInfo, GuidState, SetAsideHub, summary_event

_T = TypeVar("_T")

# Rows per `IN (...)` query; far below SQLite's limit on bound parameters.
_CHUNK = 500


def placeholders(count: int) -> str:
    return ",".join("?" * count)


def chunks(items: Sequence[_T]) -> Iterator[Sequence[_T]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def journal(
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
    """Append an event to the journal."""
    conn.execute(
        "INSERT INTO events (ts, kind, batch_id, guid, rig, slot, data, station) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, NULLIF(jigd_station(), ''))",
        (now, kind, batch_id, opt_str(guid), rig, slot, json.dumps(data, sort_keys=True)),
    )


def enqueue(conn: sqlite3.Connection, event: OutboxEvent, now: str) -> None:
    """Queue an event in the outbox: its kind and its payload text, as delivered."""
    conn.execute(
        "INSERT INTO outbox (event_id, kind, payload, created_at, station, publisher) "
        "VALUES (?, ?, ?, ?, jigd_station(), jigd_station())",
        (event.event_id, str(event.KIND), event.to_json(), now),
    )


def batch_row(conn: sqlite3.Connection, batch_id: str) -> tuple[Any, ...]:
    row = conn.execute(
        "SELECT id, booking, party, source, status, created_at, closed_at "
        "FROM batches WHERE id = ?",
        (batch_id,),
    ).fetchone()
    if row is None:
        raise UnknownBatchError(batch_id)
    return tuple(row)


def batch_info(conn: sqlite3.Connection, batch_id: str) -> BatchInfo:
    """The batch with its counts, read from batch_counts (kept by triggers, schema 0005): the
    cost does not grow with the batch."""
    _, booking, party, source, status, created_at, closed_at = batch_row(conn, batch_id)
    row = conn.execute(
        f"SELECT expected, received, pending, {OUTCOME_COLUMNS} FROM batch_counts "  # noqa: S608 - constant SQL fragment
        "WHERE batch_id = ?",
        (batch_id,),
    ).fetchone()
    expected, received, pending, *numbers = row
    return BatchInfo(
        batch_id=batch_id,
        booking=booking,
        party=party,
        source=source,
        status=BatchStatus(status),
        created_at=parse_utc(created_at),
        closed_at=opt_time(closed_at),
        expected=expected,
        received=received,
        pending=pending,
        counts=dict(zip(Outcome, numbers, strict=True)),
    )


def open_batch_info(conn: sqlite3.Connection, batch_id: str) -> BatchInfo:
    info = batch_info(conn, batch_id)
    if info.closed_at is not None:
        raise BatchClosedError(batch_id, info.closed_at)
    return info


def state_row(conn: sqlite3.Connection, batch_id: str, guid: Guid) -> GuidState:
    batch_row(conn, batch_id)
    row = conn.execute(
        f"SELECT {STATE_COLUMNS} FROM {STATE_FROM} WHERE batch_id = ? AND guid = ?",  # noqa: S608 - constant SQL fragments
        (batch_id, str(guid)),
    ).fetchone()
    if row is None:
        raise UnknownGuidError(batch_id, guid)
    return to_state(row)


def set_aside(conn: sqlite3.Connection, batch_id: str) -> list[SetAsideHub]:
    """The batch's GUIDs rejected as `not_in_batch` and never attempted since (the store
    contract's `set_aside`), with their last such rejection."""
    batch_row(conn, batch_id)  # UnknownBatchError
    rows = conn.execute(
        # SQLite takes the other columns from the row holding MAX(r.ts): the last rejection.
        "SELECT r.guid, r.rig, r.slot, MAX(r.ts) FROM guid_states s "
        "JOIN rejected_hubs r ON r.guid = s.guid "
        "WHERE s.batch_id = ? AND r.reason = 'not_in_batch' "
        "AND s.attempts = 0 AND (s.status = 'pending' OR s.outcome = 'not_received') "
        "GROUP BY r.guid ORDER BY r.guid",
        (batch_id,),
    ).fetchall()
    return [
        SetAsideHub(guid=Guid.parse(g), rig=r, slot=sl, seen_at=parse_utc(ts))
        for g, r, sl, ts in rows
    ]


def enqueue_summary(conn: sqlite3.Connection, batch_id: str, now: str, *, with_guids: bool) -> None:
    """Queue the batch's summary event (with the GUID lists per outcome when `with_guids`)."""
    info = batch_info(conn, batch_id)
    guids: dict[Outcome, list[Guid]] | None = None
    aside: list[Guid] = []
    if with_guids:
        aside = [hub.guid for hub in set_aside(conn, batch_id)]
        guids = {o: [] for o in Outcome}
        for guid, outcome in conn.execute(
            "SELECT guid, outcome FROM guid_states "
            "WHERE batch_id = ? AND outcome IS NOT NULL ORDER BY guid",
            (batch_id,),
        ):
            guids[Outcome(outcome)].append(Guid.parse(guid))
    enqueue(conn, summary_event(info, guids, now=parse_utc(now), set_aside=aside), now)


def write_result(conn: sqlite3.Connection, result: GuidResult, now: str, *, summary: bool) -> None:
    """The GUID's final state, its attempt closed, a journal entry and the result event (and
    the batch's summary event when `summary`)."""
    key = (result.batch_id, str(result.guid))
    state = rec.final_state(result)
    conn.execute(
        "UPDATE guid_states SET status = 'final', updated_at = ?, station = jigd_station(), "  # noqa: S608 - constant SQL fragments
        f"({rec.FINAL_STATE_COLUMNS}) = ({placeholders(len(state))}) "
        "WHERE batch_id = ? AND guid = ?",
        (now, *state, *key),
    )
    attempt = rec.final_attempt(result)
    conn.execute(
        f"INSERT INTO attempts (batch_id, guid, {rec.ATTEMPT_COLUMNS}, station) "  # noqa: S608 - constant SQL fragments
        f"VALUES ({placeholders(2 + len(attempt))}, jigd_station()) "
        "ON CONFLICT (batch_id, guid, attempt) DO UPDATE SET "
        "finished_at = COALESCE(attempts.finished_at, excluded.finished_at), "
        "stage_reached = excluded.stage_reached, error_code = excluded.error_code, "
        "error_detail = excluded.error_detail",
        (*key, *attempt),
    )
    event = result_event(result, now=parse_utc(now))
    journal(conn, now, "result", **rec.result_journal(result, event.event_id))
    enqueue(conn, event, now)
    if summary:
        enqueue_summary(conn, result.batch_id, now, with_guids=False)
