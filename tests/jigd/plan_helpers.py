"""`jigctl plan` on the store of a 96-hub demo (issue 16, acceptance 3), checked by the station's
96-hub end-to-end test (tests/jigd/test_station_e2e.py) on its own demo: the plan prints the
rigs needed for 300,000 hubs a year with its assumptions, its per-hub time agrees with the
median hub time of the demo's results.csv within 5%, and the daemon started again on the
demo's workdir answers the same plan as the stopped station's store read offline."""

from __future__ import annotations

import json
import statistics
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from jigd.ctl import ControlClient
from jigd.demo import Paths
from jigd.demo.process import daemon_process, wait_for_daemon
from tests.jigd.e2e_helpers import jigctl, results

PLAN = ["plan", "--hubs-per-year", "300000", "--days", "250", "--hours-per-day", "7.5"]
DAEMON_START_S = 30.0


def _median_hub_s(workdir: Path) -> float:
    """The median of finished - started over the demo's hubs that were worked on."""
    seconds = [
        (
            datetime.fromisoformat(r["finished"]) - datetime.fromisoformat(r["started"])
        ).total_seconds()
        for r in results(workdir)
        if r["started"] and r["finished"]
    ]
    assert len(seconds) > 80
    return statistics.median(seconds)


async def check_plan(workdir: Path) -> None:
    """The plan of the stopped demo in `workdir`, offline and from its daemon started again."""
    config = str(workdir / "jigd.toml")

    code, text, err = await jigctl("--config", config, *PLAN, "--offline")
    assert code == 0, err
    assert "rigs needed: " in text
    for assumption in (
        "volume: 300000 hubs a year over 250 days of 7.5",
        "operator handling: 20 s",
    ):
        assert assumption in text
    code, out, err = await jigctl("--config", config, *PLAN, "--offline", "--json")
    assert code == 0, err
    offline: dict[str, Any] = json.loads(out)
    plan = offline["plan"]
    assert plan["rigs_needed"] >= 1
    assert sum(m["hubs"] for m in offline["measured"]["models"]) > 80
    median = _median_hub_s(workdir)
    assert plan["hub_s"] == pytest.approx(median, rel=0.05), (plan["hub_s"], median)

    daemon = daemon_process(Paths(workdir))  # the demo stopped its own; the rigs stay away
    await daemon.start()
    try:
        await wait_for_daemon(
            ControlClient(workdir / "run" / "control.sock"), daemon, DAEMON_START_S
        )
        code, out, err = await jigctl("--config", config, *PLAN, "--json")
        assert code == 0, err
        assert json.loads(out) == offline
    finally:
        await daemon.stop()
