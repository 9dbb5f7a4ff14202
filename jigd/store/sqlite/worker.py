"""The SQLite store's connection, its worker thread and its schema migrations.

WAL journal, `synchronous=FULL` (a commit is on disk when it returns), foreign keys on. All
database work runs on one dedicated worker thread that owns the connection, so the event loop
never blocks on disk. An operation is written once, as a plain method for that thread, and
`on_worker` makes it the async method of the contract: one job on the thread, whose write is
one `BEGIN IMMEDIATE` transaction. A job whose caller is cancelled still finishes.

The schema is the numbered SQL files of jigd/store/sql/sqlite (`0001_initial.sql`, ...),
applied in order, each in one transaction with its row in schema_migrations.

The connection knows the station it writes for: the SQL function `jigd_station()`, defined on
the connection only (not in the schema, so any SQLite tool still reads the file), gives its
name to every row a station writes (schema 6, docs/architecture.md, "Site").
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
from collections.abc import Callable, Coroutine, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from jigd.events import format_utc
from jigd.store.contract import Clock
from jigd.store.errors import SchemaVersionError, StoreClosedError, StoreError
from jigd.store.migrations import load_migrations

__all__ = ["MIGRATIONS", "SqliteWorker", "load_migrations", "notifies", "on_worker"]

_LOGGER = logging.getLogger(__package__)  # one logger for the backend: jigd.store.sqlite

_P = ParamSpec("_P")
_T = TypeVar("_T")
_W = TypeVar("_W", bound="SqliteWorker")

BUSY_TIMEOUT_MS = 5000

_BOOTSTRAP = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     INTEGER PRIMARY KEY,
    applied_at  TEXT NOT NULL
) STRICT;
"""


# Numbered migrations: MIGRATIONS[0] makes version 1, and so on.
MIGRATIONS: tuple[str, ...] = load_migrations("sql/sqlite")


def on_worker(
    body: Callable[Concatenate[_W, _P], _T],
) -> Callable[Concatenate[_W, _P], Coroutine[Any, Any, _T]]:
    """The store operation `body`, written for the worker thread, as an async method that runs
    it there as one job (sqlite3 errors become StoreError naming the file)."""

    @functools.wraps(body)
    async def operation(self: _W, /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        return await self._run(body, self, *args, **kwargs)

    return operation


def notifies(
    operation: Callable[Concatenate[_W, _P], Coroutine[Any, Any, _T]],
) -> Callable[Concatenate[_W, _P], Coroutine[Any, Any, _T]]:
    """An operation that queues events: `outbox_changed` is set (on the event loop) once it has
    committed."""

    @functools.wraps(operation)
    async def notifying(self: _W, /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        value = await operation(self, *args, **kwargs)
        self.outbox_changed.set()
        return value

    return notifying


class SqliteWorker:
    """One SQLite file and the thread that owns its connection; the base of SqliteStore."""

    def __init__(self, path: Path, clock: Clock, station: str = "") -> None:
        self.path = path
        self._clock = clock
        self._station = station
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jigd-store")
        self._conn: sqlite3.Connection | None = None  # touched only on the worker thread
        self._closed = False
        self._outbox_changed = asyncio.Event()

    @property
    def station(self) -> str:
        return self._station

    @property
    def outbox_changed(self) -> asyncio.Event:
        return self._outbox_changed

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._close_connection)
        finally:
            # The worker is idle now (its last job just finished), so this join is immediate.
            self._executor.shutdown(wait=True)

    async def _run(self, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """Run `fn` on the worker thread."""
        if self._closed:
            raise StoreClosedError(f"{self.path}: the store is closed")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(
                self._executor, functools.partial(fn, *args, **kwargs)
            )
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: database error: {exc}") from exc

    # --- on the worker thread -----------------------------------------------------------------

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreClosedError(f"{self.path}: the store is not open")
        return self._conn

    def _now(self) -> str:
        return format_utc(self._clock())

    def _connect(self, migrations: Sequence[str]) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"{self.path}: cannot create the store's directory: {exc.strerror}"
            ) from exc
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, one transaction per job.
        conn = sqlite3.connect(self.path, isolation_level=None)
        self._conn = conn
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(
                f"{self.path}: SQLite cannot use WAL journal mode here (got {mode!r}); "
                "put the store on a local filesystem"
            )
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS:d}")
        station = self._station
        conn.create_function("jigd_station", 0, lambda: station, deterministic=True)
        self._migrate(conn, migrations)
        if station:
            with self._write() as written:
                self._adopt(written)

    def _adopt(self, conn: sqlite3.Connection) -> None:
        """Take on, for this station, what the store holds from before it had stations
        (jigd.store.sqlite.site overrides this)."""

    def _migrate(self, conn: sqlite3.Connection, migrations: Sequence[str]) -> None:
        conn.executescript(_BOOTSTRAP)
        current = _version(conn)
        if current > len(migrations):
            raise SchemaVersionError(str(self.path), current, len(migrations))
        for version in range(current + 1, len(migrations) + 1):
            _LOGGER.info("%s: migrating the schema to version %d", self.path, version)
            try:
                # executescript runs the script's statements inside our open transaction; it
                # would commit a pending transaction first, so BEGIN is part of the script.
                conn.executescript("BEGIN IMMEDIATE;\n" + migrations[version - 1])
                conn.execute(
                    "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
                    (version, self._now()),
                )
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise StoreError(
                    f"{self.path}: migration to schema version {version} failed and was rolled "
                    f"back (the database stays at version {version - 1}): {exc}"
                ) from exc

    def _close_connection(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; rolled back if anything in it raises."""
        conn = self._db
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """One read transaction: several queries see the same snapshot."""
        conn = self._db
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    @on_worker
    def schema_version(self) -> int:
        return _version(self._db)


def _version(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()
    return int(row[0])
