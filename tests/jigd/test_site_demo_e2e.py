"""`jigd demo --stations N` (jigd/demo/site.py): N simulators and N daemons as processes on one
PostgreSQL database (of the session's throwaway cluster) and one batch. The books balance against
the union of the benches' ground truths, with hubs moved from one bench to the other mid-batch
(two pulled mid-upload, two taken off the pallet), as a technician carries them."""

from __future__ import annotations

import asyncio
import csv
import json
from pathlib import Path
from typing import Any

import pytest

from jigd.demo import DemoOptions, SiteRun, StationRun, run_site
from jigd.model import Guid
from jigd.store import open_store
from tests.postgres import PostgresCluster

WAIT_S = 120.0


def test_a_site_needs_a_postgresql_store_and_one_hub_per_station(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="must be PostgreSQL"):
        DemoOptions(stations=2, store_url=f"sqlite:{tmp_path / 'x.sqlite3'}")
    with pytest.raises(ValueError, match="--load-early is for one station"):
        DemoOptions(stations=2, hubs=8, load_early=2)
    with pytest.raises(ValueError, match="give each of the 3 stations one"):
        DemoOptions(stations=3, hubs=2)
    DemoOptions(stations=2, store_url="postgresql://jigd@db/jigd")  # fine


def _truth(station: StationRun) -> dict[str, dict[str, Any]]:
    text = station.paths.ground_truth.read_text("utf-8")
    return {h["guid"]: h for h in json.loads(text)["hubs"]}


async def _uploading(station: StationRun, count: int) -> list[Guid]:
    """`count` GUIDs station's slots are uploading to at once (10 to 90 %)."""
    async with asyncio.timeout(WAIT_S):
        while True:
            status = await station.client.request("GET", "/v1/status")
            busy = [
                Guid.parse(slot["guid"])
                for rig in status["rigs"]
                for slot in rig["slots"]
                if slot["stage"] == "upload" and 10 < slot["progress"] < 90
            ]
            if len(busy) >= count:
                return busy[:count]
            await asyncio.sleep(0.05)


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_two_stations_one_batch_hubs_moved_between_benches_balance(
    tmp_path: Path, postgres_cluster: PostgresCluster
) -> None:
    url = postgres_cluster.new_database()
    moved: list[Guid] = []
    sites: list[SiteRun] = []

    async def move_four(site: SiteRun) -> None:
        sites.append(site)
        one = site.station(1)
        # Two hubs pulled from station 1's slots mid-upload, two from the bottom of its pallet.
        mid_upload = await _uploading(one, 2)
        on_pallet = [g for g in one.guids[-2:] if g not in mid_upload]
        moved.extend([*mid_upload, *on_pallet])
        await site.move(1, 2, moved)

    options = DemoOptions(
        stations=2, hubs=48, rigs=1, faults="light", seed=11, workdir=tmp_path, store_url=url
    )
    lines: list[str] = []
    code = await run_site(options, show=lines.append, during=move_four)
    assert code == 0, "\n".join(lines[-60:])
    assert len(moved) == 4
    [site] = sites
    truth_one, truth_two = _truth(site.station(1)), _truth(site.station(2))
    with (tmp_path / "reports" / "results.csv").open(encoding="utf-8", newline="") as file:
        outcome = {row["guid"]: row["outcome"] for row in csv.DictReader(file)}
    for guid in map(str, moved):
        assert truth_one[guid]["where"] == "moved", truth_one[guid]
        assert truth_two[guid]["moved_from"] == str(site.station(1).paths.sim.resolve())
        if truth_two[guid]["listed"]:
            # Flashed on station 2, as its bench's truth says.
            assert outcome[guid] in ("reflashed", "already_current", "failed"), guid
    # Both stations flashed hubs of the one batch.
    for truth in (truth_one, truth_two):
        assert any(
            outcome.get(g) == "reflashed" and h.get("where") != "moved" for g, h in truth.items()
        )
    async with await open_store(url) as store:
        assert await store.check_books() == []
        assert len(await store.list_batches()) == 1


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_a_station_killed_mid_batch_and_its_hubs_moved_still_balances(
    tmp_path: Path, postgres_cluster: PostgresCluster
) -> None:
    """Station 1's daemon is SIGKILLed mid-upload and restarted while station 2 works on; the
    hubs it was uploading to are then carried to station 2. Relies on the site semantics of the
    store (the lead's part, migration 0006): station 1's restart must recover only its own
    interrupted attempts, not station 2's in progress."""
    url = postgres_cluster.new_database()
    moved: list[Guid] = []

    async def kill_then_move(site: SiteRun) -> None:
        one = site.station(1)
        mid_upload = await _uploading(one, 2)
        await one.kill_daemon()
        moved.extend(mid_upload)
        await site.move(1, 2, moved)
        await one.start_daemon()

    options = DemoOptions(
        stations=2, hubs=48, rigs=1, faults="none", seed=13, workdir=tmp_path, store_url=url
    )
    lines: list[str] = []
    code = await run_site(options, show=lines.append, during=kill_then_move)
    assert code == 0, "\n".join(lines[-60:])
    with (tmp_path / "reports" / "results.csv").open(encoding="utf-8", newline="") as file:
        outcome = {row["guid"]: row["outcome"] for row in csv.DictReader(file)}
    assert len(moved) == 2
    for guid in map(str, moved):
        assert outcome[guid] == "reflashed", (guid, outcome.get(guid))
    async with await open_store(url) as store:
        assert await store.check_books() == []
