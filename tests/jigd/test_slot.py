"""The slot worker on a bench (tests/jigd/slot_bench.py): a simulated hub on a real pty, the
real SQLite store and catalog, a simulated rig that can vanish at any moment."""

from __future__ import annotations

import asyncio
import csv
import io
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Final

from jigd.config import HubModelConfig, RetryConfig
from jigd.events import SlotWait
from jigd.model import DeviceModel, FirmwareVersion, Guid, LedColour, Outcome, SlotState, Stage
from jigd.reports import FAULT_ANALYSIS_FILE as FAULTS
from jigd.reports import render_reports
from jigd.store import GuidStatus, open_store
from jigd.store.sqlite import SqliteStore, sqlite_url
from sim.faults import Faults
from tests.jigd.slot_bench import NEW, TIMEOUTS, SlotBench, slot_bench

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


# Boot limits of a second or two: 0.5 s expected boot (+ 0.5 s swap after a reset), 1 s margin.
QUICK_BOOT: Final = TIMEOUTS.model_copy(update={"boot_s": 0.5, "swap_s": 0.5, "boot_margin_s": 1.0})


def _boot_waits(bench: SlotBench) -> list[SlotWait]:
    """The boot waits the slot showed, in order."""
    return [w for w in dict.fromkeys(s.wait for s in bench.statuses) if w is not None]


async def test_a_hub_that_never_boots_after_activation_is_power_cycled_once_then_failed(
    tmp_path: Path,
) -> None:
    """Issue 14, defect 4: a hub that never booted after its reset held its slot for three
    full attempts (7 min 48 s with the example timeouts) and its fault row said only
    `timeout`. It is now waited for up to its expected boot time plus the margin, power cycled
    once, waited for again, and failed in its first attempt with what was seen last and what
    to do. It cannot be locked again (it does not answer): its result, its slot and its Fault
    Analysis row say it was left unlocked."""
    async with slot_bench(
        tmp_path, faults=Faults(bricked_after_reset=True), timeouts=QUICK_BOOT
    ) as bench:
        batch = await bench.import_batch()
        guid = bench.hub.spec.guid
        bench.insert()
        result = await bench.next_result()
        assert (result.outcome, result.failure_stage, result.failure_code) == (
            Outcome.FAILED,
            Stage.AWAIT_BOOT,
            "no_boot",
        )
        assert (result.attempts, result.locked, bench.rig.power_offs) == (1, False, 1)
        assert result.failure_detail is not None
        assert result.failure_detail.startswith("hub left unlocked")
        assert (
            "no answer to echo within 2 s of the reset (expected 0.5 s boot + 0.5 s swap, 1 s "
            "margin); power cycled, no answer to echo within 2 s either; last answer "
        ) in result.failure_detail
        assert "s ago, to stage reset. What to do: re-seat the hub and check its " in (
            result.failure_detail
        )
        assert "left unlocked" in bench.worker.status.detail
        # The slot showed each wait while it ran (identify, after the reset, after the power
        # cycle), and no wait once it gave up.
        assert [(w.what, w.limit_s) for w in _boot_waits(bench)] == [
            ("boot", 1.5),
            ("boot", 2.0),
            ("boot", 2.0),
        ]
        assert bench.worker.status.wait is None
        # One attempt, closed by the result, spanning the power cycle and the second wait.
        [attempt] = await bench.store.attempts(batch, guid)
        assert attempt.error_code == "no_boot"
        assert attempt.finished is not None
        assert (attempt.finished - attempt.started).total_seconds() >= 4.0
        events = await bench.store.journal(batch_id=batch, guid=guid)
        assert [e for e in events if e.kind == "attempt_failed"] == []
        assert bench.hub.hub.truth()["locked"] is False
        row = await _fault_row(bench.store, batch)
        assert (row["stage"], row["code"], row["locked"]) == ("await_boot", "no_boot", "no")
        assert "What to do: re-seat the hub" in row["detail"]
        # The link errors are what failed, in words; each boot wait past its limit counted once.
        assert "the hub did not boot: no answer to echo within 2 s" in row["last_link_errors"]
        errors = sum((Counter(stats.errors) for stats in bench.link_stats), Counter[str]())
        assert errors["boot_timeout"] == 2
        assert errors["timeout"] == 0


async def test_a_hub_silent_in_its_last_attempt_still_gets_its_power_cycle(
    tmp_path: Path,
) -> None:
    """No attempt is left after the boot timeout, but the hub gets its one power cycle all the
    same, and its fault row says what was seen and what to do."""
    async with slot_bench(
        tmp_path,
        faults=Faults(bricked_after_reset=True),
        retries=RetryConfig(stage_attempts=1),
        timeouts=QUICK_BOOT,
    ) as bench:
        await bench.import_batch()
        bench.insert()
        result = await bench.next_result()
        assert (result.failure_code, result.attempts, bench.rig.power_offs) == ("no_boot", 1, 1)
        assert result.failure_detail is not None
        assert "power cycled, no answer to echo within 2 s either" in result.failure_detail


async def test_a_hub_that_boots_only_after_the_power_cycle_is_flashed_in_its_next_attempt(
    tmp_path: Path,
) -> None:
    """A brown-out half-way through its swap leaves the hub off: silent past its boot limit.
    The power cycle brings it back (the bootloader resumes the swap), and the next attempt
    verifies, confirms and locks it."""
    async with slot_bench(
        tmp_path, faults=Faults(power_loss_during_swap=True), timeouts=QUICK_BOOT
    ) as bench:
        batch = await bench.import_batch()
        guid = bench.hub.spec.guid
        bench.insert()
        result = await bench.next_result()
        assert (result.outcome, result.attempts, bench.rig.power_offs) == (
            Outcome.REFLASHED,
            2,
            1,
        )
        first, second = await bench.store.attempts(batch, guid)
        assert (first.stage_reached, first.error_code) == (Stage.AWAIT_BOOT, "no_boot")
        assert second.error_code is None
        truth = bench.hub.hub.truth()
        assert (truth["active_version"], truth["confirmed"], truth["locked"]) == (
            str(NEW),
            True,
            True,
        )


async def test_a_hub_that_never_answers_gets_one_power_cycle_then_asks_for_a_person(
    tmp_path: Path,
) -> None:
    """A hub dead on arrival has no GUID to fail: after one power cycle the slot blinks and
    says what was tried and what to do, within two boot limits of the model-less default."""
    async with slot_bench(tmp_path, faults=Faults(never_boots=True), timeouts=QUICK_BOOT) as bench:
        await bench.import_batch()
        bench.insert()
        async with asyncio.timeout(20):
            while bench.worker.status.state is not SlotState.ATTENTION:  # noqa: ASYNC110 - no event
                await asyncio.sleep(0.01)
        detail = bench.worker.status.detail
        assert detail.startswith("rig1/slot1: the hub did not boot: no answer to echo within 1.5 s")
        assert (
            "(expected 0.5 s boot, 1 s margin); power cycled, no answer to echo within 1.5 s"
            in (detail)
        )
        assert detail.endswith(
            "it never answered since it was put in. What to do: re-seat the hub and check its "
            "maintenance cable; if it fails again, set it aside for the supplier"
        )
        assert (bench.rig.power_offs, bench.rig.leds[-1]) == (1, LedColour.BLINK)
        assert [(w.what, w.limit_s) for w in _boot_waits(bench)] == [("boot", 1.5)] * 2
        assert bench.worker.status.wait is None


async def test_a_device_models_expected_boot_time_sets_its_limit(tmp_path: Path) -> None:
    """`[[hub_models]] boot_s`/`swap_s` replace `[timeouts]` for that model's hubs once they
    identified; a healthy hub is flashed with no link error from its boot polls."""
    async with slot_bench(tmp_path, timeouts=QUICK_BOOT) as bench:
        model = HubModelConfig(device_model=bench.hub.spec.model, boot_s=2.0, swap_s=3.0)
        bench.deps.hub_models = {bench.hub.spec.model: model}
        await bench.import_batch()
        bench.insert()
        result = await bench.next_result()
        assert result.outcome is Outcome.REFLASHED
        # Identify (model unknown): 0.5 + 1; after the reset: 2 + 3 + 1.
        assert [w.limit_s for w in _boot_waits(bench)] == [1.5, 6.0]
        errors = sum((Counter(stats.errors) for stats in bench.link_stats), Counter[str]())
        assert errors == Counter()


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


async def test_a_hub_another_station_holds_is_refused_untouched(tmp_path: Path) -> None:
    """On a site, the hub's GUID has an attempt open on station A: this station's slot refuses
    it (`busy_elsewhere`, naming A, RED) and never unlocks or writes it."""
    async with slot_bench(tmp_path) as bench:
        batch = await bench.import_batch()
        guid = bench.hub.spec.guid
        async with await open_store(
            sqlite_url(tmp_path / "state" / "jigd.sqlite3"), station="A"
        ) as station_a:
            await station_a.begin_attempt(batch, guid, 1, 1)
        before = bench.hub.hub.truth()
        bench.insert()
        async with asyncio.timeout(30):
            while bench.worker.status.state is not SlotState.REJECTED:  # noqa: ASYNC110 - a plain property
                await asyncio.sleep(0.01)
        status = bench.worker.status
        assert status.detail.startswith("busy_elsewhere: ")
        assert "being flashed by station A" in status.detail
        assert bench.rig.leds[-1] is LedColour.RED
        [rejected] = await bench.store.list_rejected()
        assert (rejected.guid, rejected.reason) == (guid, "busy_elsewhere")
        assert bench.hub.hub.truth() == before  # never unlocked, never written
        state = await bench.store.guid_state(batch, guid)
        assert (state.status, state.station, state.attempts) == (GuidStatus.IN_PROGRESS, "A", 1)
