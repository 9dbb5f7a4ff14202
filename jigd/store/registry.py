"""The store factory: a store URL's scheme picks the backend that opens it.

`open_store("sqlite:///var/lib/jigd/jigd.sqlite3")`, `open_store("postgresql://jigd@db/jigd")`.
A backend is one module implementing the contract (jigd.store.contract.Store) plus one entry
in BACKENDS (docs/architecture.md, "Adding a store backend"); another spelling of a scheme is
an entry of ALIASES, not a second backend (the contract tests run once per backend).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from jigd.store import postgres, sqlite
from jigd.store.contract import Clock, Store, utc_now
from jigd.store.errors import StoreUrlError

__all__ = [
    "ALIASES",
    "BACKENDS",
    "Backend",
    "backend_for",
    "open_store",
    "resolve_store_url",
    "shown_url",
]


@dataclass(frozen=True, slots=True)
class Backend:
    """How to open a store URL of one scheme, and how to resolve a relative location in one."""

    open: Callable[[str, Clock, str], Awaitable[Store]]  # (url, clock, station)
    resolve: Callable[[str, Path], str]  # (url, base directory) -> url; checks the URL


async def _open_sqlite(url: str, clock: Clock, station: str) -> Store:
    return await sqlite.open_url(url, clock=clock, station=station)


async def _open_postgres(url: str, clock: Clock, station: str) -> Store:
    return await postgres.open_url(url, clock=clock, station=station)


BACKENDS: dict[str, Backend] = {
    postgres.SCHEME: Backend(open=_open_postgres, resolve=postgres.resolve_url),
    sqlite.SCHEME: Backend(open=_open_sqlite, resolve=sqlite.resolve_url),
}
# Other spellings of a backend's scheme: alias -> the scheme in BACKENDS.
ALIASES: dict[str, str] = dict.fromkeys(postgres.ALIASES, postgres.SCHEME)


def shown_url(url: str) -> str:
    """The URL as messages and logs may show it: any password in it masked."""
    return postgres.masked_url(url) if "@" in url or "password" in url else url


def backend_for(url: str) -> Backend:
    """The backend of the URL's scheme; StoreUrlError naming the URL otherwise."""
    try:
        scheme = urllib.parse.urlsplit(url).scheme
    except ValueError as exc:  # brackets around something that is not an IPv6 address
        raise StoreUrlError(f"store URL {shown_url(url)!r} is not a URL: {exc}") from None
    backend = BACKENDS.get(ALIASES.get(scheme, scheme))
    if backend is None:
        known = ", ".join(f"{name}:" for name in sorted(BACKENDS))
        raise StoreUrlError(
            f"store URL {shown_url(url)!r}: no store backend for scheme {scheme or '(none)'!r}; "
            f"known: {known}"
        )
    return backend


def resolve_store_url(url: str, base: Path) -> str:
    """The URL checked, with a relative location made absolute against `base` (the directory of
    the configuration file); StoreUrlError if no backend takes it."""
    return backend_for(url).resolve(url, base)


async def open_store(url: str, *, clock: Clock = utc_now, station: str = "") -> Store:
    """Open (creating and migrating as needed) the store the URL names, for `station` (the
    daemon's; '' for a tool that only reads or maintains the store)."""
    return await backend_for(url).open(url, clock, station)
