"""The SQLite store: the embedded default backend of a station (docs/architecture.md, "Store").

`SqliteStore` implements the store contract (jigd.store.contract.Store) on one SQLite file;
open it with `open_store("sqlite:///var/lib/jigd/jigd.sqlite3")` or `SqliteStore.open(path)`.
The modules: `worker` (connection, worker thread, migrations), `rows` (shared reads and writes),
`batches`, `attempts`, `outbox`, `times`, `retention` and `service` (the operations); `check`
checks a store file (a backup) without opening it as a store. The schema is the SQL files of
jigd/store/sql/sqlite.

Store URLs: `sqlite:///abs/path` (an absolute path) or `sqlite:relative/path` (relative to the
configuration file's directory when it comes from one, else to the working directory).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Sequence
from pathlib import Path

from jigd.store.contract import Clock, Store, utc_now
from jigd.store.errors import StoreUrlError
from jigd.store.sqlite.attempts import AttemptOperations
from jigd.store.sqlite.batches import BatchOperations
from jigd.store.sqlite.outbox import OutboxOperations
from jigd.store.sqlite.retention import RetentionOperations
from jigd.store.sqlite.service import ServiceOperations
from jigd.store.sqlite.site import SiteOperations
from jigd.store.sqlite.times import TimesOperations
from jigd.store.sqlite.worker import MIGRATIONS

__all__ = [
    "MIGRATIONS",
    "SCHEME",
    "Clock",
    "SqliteStore",
    "open_url",
    "resolve_url",
    "sqlite_path",
    "sqlite_url",
    "utc_now",
]

SCHEME = "sqlite"


class SqliteStore(
    BatchOperations,
    AttemptOperations,
    OutboxOperations,
    TimesOperations,
    RetentionOperations,
    ServiceOperations,
    SiteOperations,
    Store,
):
    """The station's store on one SQLite file; create with `await SqliteStore.open(path)`."""

    @classmethod
    async def open(
        cls,
        path: Path,
        *,
        clock: Clock = utc_now,
        station: str = "",
        migrations: Sequence[str] = MIGRATIONS,
    ) -> SqliteStore:
        """Open (creating directories and file) and migrate to the newest schema version;
        SchemaVersionError if the file was written by a newer jigd."""
        store = cls(path, clock, station)
        try:
            await store._run(store._connect, migrations)
        except BaseException:
            await store.close()
            raise
        return store


def sqlite_path(url: str) -> Path:
    """The file a `sqlite:` URL names (relative as written); StoreUrlError if it names none."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != SCHEME:
        raise StoreUrlError(f"store URL {url!r} is not a {SCHEME}: URL")
    if parts.netloc or parts.query or parts.fragment or not parts.path.strip("/"):
        raise StoreUrlError(
            f"store URL {url!r}: write sqlite:///absolute/path.sqlite3 or "
            "sqlite:relative/path.sqlite3 (no host, query or fragment)"
        )
    if url.startswith(f"{SCHEME}://") and not parts.path.startswith("/"):
        raise StoreUrlError(f"store URL {url!r}: after sqlite:// comes an absolute path")
    return Path(urllib.parse.unquote(parts.path))


def sqlite_url(path: Path) -> str:
    """The `sqlite:` URL of a path (`sqlite:///abs` or `sqlite:rel`)."""
    text = urllib.parse.quote(str(path))
    return f"{SCHEME}://{text}" if path.is_absolute() else f"{SCHEME}:{text}"


def resolve_url(url: str, base: Path) -> str:
    """The URL with a relative path made absolute against `base`."""
    path = sqlite_path(url)
    return url if path.is_absolute() else sqlite_url(base / path)


async def open_url(url: str, *, clock: Clock = utc_now, station: str = "") -> SqliteStore:
    """Open the store a `sqlite:` URL names, for `station`."""
    return await SqliteStore.open(sqlite_path(url), clock=clock, station=station)
