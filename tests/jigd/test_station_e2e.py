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
from typing import Any

import pytest

from jigd.demo import DemoOptions, DemoRun, Paths, run_demo
from jigd.store.sqlite import SqliteStore

WAIT_S = 60.0


def _results(workdir: Path) -> list[dict[str, str]]:
    with (workdir / "reports" / "results.csv").open(encoding="utf-8", newline="") as file:
        return list(csv.DictReader(file))


def _truth(workdir: Path) -> dict[str, Any]:
    truth: dict[str, Any] = json.loads((workdir / "ground-truth.json").read_text("utf-8"))
    return truth


def _no_hub_left_unbootable(workdir: Path) -> None:
    for hub in _truth(workdir)["hubs"]:
        if hub["bricked"]:
            assert "bricked_after_reset" in hub["faults"], hub
        assert not hub["swap_in_progress"], hub


async def _demo(options: DemoOptions, during: Any = None) -> tuple[int, list[str]]:
    lines: list[str] = []
    code = await run_demo(options, show=lines.append, during=during)
    return code, lines


async def _wait_for_slot(run: DemoRun, predicate: Any, timeout_s: float = WAIT_S) -> dict[str, Any]:
    """Poll the control API until a slot matches `predicate`; return it."""
    async with asyncio.timeout(timeout_s):
        while True:
            status = await run.client.request("GET", "/v1/status")
            for rig in status["rigs"]:
                for slot in rig["slots"]:
                    if predicate(slot):
                        return dict(slot)
            await asyncio.sleep(0.05)


@pytest.mark.timeout(400)
async def test_96_hubs_on_3_rigs_with_light_faults(tmp_path: Path) -> None:
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
            run.daemon.kill()
            kills.append(str(slot["guid"]))
            await run.start_daemon()

    options = DemoOptions(hubs=40, rigs=2, faults="light", seed=5, workdir=workdir)
    code, lines = await _demo(options, during=kill_and_restart)
    assert code == 0, "\n".join(lines[-60:])
    assert len(kills) == 5
    _no_hub_left_unbootable(workdir)
    async with await SqliteStore.open(Paths(workdir).store) as store:
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
    async with await SqliteStore.open(Paths(workdir).store) as store:
        events = await store.journal()
    assert any(e.kind == "interrupted" and e.rig == 1 for e in events)
    _no_hub_left_unbootable(workdir)
