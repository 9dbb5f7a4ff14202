"""Issue 14, defect 2: hubs loaded before their batch is imported. They are rejected
(`not_in_batch`), then listed as set aside once the batch is imported (with a `hub_set_aside`
alert each), re-inserted when told, and flashed: no GUID on the bench is lost to `not_received`.
Before the fix they stayed rejected and the batch closed with them `not_received`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jigd.demo import DemoOptions, Paths
from jigd.demo.workdir import STATION
from jigd.store.sqlite import SqliteStore
from tests.jigd.e2e_helpers import demo, results

pytestmark = pytest.mark.slow  # end to end with real processes: not in `make test-fast`


@pytest.mark.timeout(240)
async def test_hubs_loaded_before_the_import_are_set_aside_reinserted_and_flashed(
    tmp_path: Path,
) -> None:
    workdir = tmp_path / "demo"
    options = DemoOptions(
        workdir=workdir,
        hubs=16,
        rigs=1,
        faults="none",
        live=False,
        image_size=32 * 1024,
        handling_s=0.05,
        load_early=4,
    )
    code, lines = await demo(options)
    assert code == 0, "\n".join(lines[-40:])
    assert any("re-inserting them" in line for line in lines), lines
    paths = Paths(workdir)
    pallet = json.loads(paths.pallet.read_text("utf-8"))
    missing = {row["guid"] for row in pallet["missing"]}
    on_bench = {hub["guid"] for hub in pallet["hubs"] if hub["listed"]}
    outcome = {row["guid"]: row["outcome"] for row in results(workdir)}
    assert {g for g, o in outcome.items() if o == "not_received"} == missing
    assert {outcome[g] for g in on_bench} <= {"reflashed", "already_current"}
    summary = json.loads((paths.reports / "summary.json").read_text("utf-8"))
    assert summary["set_aside"] == []
    assert sum(summary["counts"].values()) == summary["expected"]
    async with await SqliteStore.open(paths.store, station=STATION) as store:
        early = {str(r.guid) for r in await store.list_rejected()} & on_bench
        aside = [e for e in await store.journal() if e.kind == "set_aside"]
        alerts = [m.data() for m in await store.outbox_pending() if m.kind == "alert"]
    assert len(early) >= options.load_early
    assert {str(e.guid) for e in aside} == early
    assert {a["guid"] for a in alerts if a["kind"] == "hub_set_aside"} == early
