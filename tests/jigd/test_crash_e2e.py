"""A batch under `harsh` faults survives 20 SIGKILLs of the daemon, 2 rig outages and 3
SIGKILLs of the simulator.

Issue 13's crash test: every GUID ends with one outcome, no success is false (the books are
checked against the simulator's ground truth by `run_demo`), no GUID is left in progress and
the batch closes. A killed simulator is started again with the same command line and resumes
its bench from its state directory (hubs' flash, hubs in slots, the operator's piles), as a
bench does after a power cut of the PC that runs its rigs; the daemon sees the rigs vanish and
come back.
"""

from __future__ import annotations

import asyncio
import random
import signal
from pathlib import Path

import pytest

from jigd import control_api as api
from jigd.ctl import ControlError
from jigd.demo import DemoOptions, DemoRun, Paths
from jigd.demo.workdir import STATION
from jigd.model import Stage
from jigd.store import GuidStatus
from jigd.store.sqlite import SqliteStore
from tests.jigd.e2e_helpers import demo as _demo
from tests.jigd.e2e_helpers import no_hub_left_unbootable

pytestmark = pytest.mark.slow  # end to end with real processes: not in `make test-fast`

KILLS = 20
OUTAGES_AT = (5, 12)  # after these kills, rig 1 leaves the host for a while
SIM_KILLS_AT = (3, 9, 16)  # after these kills, the simulator is killed and started again
UPLOAD_WAIT_S = 30.0  # the first simulator kill waits this long at most for an upload


async def _uploading(run: DemoRun) -> bool:
    """Whether the daemon shows a hub part way through its upload."""
    try:
        status = await run.client.call(api.STATUS)
    except ControlError:
        return False
    return any(
        slot.stage is Stage.UPLOAD and 0 < slot.progress < 100
        for rig in status.rigs
        for slot in rig.slots
    )


async def _kill_sim(run: DemoRun, rng: random.Random, *, mid_upload: bool) -> bool:
    """SIGKILL the simulator (with `mid_upload`, once a hub is uploading) and restart it;
    whether a hub was uploading at that moment."""
    deadline = asyncio.get_running_loop().time() + (UPLOAD_WAIT_S if mid_upload else 0.0)
    uploading = await _uploading(run)
    while not uploading and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
        uploading = await _uploading(run)
    await run.restart_sim(down_s=rng.uniform(0.5, 2.0))
    return uploading


@pytest.mark.timeout(600)
async def test_twenty_kills_two_rig_outages_three_sim_kills_under_harsh_faults(
    tmp_path: Path,
) -> None:
    workdir = tmp_path / "demo"
    rng = random.Random(20261130)
    kills = 0
    outages = 0
    sim_kills = 0
    sim_kills_mid_upload = 0

    async def havoc(run: DemoRun) -> None:
        nonlocal kills, outages, sim_kills, sim_kills_mid_upload
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
            if n in SIM_KILLS_AT:
                first = n == SIM_KILLS_AT[0]
                sim_kills_mid_upload += await _kill_sim(run, rng, mid_upload=first)
                sim_kills += 1

    options = DemoOptions(hubs=48, rigs=2, faults="harsh", seed=13, workdir=workdir)
    code, lines = await _demo(options, during=havoc)
    assert code == 0, "\n".join(lines[-60:])
    assert (kills, outages, sim_kills) == (KILLS, len(OUTAGES_AT), len(SIM_KILLS_AT))
    assert sim_kills_mid_upload >= 1
    no_hub_left_unbootable(workdir)
    async with await SqliteStore.open(Paths(workdir).store, station=STATION) as store:
        (batch,) = await store.list_batches()
        states = await store.batch_results(batch.batch_id)
    assert batch.closed_at is not None
    assert {state.status for state in states} == {GuidStatus.FINAL}
