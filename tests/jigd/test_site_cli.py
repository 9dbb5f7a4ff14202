"""`jigctl station list` and `jigctl station release`: read from the store the config names,
two stations sharing one store (docs/architecture.md, "Site")."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from jigd.ctl import main as jigctl
from jigd.store import GuidStatus, open_store
from jigd.store.sqlite import sqlite_url
from tests.jigd.store.books import T0, guid, rows


def _config(tmp_path: Path, station: str, store: Path) -> Path:
    config = tmp_path / f"{station}.toml"
    config.write_text(
        f'station = "{station}"\ncatalog_dir = "{tmp_path}"\nstore_path = "{store}"\n',
        encoding="utf-8",
    )
    return config


async def _station_a_holds_a_guid(path: Path) -> str:
    async with await open_store(sqlite_url(path), station="A") as a:
        batch = await a.import_batch(rows(1, 2), "WO", "P", "m.csv")
        await a.heartbeat('[{"state": "busy"}]', host="bench-a", pid=7, started_at=T0)
        await a.begin_attempt(batch, guid(1), 1, 1)
    return batch


async def _state(path: Path, batch: str) -> GuidStatus:
    async with await open_store(sqlite_url(path), station="B") as b:
        return (await b.guid_state(batch, guid(1))).status


def test_a_station_heard_from_recently_is_not_released(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "site.sqlite3"
    batch = asyncio.run(_station_a_holds_a_guid(store))
    b = str(_config(tmp_path, "B", store))
    assert jigctl(["station", "list", "--config", b]) == 0
    listed = capsys.readouterr().out
    assert "A on bench-a pid 7: heard from" in listed
    assert "1 slot(s): 1 busy" in listed
    assert jigctl(["station", "release", "A", "--config", b]) == 2
    assert "was last heard from" in capsys.readouterr().out
    assert asyncio.run(_state(store, batch)) is GuidStatus.IN_PROGRESS

    assert jigctl(["station", "release", "A", "--quiet-for", "0", "--config", b]) == 0
    out = capsys.readouterr().out
    assert out.startswith("station A released by B: 1 GUID(s) let go\n")
    assert f"{batch} {guid(1)}" in out
    assert asyncio.run(_state(store, batch)) is GuidStatus.INTERRUPTED
