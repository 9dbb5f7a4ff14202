"""Boot waits end to end, `jigd run` and `jigsim serve` as processes (through `jigd demo`'s
machinery): a dead hub costs its slot well under 90 s with the default boot timeouts and its
fault row says what to do (issue 14, acceptance 4); healthy hubs' boot polls are no link
errors (defect 5)."""

from __future__ import annotations

import asyncio
import csv
from datetime import datetime
from pathlib import Path
from typing import Final

import pytest
from prometheus_client.parser import text_string_to_metric_families

from jigd.config import TimeoutConfig, load_config
from jigd.demo import DemoOptions, DemoRun
from tests.jigd.e2e_helpers import (
    SCRAPE_S,
    demo,
    metrics_text,
    no_hub_left_unbootable,
    results,
    wait_for_slot,
)
from tests.services import free_port

pytestmark = pytest.mark.slow  # end to end with real processes: not in `make test-fast`

# The acceptance bound of the issue: a dead hub is failed within this much slot time.
DEAD_HUB_BOUND_S: Final = 90.0
SCRAPE_EVERY_S: Final = 0.05


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.mark.timeout(400)
async def test_dead_hubs_are_failed_well_under_90_s_with_what_to_do(tmp_path: Path) -> None:
    """`--faults dead`, seed 21: three of eight hubs never boot after their activation. Each is
    waited for up to its expected boot time plus the margin (the slot shows the wait), power
    cycled once, and failed in its first attempt; the slot time from its first attempt's start
    to its result, as results.csv records them, is under 90 s."""
    workdir = tmp_path / "demo"
    options = DemoOptions(hubs=8, rigs=1, slots=8, faults="dead", seed=21, workdir=workdir)
    defaults = TimeoutConfig()
    seen: dict[str, object] = {}

    async def watch_a_boot_wait(run: DemoRun) -> None:
        # The daemon runs with the default boot timeouts (the demo sets none of them).
        timeouts = load_config(run.paths.config).timeouts
        assert (timeouts.boot_s, timeouts.swap_s, timeouts.boot_margin_s) == (
            defaults.boot_s,
            defaults.swap_s,
            defaults.boot_margin_s,
        )
        dead = {str(h.guid) for h in run.pallet.hubs if h.faults.bricked_after_reset}
        seen["dead"] = dead
        slot = await wait_for_slot(
            run,
            lambda s: s["guid"] in dead and s["wait"] is not None and s["wait"]["waited_s"] > 5,
        )
        seen["wait"] = slot["wait"]

    code, lines = await demo(options, during=watch_a_boot_wait)
    assert code == 0, "\n".join(lines[-60:])
    no_hub_left_unbootable(workdir)
    dead = seen["dead"]
    assert isinstance(dead, set)
    assert len(dead) == 3
    limit_s = defaults.boot_s + defaults.swap_s + defaults.boot_margin_s
    assert seen["wait"] == {"what": "boot", "waited_s": pytest.approx(5, abs=2), "limit_s": limit_s}
    rows = {row["guid"]: row for row in results(workdir)}
    with (workdir / "reports" / "fault-analysis.csv").open(encoding="utf-8", newline="") as file:
        faults = {row["guid"]: row for row in csv.DictReader(file)}
    assert set(faults) == dead
    for guid in dead:
        row = rows[guid]
        assert (row["outcome"], row["failure_stage"], row["failure_code"], row["attempts"]) == (
            "failed",
            "await_boot",
            "no_boot",
            "1",
        ), row
        slot_s = (_utc(row["finished"]) - _utc(row["started"])).total_seconds()
        # At least both boot waits; at most the bound.
        assert 2 * limit_s <= slot_s < DEAD_HUB_BOUND_S, row
        detail = faults[guid]["detail"]
        assert f"no answer to echo within {limit_s:g} s of the reset" in detail
        assert f"power cycled, no answer to echo within {limit_s:g} s either" in detail
        assert "s ago, to stage reset" in detail
        assert detail.endswith(
            "What to do: re-seat the hub and check its maintenance cable; if it fails again, "
            "set it aside for the supplier"
        )
        assert "the hub did not boot" in faults[guid]["last_link_errors"]
    print(  # the figures, for the record (pytest -s)
        "dead hub slot times (s):",
        sorted(
            round((_utc(rows[g]["finished"]) - _utc(rows[g]["started"])).total_seconds(), 1)
            for g in dead
        ),
    )


async def _link_errors(port: int) -> tuple[float, dict[str, float]]:
    """(hubs flashed, link errors by kind) as the daemon's /metrics says now."""
    text = await metrics_text(port)
    flashed = 0.0
    errors: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "jigd_flashes_total":
                flashed += sample.value
            elif sample.name == "jigd_link_errors_total" and sample.value:
                kind = sample.labels["kind"]
                errors[kind] = errors.get(kind, 0.0) + sample.value
    return flashed, errors


@pytest.mark.timeout(300)
async def test_eight_healthy_hubs_boot_polls_count_no_link_error(tmp_path: Path) -> None:
    """Issue 14, defect 5: 8 healthy hubs counted 123 link `timeout`s, every unanswered poll
    of a boot wait (and `retry` for its resends). A booting hub is expected to be silent."""
    workdir = tmp_path / "demo"
    port = free_port()
    options = DemoOptions(
        hubs=8,
        rigs=1,
        slots=8,
        faults="none",
        seed=2,
        workdir=workdir,
        metrics_port=port,
        timeout_s=200.0,  # well inside the test's timeout: a stuck run shows its logs
    )
    last: list[tuple[float, dict[str, float]]] = []

    async def scrape(run: DemoRun) -> None:
        try:
            while True:
                last.append(await _link_errors(port))
                await asyncio.sleep(SCRAPE_EVERY_S)
        finally:
            # The demo cancels this hook once the batch is done, before it stops the daemon:
            # one more reading then has every hub's link statistics.
            async with asyncio.timeout(SCRAPE_S):
                last.append(await _link_errors(port))

    code, lines = await demo(options, during=scrape)
    daemon_log = (workdir / "jigd.log").read_text("utf-8").splitlines()
    assert code == 0, "\n".join([*lines[-60:], "jigd.log:", *daemon_log[-80:]])
    flashed, errors = last[-1]
    rows = results(workdir)
    assert flashed == sum(1 for row in rows if row["outcome"] in ("reflashed", "already_current"))
    assert sum(1 for row in rows if row["outcome"] == "reflashed") >= 5  # each booted twice
    # Counting the boot polls gave 15 a hub. A healthy hub's link is quiet: under the load of
    # the whole suite an answer may still come after the frame timeout and be resent, as on a
    # busy station, so a few real timeouts are allowed, never one per hub.
    assert set(errors) <= {"timeout", "retry"}, errors
    assert errors.get("timeout", 0) < len(rows), errors
