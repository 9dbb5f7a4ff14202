"""The PostgreSQL store: the site backend, a database on a server, safe for several processes
to write at once (docs/architecture.md, "Store", says what the contract does not yet give
several stations on one database).

`PostgresStore` implements the store contract (jigd.store.contract.Store) on a PostgreSQL
database through psycopg 3's async connection pool; open it with
`open_store("postgresql://jigd@db.example/jigd")` or `PostgresStore.open(url)`. The modules:
`urls` (the URL form, password masking), `pool` (connections, transactions, migrations),
`rows` (shared reads and writes), `batches`, `attempts`, `outbox`, `times`, `retention` and
`service` (the operations). The schema is the SQL files of jigd/store/sql/postgres, versioned
as the SQLite ones.

Store URLs: libpq's `postgresql://user[:password]@host[:port]/database[?options]` (or
`postgres://`); a socket directory as `postgresql:///database?host=/run/postgresql`. A password
is better kept out of the URL (libpq reads ~/.pgpass and PGPASSWORD); one in it is masked in
every message.
"""

from __future__ import annotations

from collections.abc import Sequence

from jigd.store.contract import Clock, Store, utc_now
from jigd.store.postgres.attempts import AttemptOperations
from jigd.store.postgres.batches import BatchOperations
from jigd.store.postgres.outbox import OutboxOperations
from jigd.store.postgres.pool import MIGRATIONS
from jigd.store.postgres.retention import RetentionOperations
from jigd.store.postgres.service import ServiceOperations
from jigd.store.postgres.site import SiteOperations
from jigd.store.postgres.times import TimesOperations
from jigd.store.postgres.urls import ALIASES, SCHEME, masked_url, resolve_url, server_of

__all__ = [
    "ALIASES",
    "MIGRATIONS",
    "SCHEME",
    "PostgresStore",
    "masked_url",
    "open_url",
    "resolve_url",
]


class PostgresStore(
    BatchOperations,
    AttemptOperations,
    OutboxOperations,
    TimesOperations,
    RetentionOperations,
    ServiceOperations,
    SiteOperations,
    Store,
):
    """The station's store in a PostgreSQL database; create with
    `await PostgresStore.open(url)`."""

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        clock: Clock = utc_now,
        station: str = "",
        migrations: Sequence[str] = MIGRATIONS,
    ) -> PostgresStore:
        """Connect and migrate to the newest schema version; StoreUrlError for a URL that
        names no server or database, StoreError naming the server if it cannot be reached,
        SchemaVersionError if the database was written by a newer jigd."""
        server_of(url)
        store = cls(url, clock, station)
        try:
            await store._open(migrations)
        except BaseException:
            await store.close()
            raise
        return store


async def open_url(url: str, *, clock: Clock = utc_now, station: str = "") -> PostgresStore:
    """Open the store a `postgresql:` URL names, for `station`."""
    return await PostgresStore.open(url, clock=clock, station=station)
