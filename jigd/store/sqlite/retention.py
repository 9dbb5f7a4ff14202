"""The SQLite store's retention purge, online backup and books check (docs/install.md,
"Retention" and "Backup and restore").

A purge deletes in chunks of `PURGE_CHUNK` rows, each its own job on the worker thread, so a
slot's record waits for one chunk at most, never for the whole purge. A backup copies the
database with SQLite's backup API on the worker thread's own connection: one step, so the copy
is one consistent snapshot; other store operations wait for that step (`BackupInfo.blocked_s`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from datetime import timedelta
from pathlib import Path

from jigd.events import format_utc
from jigd.model import Outcome
from jigd.store import logs
from jigd.store import records as rec
from jigd.store.errors import BackupError
from jigd.store.sqlite import rows as db
from jigd.store.sqlite.worker import SqliteWorker, on_worker
from jigd.store.values import BackupInfo, PurgeCounts

__all__ = ["PURGE_CHUNK", "RetentionOperations", "books_problems"]

_LOGGER = logging.getLogger(__package__)  # one logger for the backend: jigd.store.sqlite

# Rows deleted per transaction: a few milliseconds of work, so slots hardly wait.
PURGE_CHUNK = 2000

_OUTBOX_SQL = "SELECT id FROM outbox WHERE published_at IS NOT NULL AND published_at < ?1"
_JOURNAL_SQL = (
    "SELECT e.id FROM events e JOIN batches b ON b.id = e.batch_id "
    "WHERE b.status = 'closed' AND b.closed_at < ?1 "
    "UNION ALL SELECT id FROM events WHERE batch_id IS NULL AND ts < ?1"
)

_RECOUNT_SQL = f"""
SELECT b.id, b.status, COUNT(s.guid), COALESCE(SUM(s.attempts > 0), 0),
    COALESCE(SUM(s.guid IS NOT NULL AND s.outcome IS NULL), 0),
    {", ".join(f"COALESCE(SUM(s.outcome IS '{o}'), 0)" for o in Outcome)},
    (SELECT COUNT(*) FROM expected_guids e WHERE e.batch_id = b.id)
FROM batches b LEFT JOIN guid_states s ON s.batch_id = b.id GROUP BY b.id ORDER BY b.seq
"""  # noqa: S608 - built from the Outcome enum only
_KEPT_SQL = (
    f"SELECT batch_id, expected, received, pending, {', '.join(str(o) for o in Outcome)} "  # noqa: S608 - built from the Outcome enum only
    "FROM batch_counts"
)


class RetentionOperations(SqliteWorker):
    """Purging what retention lets go, backing up, and checking the books."""

    async def purge(
        self, *, outbox_age: timedelta, journal_age: timedelta, dry_run: bool = False
    ) -> PurgeCounts:
        now = self._clock()
        cutoffs = (format_utc(now - outbox_age), format_utc(now - journal_age))
        if dry_run:
            outbox, journal = await self._run(self._count_purgeable, *cutoffs)
            return PurgeCounts(outbox=outbox, journal=journal, dry_run=True)
        outbox = journal = 0
        while done := await self._run(self._purge_chunk, _OUTBOX_SQL, "outbox", cutoffs[0]):
            outbox += done
        while done := await self._run(self._purge_chunk, _JOURNAL_SQL, "events", cutoffs[1]):
            journal += done
        if outbox or journal:
            await self._run(self._journal_purge, outbox, journal, cutoffs)
            logs.purged(_LOGGER, outbox, journal, cutoffs)
        return PurgeCounts(outbox=outbox, journal=journal, dry_run=False)

    def _count_purgeable(self, outbox_cutoff: str, journal_cutoff: str) -> tuple[int, int]:
        with self._read() as conn:
            outbox = conn.execute(
                f"SELECT COUNT(*) FROM ({_OUTBOX_SQL})",  # noqa: S608 - constant SQL
                (outbox_cutoff,),
            ).fetchone()[0]
            journal = conn.execute(
                f"SELECT COUNT(*) FROM ({_JOURNAL_SQL})",  # noqa: S608 - constant SQL
                (journal_cutoff,),
            ).fetchone()[0]
        return int(outbox), int(journal)

    def _purge_chunk(self, select: str, table: str, cutoff: str) -> int:
        """Delete up to PURGE_CHUNK rows of `table` that `select` names, in one transaction."""
        with self._write() as conn:
            cursor = conn.execute(
                f"DELETE FROM {table} WHERE id IN ({select} LIMIT ?2)",  # noqa: S608 - constant SQL
                (cutoff, PURGE_CHUNK),
            )
            return cursor.rowcount

    def _journal_purge(self, outbox: int, journal: int, cutoffs: tuple[str, str]) -> None:
        with self._write() as conn:
            db.journal(
                conn,
                self._now(),
                "purged",
                outbox=outbox,
                journal=journal,
                outbox_before=cutoffs[0],
                journal_before=cutoffs[1],
            )

    @on_worker
    def backup(self, target: Path) -> BackupInfo:
        target = target.absolute()
        if target.exists() or target.is_symlink():
            raise BackupError(f"backup {target}: the file exists; name a new file")
        if target in {self.path.absolute(), Path(f"{self.path.absolute()}-wal")}:
            raise BackupError(f"backup {target}: that is the store itself")
        partial = target.with_name(f".{target.name}.partial")
        try:
            partial.unlink(missing_ok=True)
            blocked = self._copy_to(partial)
            # A hard link never replaces a file made meanwhile, as a rename would.
            os.link(partial, target)
        except OSError as exc:
            raise BackupError(f"backup {target}: cannot write it: {exc.strerror}") from exc
        finally:
            with contextlib.suppress(OSError):
                partial.unlink(missing_ok=True)
        size = target.stat().st_size
        _LOGGER.info("backup %s: %d bytes, the store held for %.3f s", target, size, blocked)
        return BackupInfo(path=target, size=size, blocked_s=blocked)

    def _copy_to(self, path: Path) -> float:
        """Copy the database to `path` in one backup step; seconds the worker was held."""
        dest = sqlite3.connect(path, isolation_level=None)
        try:
            started = time.perf_counter()
            self._db.backup(dest)
            blocked = time.perf_counter() - started
            # One self-contained file: restored, it opens in WAL mode again.
            dest.execute("PRAGMA journal_mode=DELETE")
        finally:
            dest.close()
        return blocked

    @on_worker
    def check_books(self) -> list[str]:
        with self._read() as conn:
            return books_problems(conn)


def books_problems(conn: sqlite3.Connection) -> list[str]:
    """Each batch whose books do not balance, one line each (see Store.check_books)."""
    kept = {row[0]: tuple(row[1:]) for row in conn.execute(_KEPT_SQL)}
    return rec.books_problems(kept, conn.execute(_RECOUNT_SQL).fetchall())
