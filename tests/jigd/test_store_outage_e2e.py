"""Issue 15, acceptance 3: PostgreSQL stopped for 30 s mid-batch. A demo on a cluster of the
test's own (the daemon and the simulator as processes) has its server stopped with `pg_ctl stop
-m fast` while a hub is being written, and started again 30 s later on the same port and data
directory: no result is lost (the demo's books balance against the simulator's ground truth),
no attempt began while the server was down, `jigd_store_up` read 0 during the outage and 1
after, and hubs whose work was under way when it went down were held and finished after it."""

from __future__ import annotations

import asyncio
import re
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from jigd.demo import DemoOptions, DemoRun
from jigd.model import Outcome
from jigd.store import open_store
from tests.jigd.e2e_helpers import demo, metrics_text, no_hub_left_unbootable, wait_for_slot
from tests.postgres import PostgresCluster
from tests.services import free_port

pytestmark = pytest.mark.slow  # end to end with real processes: not in `make test-fast`

OUTAGE_S = 30.0
BACK_S = 60.0  # the daemon sees the server back within this
STORE_UP = re.compile(r"^jigd_store_up (\S+)$", re.MULTILINE)


async def _store_up(port: int) -> float:
    found = STORE_UP.search(await metrics_text(port))
    assert found is not None, "jigd_store_up is not in /metrics"
    return float(found.group(1))


async def _until_store_up(port: int, value: float, timeout_s: float) -> None:
    """Poll the daemon's /metrics (another process) until the gauge reads `value`."""
    async with asyncio.timeout(timeout_s):
        while True:
            if await _store_up(port) == value:
                return
            await asyncio.sleep(0.5)


@pytest.mark.timeout(600)
async def test_a_database_outage_mid_batch_loses_nothing_and_starts_no_hub(tmp_path: Path) -> None:
    cluster = PostgresCluster()  # its own: the test stops it
    await asyncio.to_thread(cluster.start)
    try:
        url = cluster.new_database()
        port = free_port()
        seen: dict[str, datetime] = {}

        async def outage(run: DemoRun) -> None:
            await wait_for_slot(run, lambda s: s["stage"] == "upload" and s["progress"] > 5)
            began = time.monotonic()
            await asyncio.to_thread(cluster.stop)
            seen["down"] = datetime.now(UTC)  # from here the server is surely down
            await _until_store_up(port, 0, OUTAGE_S)
            seen["read_down"] = datetime.now(UTC)
            await asyncio.sleep(max(0.0, OUTAGE_S - (time.monotonic() - began)))
            seen["up"] = datetime.now(UTC)  # until here the server is surely down
            await asyncio.to_thread(cluster.start)
            await _until_store_up(port, 1, BACK_S)
            seen["read_up"] = datetime.now(UTC)

        workdir = tmp_path / "demo"
        options = DemoOptions(
            hubs=10,
            rigs=1,
            faults="none",
            seed=15,
            workdir=workdir,
            store_url=url,
            metrics_port=port,
        )
        code, lines = await demo(options, during=outage)
        assert code == 0, "\n".join(lines[-60:])  # the books balance: nothing lost
        assert set(seen) == {"down", "read_down", "up", "read_up"}, (seen, lines[-20:])
        no_hub_left_unbootable(workdir)

        async with await open_store(url) as store:
            assert await store.check_books() == []
            [batch] = await store.list_batches()
            states = await store.batch_results(batch.batch_id)
            attempts = [a for s in states for a in await store.attempts(s.batch_id, s.guid)]
        assert Outcome.FAILED not in {s.outcome for s in states}, states
        began_while_down = [a for a in attempts if seen["down"] < a.started < seen["up"]]
        assert began_while_down == [], began_while_down
        # Work under way when the server went down was held, and finished after it was back.
        spanning = [
            a
            for a in attempts
            if a.started < seen["down"] and a.finished is not None and a.finished > seen["up"]
        ]
        assert spanning, attempts
        log = (workdir / "jigd.log").read_text("utf-8")
        assert "store down: " in log
        assert "the database is unreachable" in log
        assert re.search(r"store \S+: back after \d+\.\d s down", log), log[-3000:]
    finally:
        await asyncio.to_thread(cluster.remove)
