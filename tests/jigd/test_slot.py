"""The slot worker on a bench (tests/jigd/slot_bench.py): a simulated hub on a real pty, the
real SQLite store and catalog, a simulated rig that can vanish at any moment."""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import Callable
from pathlib import Path
from typing import Final

from jigd.config import RetryConfig
from jigd.model import DeviceModel, FirmwareVersion, Guid, Outcome, SlotState, Stage
from jigd.reports import FAULT_ANALYSIS_FILE as FAULTS
from jigd.reports import render_reports
from jigd.store import GuidStatus
from jigd.store.sqlite import SqliteStore
from sim.faults import Faults
from tests.jigd.slot_bench import NEW, TIMEOUTS, slot_bench

VANISH_ITERATIONS: Final = 60


async def test_a_hub_is_reflashed_and_locked(tmp_path: Path) -> None:
    async with slot_bench(tmp_path) as bench:
        batch = await bench.import_batch()
        bench.insert()
        result = await bench.next_result()
        assert (result.outcome, result.to_version, result.attempts) == (Outcome.REFLASHED, NEW, 1)
        assert bench.hub.hub.truth()["locked"] is True
        state = await bench.store.guid_state(batch, bench.hub.spec.guid)
        assert state.status is GuidStatus.FINAL


class _RigVanishesAtBegin(SqliteStore):
    """The real SQLite store, but the rig vanishes as an attempt begins, at one of four points
    (`when`): before the store's job is sent, while it is on the store's thread, when its
    answer is ready but not yet taken, and just after it is taken."""

    vanish: Callable[[], None] = staticmethod(lambda: None)
    when = 0

    async def begin_attempt(
        self,
        batch_id: str,
        guid: Guid,
        rig: int,
        slot: int,
        *,
        model: DeviceModel | None = None,
        from_version: FirmwareVersion | None = None,
    ) -> int:
        begin = super().begin_attempt(
            batch_id, guid, rig, slot, model=model, from_version=from_version
        )
        if self.when == 0:
            self.vanish()
            return await begin
        if self.when == 1:
            asyncio.get_running_loop().call_soon(self.vanish)
            return await begin
        if self.when == 2:
            job = asyncio.ensure_future(begin)
            job.add_done_callback(lambda _: self.vanish())
            return await job
        attempt = await begin
        self.vanish()
        return attempt


async def test_rig_that_vanishes_as_an_attempt_begins_leaves_no_guid_in_progress(
    tmp_path: Path,
) -> None:
    """Issue 13, defect 1: the rig lost 1.5 ms after an attempt began left the GUID in progress
    with an open attempt, so another slot refused the hub and the batch could not close."""
    async with slot_bench(tmp_path, store_class=_RigVanishesAtBegin) as bench:
        store = bench.store
        assert isinstance(store, _RigVanishesAtBegin)
        guid = bench.hub.spec.guid
        for iteration in range(VANISH_ITERATIONS):
            vanished = asyncio.Event()

            def vanish(done: asyncio.Event = vanished) -> None:
                bench.vanish()
                done.set()

            store.vanish = vanish
            store.when = iteration % 4
            batch = await bench.import_batch()
            bench.insert()
            async with asyncio.timeout(10):
                await vanished.wait()
            await bench.idle()
            state = await store.guid_state(batch, guid)
            assert state.status is not GuidStatus.IN_PROGRESS, (iteration, state)
            history = await store.attempts(batch, guid)
            assert [a for a in history if a.finished is None] == [], (iteration, history)
            info = await store.close_batch(batch)
            assert info.pending == 0, (iteration, info)


async def _restarted_attempts(store: SqliteStore, batch: str, guid: Guid, count: int) -> None:
    """`count` attempts as runs of jigd left them: each odd one failed at verify (the image
    rejected), each even one cut short by a restart (SIGKILL, then recover_interrupted)."""
    for number in range(1, count + 1):
        attempt = await store.begin_attempt(batch, guid, 1, 1)
        assert attempt == number
        await store.record_stage(batch, guid, attempt, Stage.VERIFY)
        if number % 2:
            await store.end_attempt(
                batch,
                guid,
                attempt,
                stage=Stage.VERIFY,
                error_code="image_rejected",
                error_detail=f"the bootloader refused it (attempt {number})",
            )
        else:
            await store.recover_interrupted()


async def test_a_guid_whose_attempt_budget_is_spent_fails_without_another_attempt(
    tmp_path: Path,
) -> None:
    """Issue 13, defect 8: attempts were unbounded across restarts (20 for one hub). A GUID
    that has had stage_attempts + resume_attempts attempts fails with their cause when seen
    again, and its hub is not touched."""
    retries = RetryConfig(stage_attempts=3, resume_attempts=1)
    async with slot_bench(tmp_path, retries=retries) as bench:
        batch = await bench.import_batch()
        guid = bench.hub.spec.guid
        await _restarted_attempts(bench.store, batch, guid, 4)
        bench.insert()
        result = await bench.next_result()
        assert result.outcome is Outcome.FAILED
        assert (result.failure_stage, result.failure_code, result.attempts) == (
            Stage.VERIFY,
            "image_rejected",
            4,
        )
        assert result.failure_detail is not None
        assert "no attempt left (4 made of the 4" in result.failure_detail
        assert "(attempt 3)" in result.failure_detail
        assert len(await bench.store.attempts(batch, guid)) == 4
        truth = bench.hub.hub.truth()
        assert (truth["active_version"], truth["locked"]) == ("01000000", True)


async def test_attempts_left_in_the_budget_bound_the_next_run(tmp_path: Path) -> None:
    """Two attempts made before a restart: a hub whose image is always rejected gets the two
    left of its budget of four, not three more."""
    retries = RetryConfig(stage_attempts=3, resume_attempts=1)
    async with slot_bench(tmp_path, retries=retries, faults=Faults(reject_image=True)) as bench:
        batch = await bench.import_batch()
        guid = bench.hub.spec.guid
        await _restarted_attempts(bench.store, batch, guid, 2)
        bench.insert()
        result = await bench.next_result()
        assert (result.outcome, result.failure_code, result.attempts) == (
            Outcome.FAILED,
            "image_rejected",
            4,
        )
        assert len(await bench.store.attempts(batch, guid)) == 4


async def _fault_row(store: SqliteStore, batch: str) -> dict[str, str]:
    [row] = list(csv.DictReader(io.StringIO((await render_reports(store, batch))[FAULTS], "")))
    return row


async def test_a_hub_failed_after_unlock_is_locked_again(tmp_path: Path) -> None:
    """Issue 13, defect 7: a hub every attempt of which failed at mark_test went back on the
    pallet unlocked. Each failed attempt now ends with a lock, journalled, and the Fault
    Analysis says locked=yes."""
    async with slot_bench(tmp_path, faults=Faults(refuse_mark_test=True)) as bench:
        batch = await bench.import_batch()
        guid = bench.hub.spec.guid
        bench.insert()
        result = await bench.next_result()
        assert (result.outcome, result.failure_stage, result.attempts) == (
            Outcome.FAILED,
            Stage.MARK_TEST,
            3,
        )
        assert bench.hub.hub.truth()["locked"] is True
        assert result.locked is True
        events = await bench.store.journal(batch_id=batch, guid=guid)
        failed = [e.data["locked"] for e in events if e.kind == "attempt_failed"]
        assert failed == [True, True]
        [recorded] = [e for e in events if e.kind == "result"]
        assert recorded.data["locked"] is True
        row = await _fault_row(bench.store, batch)
        assert (row["stage"], row["locked"]) == ("mark_test", "yes")


async def test_a_failed_hub_that_cannot_be_locked_again_is_flagged(tmp_path: Path) -> None:
    """A hub that never boots after its reset cannot be locked again: its result, its slot and
    its Fault Analysis row say it was left unlocked. Its second attempt, which fails before
    any unlock (the hub is silent), knows the first one left it unlocked."""
    timeouts = TIMEOUTS.model_copy(update={"boot_s": 1.0, "swap_s": 1.0})
    async with slot_bench(
        tmp_path,
        faults=Faults(bricked_after_reset=True),
        retries=RetryConfig(stage_attempts=2, request_retries=1),
        timeouts=timeouts,
    ) as bench:
        batch = await bench.import_batch()
        bench.insert()
        result = await bench.next_result()
        assert (result.outcome, result.failure_stage, result.locked, result.attempts) == (
            Outcome.FAILED,
            Stage.AWAIT_BOOT,
            False,
            2,
        )
        events = await bench.store.journal(batch_id=batch, guid=bench.hub.spec.guid)
        assert [e.data["locked"] for e in events if e.kind == "attempt_failed"] == [False]
        assert bench.hub.hub.truth()["locked"] is False
        assert result.failure_detail is not None
        assert result.failure_detail.startswith("hub left unlocked")
        assert "left unlocked" in bench.worker.status.detail
        row = await _fault_row(bench.store, batch)
        assert row["locked"] == "no"
        assert row["detail"].startswith("hub left unlocked")


async def test_a_spent_guid_being_flashed_in_another_slot_is_refused_not_failed(
    tmp_path: Path,
) -> None:
    """The budget is spent, but the GUID's last attempt runs in another slot: the hub is set
    aside as a GUID in two slots (as begin_attempt refuses it), nothing is recorded."""
    async with slot_bench(tmp_path, retries=RetryConfig(stage_attempts=3)) as bench:
        batch = await bench.import_batch()
        guid = bench.hub.spec.guid
        await _restarted_attempts(bench.store, batch, guid, 3)
        await bench.store.begin_attempt(batch, guid, 1, 2)
        bench.insert()
        async with asyncio.timeout(10):
            while bench.worker.status.state is not SlotState.ATTENTION:  # noqa: ASYNC110 - no event
                await asyncio.sleep(0.01)
        assert "already being flashed in rig 1 slot 2" in bench.worker.status.detail
        state = await bench.store.guid_state(batch, guid)
        assert (state.status, state.attempts, state.outcome) == (GuidStatus.IN_PROGRESS, 4, None)
