"""The station end to end: `jigd run` and `jigsim serve` as separate processes, driven through the
control API exactly as `jigd demo` drives them, with the books checked against the simulator's
ground truth (jigd.demo.check_books) after every run.
"""

from __future__ import annotations

import asyncio
import csv
import json
import random
import re
import signal
from datetime import UTC, datetime
from pathlib import Path

import pytest

from jigd.demo import DemoOptions, DemoRun, Paths
from jigd.demo.workdir import STATION
from jigd.store.sqlite import SqliteStore
from tests.jigd.e2e_helpers import demo as _demo
from tests.jigd.e2e_helpers import no_hub_left_unbootable as _no_hub_left_unbootable
from tests.jigd.e2e_helpers import results as _results
from tests.jigd.e2e_helpers import wait_for_slot as _wait_for_slot
from tests.jigd.plan_helpers import check_plan

pytestmark = pytest.mark.slow  # end to end with real processes: not in `make test-fast`


@pytest.mark.timeout(400)
async def test_96_hubs_on_3_rigs_with_light_faults_and_the_plan_from_their_store(
    tmp_path: Path,
) -> None:
    workdir = tmp_path / "demo"
    code, lines = await _demo(DemoOptions(hubs=96, rigs=3, faults="light", seed=3, workdir=workdir))
    assert code == 0, "\n".join(lines[-60:])
    results = _results(workdir)
    outcomes = {row["outcome"] for row in results}
    assert {"reflashed", "already_current", "not_received"} <= outcomes
    assert {row["rig"] for row in results if row["rig"]} == {"1", "2", "3"}
    summary = json.loads((workdir / "reports" / "summary.json").read_text("utf-8"))
    assert summary["counts"]["not_received"] == len(summary["guids"]["not_received"]) > 0
    _no_hub_left_unbootable(workdir)
    await check_plan(workdir)  # issue 16: the capacity plan from this demo's store


@pytest.mark.timeout(400)
async def test_daemon_killed_five_times_resumes_and_balances(tmp_path: Path) -> None:
    """SIGKILL at five seeded moments, each while an upload is under way; restart each time."""
    workdir = tmp_path / "demo"
    rng = random.Random(20261123)
    kills: list[str] = []

    async def kill_and_restart(run: DemoRun) -> None:
        for _ in range(5):
            await asyncio.sleep(rng.uniform(0.5, 3.0))
            slot = await _wait_for_slot(
                run, lambda s: s["stage"] == "upload" and 10 < s["progress"] < 90
            )
            await run.daemon.kill()
            kills.append(str(slot["guid"]))
            await run.start_daemon()

    options = DemoOptions(hubs=40, rigs=2, faults="light", seed=5, workdir=workdir)
    code, lines = await _demo(options, during=kill_and_restart)
    assert code == 0, "\n".join(lines[-60:])
    assert len(kills) == 5
    _no_hub_left_unbootable(workdir)
    async with await SqliteStore.open(Paths(workdir).store, station=STATION) as store:
        events = await store.journal()
    resumed = [
        int(m.group(1))
        for e in events
        if e.kind == "stage"
        and (m := re.search(r"resumed from offset (\d+)", str(e.data.get("detail")))) is not None
    ]
    interrupted = {str(e.guid) for e in events if e.kind == "interrupted"}
    # Every hub killed mid-upload was marked interrupted at restart and resumed its upload.
    assert set(kills) <= interrupted
    assert sum(1 for offset in resumed if offset > 0) >= 3
    attempts_resumed = [e for e in events if e.kind == "attempt_started" and e.data["resumed"]]
    assert {str(e.guid) for e in attempts_resumed} >= set(kills)


@pytest.mark.timeout(400)
async def test_rig_that_vanishes_and_returns_finishes_while_others_go_on(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    window: dict[str, datetime] = {}

    async def outage(run: DemoRun) -> None:
        # Mid-batch: rig 2 has finished hubs already and rig 1 is uploading.
        await _wait_for_slot(run, lambda s: s["rig"] == 2 and s["state"] == "done")
        await _wait_for_slot(run, lambda s: s["rig"] == 1 and s["stage"] == "upload")
        window["gone"] = datetime.now(UTC)
        run.sim.signal(signal.SIGUSR2)
        await asyncio.sleep(8.0)
        window["back"] = datetime.now(UTC)
        run.sim.signal(signal.SIGUSR2)

    options = DemoOptions(hubs=40, rigs=2, faults="none", seed=9, workdir=workdir)
    code, lines = await _demo(options, during=outage)
    assert code == 0, "\n".join(lines[-60:])
    assert set(window) == {"gone", "back"}
    log = (workdir / "jigd.log").read_text("utf-8")
    assert "rig 1: down" in log
    assert "rig 2: down" not in log
    finished = [
        (row["rig"], datetime.fromisoformat(row["finished"].replace("Z", "+00:00")))
        for row in _results(workdir)
        if row["finished"]
    ]
    during = [rig for rig, at in finished if window["gone"] < at < window["back"]]
    assert "2" in during, "rig 2 must keep finishing hubs while rig 1 is away"
    assert "1" not in during
    assert any(rig == "1" and at > window["back"] for rig, at in finished)
    async with await SqliteStore.open(Paths(workdir).store, station=STATION) as store:
        events = await store.journal()
    assert any(e.kind == "interrupted" and e.rig == 1 for e in events)
    _no_hub_left_unbootable(workdir)


@pytest.mark.timeout(300)
async def test_hub_killed_during_its_swap_that_never_boots_fails_with_no_answer(
    tmp_path: Path,
) -> None:
    """A hub bricked by its reset, and jigd killed while it waits for the boot: after the
    restart the silent hub in that slot is its GUID, recorded `failed` (`no_answer`), so the
    batch completes instead of the slot waiting for a person."""
    workdir = tmp_path / "demo"
    # Seed 13 puts one `bricked_after_reset` hub (and no other fault) on this pallet of 6.
    options = DemoOptions(
        hubs=6, rigs=1, slots=4, faults="light", seed=13, workdir=workdir, image_size=64 * 1024
    )
    killed: list[str] = []

    async def kill_during_boot(run: DemoRun) -> None:
        bricked = {str(h.guid) for h in run.pallet.hubs if h.faults.bricked_after_reset}
        slot = await _wait_for_slot(
            run, lambda s: s["guid"] in bricked and s["stage"] == "await_boot"
        )
        await run.daemon.kill()
        killed.append(str(slot["guid"]))
        await run.start_daemon()

    code, lines = await _demo(options, during=kill_during_boot)
    assert code == 0, "\n".join(lines[-60:])
    _no_hub_left_unbootable(workdir)
    rows = {row["guid"]: row for row in _results(workdir)}
    [guid] = killed
    assert rows[guid]["outcome"] == "failed"
    assert rows[guid]["failure_code"] == "no_answer", rows[guid]
    assert rows[guid]["failure_stage"] == "identify"
    with (workdir / "reports" / "fault-analysis.csv").open(encoding="utf-8", newline="") as file:
        faults = {row["guid"]: row for row in csv.DictReader(file)}
    assert "when that attempt was interrupted" in faults[guid]["detail"], faults[guid]
