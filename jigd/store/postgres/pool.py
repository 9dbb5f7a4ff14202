"""The PostgreSQL store's connections, transactions and schema migrations.

Connections come from one psycopg AsyncConnectionPool in autocommit mode, so each operation
opens its transaction explicitly: `_write()` is one READ COMMITTED transaction (its rows
locked with `SELECT ... FOR UPDATE` / `FOR SHARE` where SQLite relied on `BEGIN IMMEDIATE`
serialising writers), `_read()` one REPEATABLE READ, READ ONLY snapshot. A commit returns once
the server has it on disk (the server's default `synchronous_commit=on`). A write whose caller
is cancelled still finishes (`completes`), as a SQLite job does.

Outbox ids come from a sequence as rows are inserted, not as they commit: writers that queue
events at once (several slots, several stations) commit in parallel, and their ids are not one
commit order. What the outbox's readers rely on is the order of each GUID's events and of each
batch's, and row locks give it. A write inserts a GUID's result only while it holds the GUID's
state row `FOR UPDATE` (a result) or its batch's row `FOR UPDATE` (a close, which every result
waits for: a result takes that row `FOR SHARE` first); it inserts a batch's summary only after
changing the batch's batch_counts row (the triggers of schema 0005 lock it until the commit)
or while holding the batch's row `FOR UPDATE`; and no other write sees a new batch before its
import commits. So two writes that queue events of one GUID or one batch insert them in the
order they commit; and since a write inserts its rows after what it read, an event derived from
another write's committed rows (a summary counting another slot's result) gets a higher id than
that write's. A row that commits after one with a higher id is published when it appears (the
publisher marks rows published, it keeps no place), so nothing is skipped. Alerts, tied to no
GUID state or batch, keep the order of each writer that awaits one before queueing the next (a
station's alert queue); a slot's changes of service, the order of the slot_service row each
upserts.

A write that queues events runs in pipeline mode (`_write(queues=True)`): the statements whose
results it does not read go to the server with the next one it reads, and its last ones with
the COMMIT, so few round trips follow the moment it locks its batch's counts (a result: the
commit's one). In pipeline mode a statement's rowcount is known only after a later fetch: such
a write reads none.

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
from jigd.store.errors import (
    SchemaVersionError,
    StoreClosedError,
    StoreError,
    StoreUnavailableError,
)
from jigd.store.migrations import load_migrations
from jigd.store.postgres.urls import masked_url, scrub

__all__ = [
    "MIGRATIONS",
    "MIGRATION_LOCK",
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
# (0x6A696764_00000002 was the outbox lock of earlier versions, which may still run on a site's
# database during an upgrade: not to be reused.)
MIGRATION_LOCK: Final = 0x6A696764_00000001

# The station a connection writes for (PostgresPool's `station`), set on each new connection:
# every row a station writes names it with `current_setting('jigd.station')` (schema 6,
# docs/architecture.md, "Site"). A session setting: a pooler in front of the server must keep
# sessions (pgbouncer's session mode), as psycopg's prepared statements already need.
STATION_SETTING: Final = "jigd.station"

# A station's slots share these; a store call holds one briefly (bench/README.md, "Site": 2 to 16
# measured alike at the target rate).
POOL_SIZE: Final = 4
CONNECT_TIMEOUT_S: Final = 10
# The pool's reconnection attempts after the server went away back off (1, 2, 4 ... s) and give
# up after this long; the next store call starts them afresh. Kept short, so a server that is
# back is found within seconds rather than after a backoff doubled all through a long outage.
RECONNECT_GIVE_UP_S: Final = 5
# SQLSTATE classes that say the server cannot serve now rather than that the request is wrong:
# connection exception, insufficient resources, operator intervention (shutting down, starting).
_UNAVAILABLE_CLASSES: Final = frozenset({"08", "53", "57"})
_QUERY_CANCELED: Final = "57014"  # class 57, but a statement cancelled, not a server away

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

    def __init__(self, url: str, clock: Clock, station: str = "") -> None:
        self._url = url  # holds the password, if any: never in a message or log
        self.where = masked_url(url)
        self._station = station
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
            reconnect_timeout=RECONNECT_GIVE_UP_S,
            kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT_S},
            configure=self._configure,
            name="jigd-store",
        )
        self._opened = False
        self._closed = False
        self._running: set[asyncio.Future[Any]] = set()
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
        if self._running:  # writes whose callers were cancelled: let them commit
            await asyncio.wait(set(self._running))
        if self._opened:
            await self._pool.close()

    async def _configure(self, conn: Conn) -> None:
        """A new pooled connection writes for this station."""
        await conn.execute("SELECT set_config(%s, %s, false)", (STATION_SETTING, self.station))

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
            if self.station:
                async with self._write() as pooled:
                    await self._adopt(pooled)
        except PoolTimeout as exc:  # before psycopg.Error, of which it is one
            raise StoreError(f"{self.where}: cannot open the connection pool: {exc}") from exc
        except psycopg.Error as exc:
            raise self._error("database error", exc) from exc

    async def _adopt(self, conn: Conn) -> None:
        """Take on, for this station, what the store holds from before it had stations
        (jigd.store.postgres.site overrides this)."""

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
        database: StoreUnavailableError when the server cannot be reached (`unavailable`)."""
        if self._closed or not self._opened:
            raise StoreClosedError(f"{self.where}: the store is closed")
        try:
            async with self._pool.connection() as conn:
                yield conn
        except psycopg.Error as exc:
            if unavailable(exc):
                reason = scrub(str(exc).strip(), self._url) or type(exc).__name__
                raise StoreUnavailableError(
                    f"{self.where}: the database is unreachable ({reason})"
                ) from exc
            raise self._error("database error", exc) from exc

    @asynccontextmanager
    async def _write(self, *, queues: bool = False) -> AsyncIterator[Conn]:
        """One write transaction, rolled back if anything in it raises; `queues`: it will add
        to the outbox, so it runs in pipeline mode (see the module's docstring)."""
        async with self._connection() as conn:
            if not queues:
                async with conn.transaction():
                    yield conn
                return
            async with conn.pipeline(), conn.transaction():
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


def unavailable(exc: psycopg.Error) -> bool:
    """Whether `exc` says the server cannot be reached or cannot serve now (refused or lost
    connection, no pooled connection in time, shutting down or starting, out of resources),
    rather than that something in the request failed."""
    if isinstance(exc, PoolTimeout):
        return True
    if not isinstance(exc, psycopg.OperationalError):
        return False
    state = exc.sqlstate
    return state is None or (state[:2] in _UNAVAILABLE_CLASSES and state != _QUERY_CANCELED)


async def _existing_version(conn: Conn) -> int:
    """The schema version, read without creating anything: 0 for a database jigd never used."""
    row = await fetch_one(conn, "SELECT to_regclass('schema_migrations') IS NOT NULL")
    return await _version(conn) if row is not None and row[0] else 0


async def _version(conn: Conn) -> int:
    row = await fetch_one(conn, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
    return 0 if row is None else int(row[0])
