"""The store fixtures: `store` is a fresh store of each registered backend (jigd.store.BACKENDS),
so the contract tests (test_contract.py) run once per backend."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from jigd.store import BACKENDS, Store, open_store
from jigd.store.sqlite import sqlite_url
from tests.jigd.store.books import StepClock
from tests.postgres import PostgresCluster

# A URL for a fresh, empty store of each backend, given the test's request and tmp_path. A new
# backend adds its entry here (with a fixture for any server it needs); a backend without one
# fails loudly.
STORE_URLS: dict[str, Callable[[pytest.FixtureRequest, Path], str]] = {
    "sqlite": lambda request, tmp_path: sqlite_url(tmp_path / "var" / "jigd.sqlite3"),
    "postgresql": lambda request, tmp_path: postgres(request).new_database(),
}


def postgres(request: pytest.FixtureRequest) -> PostgresCluster:
    cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
    return cluster


@pytest.fixture(params=sorted(BACKENDS))
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    scheme: str = request.param
    make = STORE_URLS.get(scheme)
    if make is None:
        pytest.fail(f"store backend {scheme!r} is registered but has no test URL in STORE_URLS")
    return make(request, tmp_path)


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    async with await open_store(store_url, clock=StepClock()) as opened:
        yield opened
