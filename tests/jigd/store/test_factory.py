"""The store factory: a URL's scheme picks the backend; sqlite URLs name a file (postgresql URLs:
test_postgres.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from jigd.store import BACKENDS, Store, StoreError, StoreUrlError, open_store, resolve_store_url
from jigd.store.registry import ALIASES, backend_for
from jigd.store.sqlite import SqliteStore, sqlite_path, sqlite_url


@pytest.mark.parametrize(
    "url",
    ["mysql://db.example/jigd", "/var/lib/jigd/jigd.sqlite3", "SQLITE3:///x", ""],
)
async def test_a_url_no_backend_takes_is_refused_naming_it(url: str) -> None:
    with pytest.raises(StoreUrlError, match="no store backend for scheme") as caught:
        await open_store(url)
    assert repr(url) in str(caught.value)
    assert "known: postgresql:, sqlite:" in str(caught.value)
    assert isinstance(caught.value, StoreError)
    with pytest.raises(StoreUrlError, match="no store backend"):
        resolve_store_url(url, Path("/etc/jigd"))


def test_sqlite_and_postgresql_are_registered() -> None:
    assert sorted(BACKENDS) == ["postgresql", "sqlite"]
    assert ALIASES == {"postgres": "postgresql"}
    assert backend_for("postgres://db/jigd") is BACKENDS["postgresql"]


def test_a_password_in_a_url_no_backend_takes_is_masked() -> None:
    with pytest.raises(StoreUrlError, match="no store backend") as caught:
        resolve_store_url("mysql://jigd:s3cret@db/jigd", Path("/etc/jigd"))
    assert "s3cret" not in str(caught.value)
    assert "mysql://jigd:***@db/jigd" in str(caught.value)


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///var/lib/jigd/jigd.sqlite3", Path("/var/lib/jigd/jigd.sqlite3")),
        ("sqlite:state/jigd.sqlite3", Path("state/jigd.sqlite3")),
        ("sqlite:///srv/a%20b/jigd.sqlite3", Path("/srv/a b/jigd.sqlite3")),
    ],
)
def test_sqlite_urls_name_a_file(url: str, path: Path) -> None:
    assert sqlite_path(url) == path
    assert sqlite_url(path) == url


@pytest.mark.parametrize(
    "url",
    [
        "sqlite://host/jigd.sqlite3",  # a host
        "sqlite://jigd.sqlite3",  # a relative path after //: a host, in fact
        "sqlite:",
        "sqlite:///",
        "sqlite:///x.sqlite3?mode=ro",
        "sqlite:///x.sqlite3#frag",
    ],
)
def test_sqlite_urls_without_a_file_are_refused(url: str) -> None:
    with pytest.raises(StoreUrlError, match=r"store URL .*sqlite:///absolute/path"):
        sqlite_path(url)


def test_relative_sqlite_urls_resolve_against_a_base() -> None:
    base = Path("/etc/jigd")
    assert resolve_store_url("sqlite:state/j.sqlite3", base) == "sqlite:///etc/jigd/state/j.sqlite3"
    assert resolve_store_url("sqlite:///srv/j.sqlite3", base) == "sqlite:///srv/j.sqlite3"


async def test_open_store_opens_the_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "var" / "jigd.sqlite3"
    async with await open_store(sqlite_url(path)) as store:
        assert isinstance(store, SqliteStore)
        assert isinstance(store, Store)
        assert store.path == path
        assert await store.list_batches() == []
    assert await asyncio.to_thread(path.is_file)
