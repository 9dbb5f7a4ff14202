"""A SQLite store's books as an older jigd wrote them: rows put in with plain SQL on a store
migrated only part of the way, for the tests of the migrations that follow."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg

from tests.jigd.store.books import guid

# An open batch B000001 with a GUID of each state: pending, final with each outcome.
OLD_OUTCOMES = [None, None, "reflashed", "reflashed", "failed", "already_current", "not_received"]
OLD_TS = "2025-03-01T08:00:00.000000Z"


def _old_rows(outcomes: list[str | None]) -> list[tuple[str, str, tuple[object, ...]]]:
    """The statements (SQL with `?` placeholders) that write batch B000001 with a GUID per entry
    of `outcomes` into the tables of schema version 1, as versions 1 to 5 did."""
    statements: list[tuple[str, str, tuple[object, ...]]] = [
        (
            "batch",
            "INSERT INTO batches (id, seq, booking, party, source, status, created_at) "
            "VALUES ('B000001', 1, 'WO', 'P', 'm.csv', 'open', ?)",
            (OLD_TS,),
        )
    ]
    for n, outcome in enumerate(outcomes, start=1):
        statements.append(
            (
                "expected",
                "INSERT INTO expected_guids (batch_id, guid, line) VALUES ('B000001', ?, ?)",
                (str(guid(n)), n + 1),
            )
        )
        statements.append(
            (
                "state",
                "INSERT INTO guid_states (batch_id, guid, status, outcome, attempts, updated_at) "
                "VALUES ('B000001', ?, ?, ?, ?, ?)",
                (
                    str(guid(n)),
                    "pending" if outcome is None else "final",
                    outcome,
                    0 if outcome in {None, "not_received"} else 1,
                    OLD_TS,
                ),
            )
        )
    return statements


def insert_old_batch_pg(url: str, outcomes: list[str | None]) -> None:
    """`insert_old_batch` on a PostgreSQL database of schema 5 or older."""
    with psycopg.connect(url) as conn:
        for _, sql, params in _old_rows(outcomes):
            conn.execute(sql.replace("?", "%s"), params)


def insert_old_batch(db_path: Path, outcomes: list[str | None]) -> None:
    """Write batch B000001 with a GUID per entry of `outcomes` (None: still pending) into the
    tables of schema version 1 (batches, expected_guids, guid_states), as version 1 to 5 did."""
    conn = sqlite3.connect(db_path)
    try:
        for _, sql, params in _old_rows(outcomes):
            conn.execute(sql, params)
        conn.commit()
    finally:
        conn.close()
