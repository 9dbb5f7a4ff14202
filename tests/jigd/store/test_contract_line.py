"""The store contract, continued: what running a line needs of every backend (measured hub
times for the capacity plan, kept counts and retention, slot service and rig self-tests). Runs
once per registered backend, as test_contract.py does."""

from __future__ import annotations

import random
from collections import Counter
from datetime import timedelta

import pytest

from jigd.model import Outcome, Stage
from jigd.payloads import AlertPayload
from jigd.store import (
    GuidStatus,
    InvalidRecordError,
    SelftestCheck,
    Store,
    open_store,
)
from tests.jigd.store.books import (
    MODEL,
    T0,
    SetClock,
    StepClock,
    books_of,
    flash,
    guid,
    result,
    rows,
    timed_flash,
)


def test_every_backend_implements_the_contract(store: Store) -> None:
    assert isinstance(store, Store)


# --- measured times (the capacity plan) -----------------------------------------------------------


async def test_hub_times_give_each_outcomes_attempts_and_upload_end(store_url: str) -> None:
    clock = SetClock()
    async with await open_store(store_url, clock=clock) as store:
        batch_id = await store.import_batch(rows(1, 2, 3, 4, 5), "WO", "P", "m.csv")
        second = T0 + timedelta(minutes=1)
        await timed_flash(store, clock, batch_id, 2, start=second, upload_s=3, activate_s=2)
        await timed_flash(
            store, clock, batch_id, 1, start=T0, upload_s=4, activate_s=1.5, failed_s=(7, 2), rig=2
        )
        await timed_flash(
            store,
            clock,
            batch_id,
            3,
            start=T0 + timedelta(minutes=2),
            upload_s=0,
            activate_s=0.25,
            outcome=Outcome.ALREADY_CURRENT,
        )
        clock.now = T0 + timedelta(minutes=3)
        await store.begin_attempt(batch_id, guid(4), 1, 2, model=MODEL)  # no outcome yet
        times = await store.hub_times()
    assert [(t.guid, t.outcome, t.attempts, t.rig) for t in times] == [
        (guid(1), Outcome.REFLASHED, 3, 2),  # finished first
        (guid(2), Outcome.REFLASHED, 1, 1),
        (guid(3), Outcome.ALREADY_CURRENT, 1, 1),
    ]
    retried, first, current = times
    assert (retried.started, retried.last_started) == (T0, T0 + timedelta(seconds=9))
    assert retried.uploaded == T0 + timedelta(seconds=13)
    assert retried.finished == T0 + timedelta(seconds=14.5)
    assert (first.started, first.last_started) == (second, second)
    assert (first.uploaded, first.finished) == (
        second + timedelta(seconds=3),
        second + timedelta(seconds=5),
    )
    assert current.uploaded is None
    assert current.finished - current.last_started == timedelta(seconds=0.25)
    assert {t.model for t in times} == {MODEL}
    assert {t.batch_id for t in times} == {batch_id}


# --- kept counts and retention ------------------------------------------------------------

DAY = timedelta(days=1)


async def recount(store: Store, batch_id: str) -> tuple[int, int, int, dict[Outcome, int]]:
    """The batch's counts from its GUID states, as the summary had them before 0005."""
    states = await store.batch_results(batch_id)
    outcomes = Counter(s.outcome for s in states if s.outcome is not None)
    return (
        len(states),
        sum(s.attempts > 0 for s in states),
        sum(s.outcome is None for s in states),
        {o: outcomes[o] for o in Outcome},
    )


async def test_kept_counts_equal_a_full_recount_after_random_operations(store: Store) -> None:
    rng = random.Random(16)
    batches = [
        await store.import_batch(rows(*range(b * 100, b * 100 + 40)), "WO", "P", f"{b}.csv")
        for b in range(3)
    ]
    for _ in range(400):
        batch_id = rng.choice(batches)
        info = await store.get_batch(batch_id)
        if info.closed_at is not None:
            continue
        n = int(batch_id[1:]) * 100 - 100 + rng.randrange(40)
        state = await store.guid_state(batch_id, guid(n))
        if state.outcome is not None:
            continue
        action = rng.randrange(6)
        if action == 0 and rng.random() < 0.05:
            await store.close_batch(batch_id)
        elif action == 1:
            attempt = await store.begin_attempt(batch_id, guid(n), 1, 2)
            await store.end_attempt(
                batch_id, guid(n), attempt, stage=Stage.UPLOAD, error_code="timeout"
            )
        elif action == 2:
            attempt = await store.begin_attempt(batch_id, guid(n), 1, 3)
            await store.release_guid(batch_id, guid(n), 1, 3, stage=Stage.UNLOCK, reason="pulled")
        else:
            outcome = rng.choice([Outcome.REFLASHED, Outcome.ALREADY_CURRENT, Outcome.FAILED])
            if state.status is GuidStatus.PENDING and rng.random() < 0.5:
                await flash(store, batch_id, n, outcome)
            else:
                attempt = await store.begin_attempt(batch_id, guid(n), 1, 1)
                await store.record_result(result(batch_id, n, outcome, attempts=attempt))
        kept = await store.get_batch(batch_id)
        assert (kept.expected, kept.received, kept.pending, dict(kept.counts)) == await recount(
            store, batch_id
        )
    await store.close_batch(batches[0])
    for batch_id in batches:
        kept = await store.get_batch(batch_id)
        assert (kept.expected, kept.received, kept.pending, dict(kept.counts)) == await recount(
            store, batch_id
        )
    assert await store.check_books() == []


async def test_purge_keeps_the_books_and_open_journals(store_url: str) -> None:
    clock = StepClock()
    async with await open_store(store_url, clock=clock) as store:
        old = await store.import_batch(rows(1, 2, 3), "WO-1", "P", "old.csv")
        await flash(store, old, 1, Outcome.REFLASHED)
        await flash(store, old, 2, Outcome.FAILED)
        await store.record_rejected(guid(50), 1, 2, "not_in_batch")
        await store.close_batch(old)
        published = await store.mark_published(m.id for m in await store.outbox_pending())
        clock.now += 10 * DAY
        still_open = await store.import_batch(rows(4, 5), "WO-2", "P", "open.csv")
        await flash(store, still_open, 4, Outcome.REFLASHED)
        recent = await store.import_batch(rows(6), "WO-3", "P", "recent.csv")
        await store.close_batch(recent)
        pending = await store.outbox_pending()
        before = await books_of(store, [old, still_open, recent])
        open_journal = await store.journal(batch_id=still_open)
        clock.now += 400 * DAY - 5 * DAY  # `old` closed 405 days ago, `recent` 395

        old_journal = await store.journal(batch_id=old)
        dry = await store.purge(outbox_age=7 * DAY, journal_age=400 * DAY, dry_run=True)
        assert await store.journal(batch_id=old) == old_journal
        done = await store.purge(outbox_age=7 * DAY, journal_age=400 * DAY)

        # The old batch's events and the rejection outside every batch; every published row.
        assert (done.outbox, done.journal) == (published, len(old_journal) + 1)
        assert (dry.outbox, dry.journal, dry.dry_run) == (done.outbox, done.journal, True)
        assert await store.journal(batch_id=old) == []
        assert [e.kind for e in await store.journal() if e.batch_id is None] == ["purged"]
        assert await store.journal(batch_id=still_open) == open_journal
        assert await store.journal(batch_id=recent) != []
        assert await store.outbox_pending() == pending  # undelivered rows are never purged
        assert await books_of(store, [old, still_open, recent]) == before
        assert await store.check_books() == []
        again = await store.purge(outbox_age=7 * DAY, journal_age=400 * DAY)
        assert (again.outbox, again.journal) == (0, 0)


# --- slot service and rig self-tests -------------------------------------------------------------


async def test_a_disabled_slot_stays_disabled_across_a_reopen_and_is_alerted(
    store_url: str,
) -> None:
    async with await open_store(store_url) as store:
        await store.set_slot_service(1, 3, disabled=True, reason="worn pogo pin", by="alice")
        await store.set_slot_service(2, 1, disabled=True, reason="cable", by="bob")
        await store.set_slot_service(2, 1, disabled=False, reason="cable replaced", by="bob")
    async with await open_store(store_url) as store:
        services = await store.slot_services()
        assert [(s.rig, s.slot, s.disabled, s.reason, s.by) for s in services] == [
            (1, 3, True, "worn pogo pin", "alice"),
            (2, 1, False, "cable replaced", "bob"),
        ]
        alerts = [AlertPayload.model_validate_json(m.payload) for m in await store.outbox_pending()]
        assert [(a.kind, a.rig, a.slot, a.reason) for a in alerts] == [
            ("slot_disabled", 1, 3, "worn pogo pin"),
            ("slot_disabled", 2, 1, "cable"),
            ("slot_enabled", 2, 1, "cable replaced"),
        ]
        assert "jigctl slot enable 1 3" in alerts[0].message
        journal = await store.journal()
        assert [(e.kind, e.rig, e.slot, e.data["by"]) for e in journal] == [
            ("alert", 1, 3, "alice"),
            ("alert", 2, 1, "bob"),
            ("alert", 2, 1, "bob"),
        ]


@pytest.mark.parametrize(
    ("rig", "slot", "reason", "by"),
    [(0, 1, "r", "a"), (1, 9, "r", "a"), (1, 1, " ", "a"), (1, 1, "r", "")],
)
async def test_a_change_of_service_needs_a_slot_a_reason_and_who(
    store: Store, rig: int, slot: int, reason: str, by: str
) -> None:
    with pytest.raises(InvalidRecordError):
        await store.set_slot_service(rig, slot, disabled=True, reason=reason, by=by)
    assert await store.slot_services() == []
    assert await store.outbox_depth() == 0


async def test_the_last_selftest_of_each_rig_is_kept_with_its_checks(store_url: str) -> None:
    first = [SelftestCheck(None, "controller", True), SelftestCheck(1, "power", True)]
    later = [
        SelftestCheck(None, "controller", True),
        SelftestCheck(3, "led", False, "LED 3 RED: ERR led fault"),
    ]
    async with await open_store(store_url) as store:
        await store.record_selftest(1, first)
        await store.record_selftest(2, first)
        stored = await store.record_selftest(1, later)
        assert stored.failed == 1
        with pytest.raises(InvalidRecordError):
            await store.record_selftest(1, [])
        with pytest.raises(InvalidRecordError):
            await store.record_selftest(1, [SelftestCheck(9, "port", True)])
    async with await open_store(store_url) as store:
        runs = await store.last_selftests()
        assert [(r.rig, list(r.checks), r.failed) for r in runs] == [
            (1, later, 1),
            (2, first, 0),
        ]
        assert runs[0].ts == stored.ts
