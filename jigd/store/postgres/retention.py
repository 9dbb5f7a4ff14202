"""The PostgreSQL store's retention purge, backup answer and books check (docs/install.md,
"Retention" and "Backup and restore").

A purge deletes in chunks of `PURGE_CHUNK` rows, each its own transaction, so a slot's record
waits for one chunk at most, never for the whole purge. A database server is backed up with its
own tools (`pg_dump`, or the server's continuous archiving), not through the store: `backup`
says so.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path

from jigd.events import format_utc
from jigd.model import Outcome
from jigd.store import logs
from jigd.store import records as rec
from jigd.store.errors import BackupError
from jigd.store.postgres import rows as db
from jigd.store.postgres.pool import PostgresPool, fetch_all, fetch_one
from jigd.store.values import BackupInfo, PurgeCounts

__all__ = ["PURGE_CHUNK", "RetentionOperations"]

_LOGGER = logging.getLogger(__package__)  # one logger for the backend: jigd.store.postgres

# Rows deleted per transaction: a few milliseconds of work, so slots hardly wait.
PURGE_CHUNK = 2000

_OUTBOX_SQL = "SELECT id FROM outbox WHERE published_at IS NOT NULL AND published_at < %(cutoff)s"
_JOURNAL_SQL = (
    "SELECT e.id FROM events e JOIN batches b ON b.id = e.batch_id "
    "WHERE b.status = 'closed' AND b.closed_at < %(cutoff)s "
    "UNION ALL SELECT id FROM events WHERE batch_id IS NULL AND ts < %(cutoff)s"
)

_RECOUNT_SQL = f"""
SELECT b.id, b.status, COUNT(s.guid), COUNT(*) FILTER (WHERE s.attempts > 0),
    COUNT(*) FILTER (WHERE s.guid IS NOT NULL AND s.outcome IS NULL),
    {", ".join(f"COUNT(*) FILTER (WHERE s.outcome = '{o}')" for o in Outcome)},
    (SELECT COUNT(*) FROM expected_guids e WHERE e.batch_id = b.id)
FROM batches b LEFT JOIN guid_states s ON s.batch_id = b.id GROUP BY b.id ORDER BY b.seq
"""  # noqa: S608 - built from the Outcome enum only
_KEPT_SQL = (
    f"SELECT batch_id, expected, received, pending, {rec.OUTCOME_COLUMNS} "  # noqa: S608 - built from the Outcome enum only
    "FROM batch_counts"
)


class RetentionOperations(PostgresPool):
    """Purging what retention lets go, answering a backup, and checking the books."""

    async def purge(
        self, *, outbox_age: timedelta, journal_age: timedelta, dry_run: bool = False
    ) -> PurgeCounts:
        now = self._clock()
        cutoffs = (format_utc(now - outbox_age), format_utc(now - journal_age))
        if dry_run:
            outbox = await self._count_purgeable(_OUTBOX_SQL, cutoffs[0])
            journal = await self._count_purgeable(_JOURNAL_SQL, cutoffs[1])
            return PurgeCounts(outbox=outbox, journal=journal, dry_run=True)
        outbox = journal = 0
        while done := await self._purge_chunk(_OUTBOX_SQL, "outbox", cutoffs[0]):
            outbox += done
        while done := await self._purge_chunk(_JOURNAL_SQL, "events", cutoffs[1]):
            journal += done
        if outbox or journal:
            await self._journal_purge(outbox, journal, cutoffs)
            logs.purged(_LOGGER, outbox, journal, cutoffs)
        return PurgeCounts(outbox=outbox, journal=journal, dry_run=False)

    async def _count_purgeable(self, select: str, cutoff: str) -> int:
        async with self._read() as conn:
            row = await fetch_one(
                conn,
                f"SELECT COUNT(*) FROM ({select}) purgeable",  # noqa: S608 - constant SQL
                {"cutoff": cutoff},
            )
        return 0 if row is None else int(row[0])

    async def _purge_chunk(self, select: str, table: str, cutoff: str) -> int:
        """Delete up to PURGE_CHUNK rows of `table` that `select` names, in one transaction."""
        async with self._write() as conn:
            cursor = await conn.execute(
                f"DELETE FROM {table} WHERE id IN ({select} LIMIT %(limit)s)",  # noqa: S608 - constant SQL
                {"cutoff": cutoff, "limit": PURGE_CHUNK},
            )
            return cursor.rowcount

    async def _journal_purge(self, outbox: int, journal: int, cutoffs: tuple[str, str]) -> None:
        async with self._write() as conn:
            await db.journal(
                conn,
                self._now(),
                "purged",
                outbox=outbox,
                journal=journal,
                outbox_before=cutoffs[0],
                journal_before=cutoffs[1],
            )

    async def backup(self, target: Path) -> BackupInfo:
        raise BackupError(
            f"backup {target}: the store is the PostgreSQL database {self.where}; a database "
            "server is backed up with its own tools: `pg_dump --format=custom` for a copy, or "
            'the server\'s continuous archiving (docs/install.md, "Backup and restore")'
        )

    async def check_books(self) -> list[str]:
        async with self._read() as conn:
            kept = {row[0]: tuple(row[1:]) for row in await fetch_all(conn, _KEPT_SQL)}
            return rec.books_problems(kept, await fetch_all(conn, _RECOUNT_SQL))
