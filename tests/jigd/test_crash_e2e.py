"""A batch under `harsh` faults survives 20 SIGKILLs of the daemon and 2 rig outages.

Issue 13's crash test: every GUID ends with one outcome, no success is false (the books are
checked against the simulator's ground truth by `run_demo`), no GUID is left in progress and
the batch closes.
"""

from __future__ import annotations

import asyncio
import random
import signal
from pathlib import Path

import pytest

from jigd.demo import DemoOptions, DemoRun, Paths
from jigd.store import GuidStatus
from jigd.store.sqlite import SqliteStore
from tests.jigd.e2e_helpers import demo as _demo
from tests.jigd.e2e_helpers import no_hub_left_unbootable

pytestmark = pytest.mark.slow  # end to end with real processes: not in `make test-fast`

KILLS = 20
OUTAGES_AT = (5, 12)  # after these kills, rig 1 leaves the host for a while


@pytest.mark.timeout(600)
async def test_twenty_kills_and_two_rig_outages_under_harsh_faults(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    rng = random.Random(20261130)
    kills = 0
    outages = 0

    async def havoc(run: DemoRun) -> None:
        nonlocal kills, outages
        for n in range(1, KILLS + 1):
            await asyncio.sleep(rng.uniform(0.3, 1.5))
            if await run.finished():
                return
            await run.daemon.kill()
            kills += 1
            await run.start_daemon()
            if n in OUTAGES_AT:
                run.sim.signal(signal.SIGUSR2)
                await asyncio.sleep(rng.uniform(1.0, 3.0))
                run.sim.signal(signal.SIGUSR2)
                outages += 1

    options = DemoOptions(hubs=48, rigs=2, faults="harsh", seed=13, workdir=workdir)
    code, lines = await _demo(options, during=havoc)
    assert code == 0, "\n".join(lines[-60:])
    assert (kills, outages) == (KILLS, len(OUTAGES_AT))
    no_hub_left_unbootable(workdir)
    async with await SqliteStore.open(Paths(workdir).store) as store:
        (batch,) = await store.list_batches()
        states = await store.batch_results(batch.batch_id)
    assert batch.closed_at is not None
    assert {state.status for state in states} == {GuidStatus.FINAL}
