"""A station on a PostgreSQL store end to end: `jigd demo --store postgresql://...` (the daemon
and the simulator as processes, a database of the throwaway cluster) balances its books
against the simulator's ground truth, with the daemon SIGKILLed mid-upload and restarted:
the hub it was flashing resumes from what the database kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from jigd.demo import DemoOptions, DemoRun
from jigd.model import Guid
from jigd.store import INTERRUPTED_CODE, open_store
from tests.jigd.e2e_helpers import demo, no_hub_left_unbootable, results, wait_for_slot
from tests.postgres import PostgresCluster

pytestmark = pytest.mark.slow  # end to end with real processes: not in `make test-fast`


@pytest.mark.timeout(300)
async def test_a_demo_on_postgresql_survives_a_kill_and_balances(
    tmp_path: Path, postgres_cluster: PostgresCluster
) -> None:
    url = postgres_cluster.new_database()
    workdir = tmp_path / "demo"
    killed: list[str] = []

    async def kill_and_restart(run: DemoRun) -> None:
        slot = await wait_for_slot(
            run, lambda s: s["stage"] == "upload" and 10 < s["progress"] < 90
        )
        await run.daemon.kill()
        killed.append(str(slot["guid"]))
        await run.start_daemon()

    options = DemoOptions(hubs=24, rigs=1, faults="light", seed=7, workdir=workdir, store_url=url)
    code, lines = await demo(options, during=kill_and_restart)
    assert code == 0, "\n".join(lines[-60:])
    assert len(killed) == 1
    no_hub_left_unbootable(workdir)
    assert not (workdir / "state" / "jigd.sqlite3").exists()  # the books are in PostgreSQL
    [row] = [r for r in results(workdir) if r["guid"] == killed[0]]
    assert row["outcome"] in ("reflashed", "already_current"), row
    async with await open_store(url) as store:
        assert await store.check_books() == []
        [batch] = await store.list_batches()
        attempts = await store.attempts(batch.batch_id, Guid.parse(killed[0]))
    assert INTERRUPTED_CODE in [a.error_code for a in attempts], attempts  # then it resumed
