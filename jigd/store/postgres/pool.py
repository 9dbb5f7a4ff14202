"""The PostgreSQL store's connections, transactions and schema migrations.

Connections come from one psycopg AsyncConnectionPool in autocommit mode, so each operation
opens its transaction explicitly: `_write()` is one READ COMMITTED transaction (its rows
locked with `SELECT ... FOR UPDATE` / `FOR SHARE` where SQLite relied on `BEGIN IMMEDIATE`
serialising writers), `_read()` one REPEATABLE READ, READ ONLY snapshot. A commit returns once
the server has it on disk (the server's default `synchronous_commit=on`). A write whose caller
is cancelled still finishes (`completes`), as a SQLite job does.

The events a write queues take the transaction-level advisory lock OUTBOX_LOCK before anything
else, so writers that queue events commit one at a time: outbox ids, given out under that lock,
are then commit order, which the publisher relies on, even with several stations on one
database.

The schema is the numbered SQL files of jigd/store/sql/postgres (the same versions, with the
same meaning, as jigd/store/sql/sqlite), each applied in one transaction with its row in
schema_migrations, under the advisory lock MIGRATION_LOCK: stations starting together migrate
once.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Concatenate, Final, ParamSpec, TypeAlias, TypeVar

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from jigd.events import format_utc
from jigd.store.contract import Clock
from jigd.store.errors import SchemaVersionError, StoreClosedError, StoreError
from jigd.store.migrations import load_migrations
from jigd.store.postgres.urls import masked_url, scrub

__all__ = [
    "MIGRATIONS",
    "MIGRATION_LOCK",
    "OUTBOX_LOCK",
    "Conn",
    "PostgresPool",
    "completes",
    "fetch_all",
    "fetch_one",
    "notifies",
]

_LOGGER = logging.getLogger(__package__)  # one logger for the backend: jigd.store.postgres

_P = ParamSpec("_P")
_T = TypeVar("_T")
_W = TypeVar("_W", bound="PostgresPool")

Conn: TypeAlias = psycopg.AsyncConnection[tuple[Any, ...]]
Params: TypeAlias = Sequence[Any] | Mapping[str, Any]

# Numbered migrations: MIGRATIONS[0] makes version 1, and so on.
MIGRATIONS: tuple[str, ...] = load_migrations("sql/postgres")

# Advisory lock keys (any bigint, the same in every jigd): "jigd" in ASCII, then a number.
MIGRATION_LOCK: Final = 0x6A696764_00000001
OUTBOX_LOCK: Final = 0x6A696764_00000002

POOL_SIZE: Final = 4  # a station's slots share these; a store call holds one briefly
CONNECT_TIMEOUT_S: Final = 10

_BOOTSTRAP = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer PRIMARY KEY,
    applied_at  text NOT NULL
)
"""


async def fetch_all(conn: Conn, query: str, params: Params = ()) -> list[tuple[Any, ...]]:
    cursor = await conn.execute(query, params)
    return await cursor.fetchall()


async def fetch_one(conn: Conn, query: str, params: Params = ()) -> tuple[Any, ...] | None:
    cursor = await conn.execute(query, params)
    return await cursor.fetchone()


def completes(
    operation: Callable[Concatenate[_W, _P], Coroutine[Any, Any, _T]],
) -> Callable[Concatenate[_W, _P], Coroutine[Any, Any, _T]]:
    """A write that finishes even if its caller is cancelled (the contract: re-reading tells
    whether it happened); close() waits for it."""

    @functools.wraps(operation)
    async def shielded(self: _W, /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        task = asyncio.ensure_future(operation(self, *args, **kwargs))
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        return await asyncio.shield(task)

    return shielded


def notifies(
    operation: Callable[Concatenate[_W, _P], Coroutine[Any, Any, _T]],
) -> Callable[Concatenate[_W, _P], Coroutine[Any, Any, _T]]:
    """An operation that queues events: `outbox_changed` is set once it has committed."""

    @functools.wraps(operation)
    async def notifying(self: _W, /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        value = await operation(self, *args, **kwargs)
        self.outbox_changed.set()
        return value

    return notifying


class PostgresPool:
    """One PostgreSQL database and a pool of connections to it; the base of PostgresStore.

    `where` names the database in messages: the URL with any password masked.
    """

    def __init__(self, url: str, clock: Clock) -> None:
        self._url = url  # holds the password, if any: never in a message or log
        self.where = masked_url(url)
        self._clock = clock
        self._pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
            url,
            min_size=1,
            max_size=POOL_SIZE,
            open=False,
            # A connection the server dropped (a restart, a failover) is replaced when taken
            # from the pool, not found broken by the store call that takes it.
            check=AsyncConnectionPool.check_connection,
            timeout=CONNECT_TIMEOUT_S,  # a call waits this long for a server that is down
            kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT_S},
            name="jigd-store",
        )
        self._opened = False
        self._closed = False
        self._running: set[asyncio.Future[Any]] = set()
        self._outbox_changed = asyncio.Event()

    @property
    def outbox_changed(self) -> asyncio.Event:
        return self._outbox_changed

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._running:  # writes whose callers were cancelled: let them commit
            await asyncio.wait(set(self._running))
        if self._opened:
            await self._pool.close()

    def _now(self) -> str:
        return format_utc(self._clock())

    def _error(self, what: str, exc: psycopg.Error) -> StoreError:
        return StoreError(f"{self.where}: {what}: {scrub(str(exc).strip(), self._url)}")

    # --- opening ------------------------------------------------------------------------------

    async def _open(self, migrations: Sequence[str]) -> None:
        """Connect once (so a wrong URL or a server down fails with libpq's reason), migrate,
        then open the pool."""
        try:
            conn = await psycopg.AsyncConnection.connect(
                self._url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S
            )
        except psycopg.Error as exc:
            raise self._error("cannot connect", exc) from None
        try:
            async with conn:
                await self._migrate(conn, migrations)
            self._opened = True  # from here on, close() closes the pool, even half open
            await self._pool.open(wait=True, timeout=CONNECT_TIMEOUT_S)
        except PoolTimeout as exc:  # before psycopg.Error, of which it is one
            raise StoreError(f"{self.where}: cannot open the connection pool: {exc}") from exc
        except psycopg.Error as exc:
            raise self._error("database error", exc) from exc

    async def _migrate(self, conn: Conn, migrations: Sequence[str]) -> None:
        """Apply the versions the database lacks, one transaction each, under MIGRATION_LOCK;
        SchemaVersionError if it is newer than `migrations`. A database already at this
        version is only read, so a station's role needs no right to create anything
        (docs/install.md, "A PostgreSQL store")."""
        current = await _existing_version(conn)
        if current > len(migrations):
            raise SchemaVersionError(self.where, current, len(migrations))
        if current == len(migrations):
            return
        try:
            await self._migrate_from(conn, migrations)
        except psycopg.errors.InsufficientPrivilege as exc:
            raise StoreError(
                f"{self.where}: the schema is at version {current} and this jigd needs "
                f"{len(migrations)}, but this role may not change it "
                f"({scrub(str(exc).strip().splitlines()[0], self._url)}): run `jigd store "
                "migrate` with the URL of the role that owns the database (docs/install.md, "
                '"A PostgreSQL store")'
            ) from None

    async def _migrate_from(self, conn: Conn, migrations: Sequence[str]) -> None:
        """Apply the missing versions, reading the version again under the lock each time:
        another station may be migrating the same database."""
        while True:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
                await conn.execute(_BOOTSTRAP)
                current = await _version(conn)
                if current > len(migrations):
                    raise SchemaVersionError(self.where, current, len(migrations))
                if current == len(migrations):
                    return
                await self._apply(conn, current + 1, migrations[current])

    async def _apply(self, conn: Conn, version: int, script: str) -> None:
        _LOGGER.info("%s: migrating the schema to version %d", self.where, version)
        try:
            async with conn.transaction():  # a savepoint: the failure message is ours
                await conn.execute(script)  # no parameters: sent as written, several statements
                await conn.execute(
                    "INSERT INTO schema_migrations (version, applied_at) VALUES (%s, %s)",
                    (version, self._now()),
                )
        except psycopg.Error as exc:
            raise StoreError(
                f"{self.where}: migration to schema version {version} failed and was rolled "
                f"back (the database stays at version {version - 1}): "
                f"{scrub(str(exc).strip(), self._url)}"
            ) from exc

    # --- transactions -------------------------------------------------------------------------

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Conn]:
        """A pooled connection; psycopg errors in the block become StoreError naming the
        database."""
        if self._closed or not self._opened:
            raise StoreClosedError(f"{self.where}: the store is closed")
        try:
            async with self._pool.connection() as conn:
                yield conn
        except psycopg.Error as exc:
            raise self._error("database error", exc) from exc

    @asynccontextmanager
    async def _write(self, *, queues: bool = False) -> AsyncIterator[Conn]:
        """One write transaction, rolled back if anything in it raises; `queues`: it will add
        to the outbox, so it takes OUTBOX_LOCK first (see the module's docstring)."""
        async with self._connection() as conn, conn.transaction():
            if queues:
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (OUTBOX_LOCK,))
            yield conn

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[Conn]:
        """One read-only transaction: several queries see the same snapshot."""
        async with self._connection() as conn, conn.transaction():
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield conn

    async def schema_version(self) -> int:
        async with self._read() as conn:
            return await _version(conn)


async def _existing_version(conn: Conn) -> int:
    """The schema version, read without creating anything: 0 for a database jigd never used."""
    row = await fetch_one(conn, "SELECT to_regclass('schema_migrations') IS NOT NULL")
    return await _version(conn) if row is not None and row[0] else 0


async def _version(conn: Conn) -> int:
    row = await fetch_one(conn, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
    return 0 if row is None else int(row[0])
