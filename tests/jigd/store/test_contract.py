"""The store contract, tested on every registered backend (the `store` fixture of conftest.py):
one outcome per GUID, atomic and durable records, an ordered outbox of events."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta

import pytest

from jigd.events import BatchStatus
from jigd.manifest import ManifestError, ManifestRow, parse_manifest
from jigd.model import Outcome, Stage
from jigd.payloads import AlertPayload, ResultPayload, SummaryPayload
from jigd.store import (
    BatchBusyError,
    BatchClosedError,
    GuidBusyError,
    GuidInOpenBatchError,
    GuidStatus,
    OutcomeAlreadyRecordedError,
    Store,
    UnknownAttemptError,
    UnknownBatchError,
    UnknownGuidError,
    open_store,
)
from tests.jigd.store.books import (
    MODEL,
    NEW,
    OLD,
    T0,
    counted_in_order,
    flash,
    guid,
    result,
    route,
    rows,
)


def test_every_backend_implements_the_contract(store: Store) -> None:
    assert isinstance(store, Store)


# --- batches --------------------------------------------------------------------------------------


async def test_import_batch_gives_topic_safe_ids_and_queues_a_summary(store: Store) -> None:
    first = await store.import_batch(rows(1, 2, 3), "WO-1", "SUPPLIER-A", "a.csv")
    second = await store.import_batch(rows(4), "WO-2", "SUPPLIER-B", "b.csv")
    assert (first, second) == ("B000001", "B000002")
    for batch_id in (first, second):
        assert not set("/+#") & set(batch_id)
    info = await store.get_batch(first)
    assert (info.booking, info.party, info.source, info.status) == (
        "WO-1",
        "SUPPLIER-A",
        "a.csv",
        BatchStatus.OPEN,
    )
    assert (info.expected, info.received, info.pending) == (3, 0, 3)
    assert dict(info.counts) == dict.fromkeys(Outcome, 0)
    assert [b.batch_id for b in await store.list_batches()] == [first, second]
    [message, _] = await store.outbox_pending()
    assert route(message) == ("batches/B000001/summary", 1, True)
    summary = SummaryPayload.model_validate_json(message.payload)
    assert (summary.expected, summary.pending, summary.guids) == (3, 3, None)


async def test_declared_model_and_firmware_are_kept(store: Store) -> None:
    manifest = parse_manifest(
        b"guid,manufacturer,model,firmware_version\n00db000000000001,1086,57310102,03000001\n"
        b"00db000000000002,,,\n",
        "m.csv",
    )
    batch_id = await store.import_batch(manifest, "WO", "P", "m.csv")
    ref = await store.find_open_batch(guid(1))
    assert ref is not None
    assert (ref.batch_id, ref.line, ref.declared_model, ref.declared_firmware_version) == (
        batch_id,
        2,
        MODEL,
        OLD,
    )
    assert (ref.status, ref.outcome) == (GuidStatus.PENDING, None)
    state = await store.guid_state(batch_id, guid(2))
    assert (state.declared_model, state.declared_firmware_version, state.line) == (None, None, 3)
    assert await store.find_open_batch(guid(99)) is None


async def test_guid_in_another_open_batch_is_refused_and_nothing_is_stored(
    store: Store,
) -> None:
    first = await store.import_batch(rows(1, 2, 3), "WO-1", "P", "a.csv")
    depth = await store.outbox_depth()
    with pytest.raises(GuidInOpenBatchError) as caught:
        await store.import_batch(rows(7, 3, 2), "WO-2", "P", "b.csv")
    error = caught.value
    assert isinstance(error, ManifestError)
    assert error.problems == [
        f"b.csv:4: guid: {guid(2)} is already in open batch {first} (line 3 of a.csv); "
        f"remove this line, or close batch {first} first",
        f"b.csv:3: guid: {guid(3)} is already in open batch {first} (line 4 of a.csv); "
        f"remove this line, or close batch {first} first",
    ]
    assert dict(error.conflicts) == {guid(2): first, guid(3): first}
    assert [b.batch_id for b in await store.list_batches()] == [first]
    assert await store.find_open_batch(guid(7)) is None
    assert await store.outbox_depth() == depth
    # Once the first batch is closed its GUIDs may come back in a new one.
    await store.close_batch(first)
    second = await store.import_batch(rows(7, 3, 2), "WO-2", "P", "b.csv")
    ref = await store.find_open_batch(guid(3))
    assert ref is not None
    assert ref.batch_id == second


@pytest.mark.parametrize(
    ("manifest", "booking", "party", "expected"),
    [
        (rows(1), " ", "P", "m.csv: booking: empty"),
        (rows(1), "WO", "", "m.csv: party: empty"),
        ([], "WO", "P", "m.csv: (file): no GUIDs"),
        (rows(1, 1), "WO", "P", "m.csv:3: guid: "),
    ],
)
async def test_import_refuses_bad_input(
    store: Store, manifest: list[ManifestRow], booking: str, party: str, expected: str
) -> None:
    with pytest.raises(ManifestError) as caught:
        await store.import_batch(manifest, booking, party, "m.csv")
    assert caught.value.problems[0].startswith(expected)
    assert await store.list_batches() == []


async def test_unknown_batch_and_guid_are_typed_errors(store: Store) -> None:
    batch_id = await store.import_batch(rows(1), "WO", "P", "m.csv")
    with pytest.raises(UnknownBatchError, match="B999999"):
        await store.get_batch("B999999")
    with pytest.raises(UnknownBatchError):
        await store.close_batch("B999999")
    with pytest.raises(UnknownGuidError, match=str(guid(5))):
        await store.guid_state(batch_id, guid(5))
    with pytest.raises(UnknownGuidError):
        await store.begin_attempt(batch_id, guid(5), 1, 1)
    with pytest.raises(UnknownAttemptError):
        await store.record_stage(batch_id, guid(1), 1, Stage.IDENTIFY)


# --- attempts and results -------------------------------------------------------------------------


async def test_record_result_writes_state_attempt_journal_and_outbox_together(
    store: Store,
) -> None:
    batch_id = await store.import_batch(rows(1, 2), "WO", "P", "m.csv")
    attempt = await store.begin_attempt(batch_id, guid(1), 2, 5)
    assert attempt == 1
    assert (await store.guid_state(batch_id, guid(1))).status is GuidStatus.IN_PROGRESS
    await store.record_stage(batch_id, guid(1), attempt, Stage.UPLOAD, "offset 0")
    await store.record_result(replace(result(batch_id, 1, Outcome.FAILED), rig=2, slot=5))

    state = await store.guid_state(batch_id, guid(1))
    assert (state.status, state.outcome, state.rig, state.slot) == (
        GuidStatus.FINAL,
        Outcome.FAILED,
        2,
        5,
    )
    assert (state.failure_stage, state.failure_code) == (Stage.VERIFY, "boot_reverted")
    assert state.last_link_errors == ("timeout after 2.0 s", "bad CRC")
    assert (state.started, state.finished) == (T0, T0 + timedelta(minutes=3))
    [record] = await store.attempts(batch_id, guid(1))
    assert record.finished is not None
    assert (record.stage_reached, record.error_code) == (Stage.VERIFY, "boot_reverted")
    kinds = [e.kind for e in await store.journal(guid=guid(1))]
    assert kinds == ["attempt_started", "stage", "result"]

    messages = await store.outbox_pending()
    topics = [route(m) for m in messages]
    assert topics[-2:] == [
        (f"batches/{batch_id}/results/{guid(1)}", 1, False),
        (f"batches/{batch_id}/summary", 1, True),
    ]
    payload = ResultPayload.model_validate_json(messages[-2].payload)
    assert payload.model_dump(mode="json", by_alias=True) | {"event_id": "", "ts": ""} == {
        "schema": "jigd.result/1",
        "event_id": "",
        "ts": "",
        "batch": batch_id,
        "guid": "00-DB-00-00-00-00-00-01",
        "outcome": "failed",
        "model": "1086/57310102",
        "from_version": "03000001",
        "to_version": None,
        "image_sha256": None,
        "rig": 2,
        "slot": 5,
        "attempts": 1,
        "started": "2025-03-01T08:00:00.000000Z",
        "finished": "2025-03-01T08:03:00.000000Z",
        "failure_stage": "verify",
        "failure_code": "boot_reverted",
        "failure_detail": "the hub booted its old image",
        "last_link_errors": ["timeout after 2.0 s", "bad CRC"],
    }
    summary = SummaryPayload.model_validate_json(messages[-1].payload)
    assert (summary.counts.failed, summary.pending, summary.received) == (1, 1, 1)


async def test_exactly_one_outcome_per_guid(store: Store) -> None:
    batch_id = await store.import_batch(rows(1), "WO", "P", "m.csv")
    await flash(store, batch_id, 1, Outcome.REFLASHED)
    before = await store.guid_state(batch_id, guid(1))
    depth = await store.outbox_depth()
    journal = await store.journal()
    with pytest.raises(OutcomeAlreadyRecordedError) as caught:
        await store.record_result(result(batch_id, 1, Outcome.FAILED))
    assert caught.value.outcome is Outcome.REFLASHED
    with pytest.raises(OutcomeAlreadyRecordedError):
        await store.begin_attempt(batch_id, guid(1), 1, 2)
    assert await store.guid_state(batch_id, guid(1)) == before
    assert await store.outbox_depth() == depth
    assert await store.journal() == journal


async def test_same_guid_in_two_slots_is_refused_and_retries_number_attempts(
    store: Store,
) -> None:
    batch_id = await store.import_batch(rows(1), "WO", "P", "m.csv")
    assert await store.begin_attempt(batch_id, guid(1), 1, 1) == 1
    with pytest.raises(GuidBusyError) as caught:
        await store.begin_attempt(batch_id, guid(1), 1, 2)
    assert (caught.value.rig, caught.value.slot) == (1, 1)
    await store.end_attempt(batch_id, guid(1), 1, stage=Stage.UPLOAD, error_code="link_timeout")
    assert await store.begin_attempt(batch_id, guid(1), 1, 1) == 2
    await store.record_result(result(batch_id, 1, Outcome.REFLASHED, attempts=2))
    attempts = await store.attempts(batch_id, guid(1))
    assert [(a.attempt, a.stage_reached, a.error_code) for a in attempts] == [
        (1, Stage.UPLOAD, "link_timeout"),
        (2, Stage.RECORD, None),
    ]
    assert all(a.finished is not None for a in attempts)


async def test_an_attempt_cut_off_unclosed_is_closed_when_its_slot_begins_again(
    store: Store,
) -> None:
    """A rig lost while the slot was closing a failed attempt leaves it open; the same slot's
    next attempt closes it as interrupted and goes on (another slot is still refused)."""
    batch_id = await store.import_batch(rows(1), "WO", "P", "m.csv")
    assert await store.begin_attempt(batch_id, guid(1), 2, 5) == 1
    with pytest.raises(GuidBusyError):
        await store.begin_attempt(batch_id, guid(1), 2, 6)
    assert await store.begin_attempt(batch_id, guid(1), 2, 5) == 2
    attempts = await store.attempts(batch_id, guid(1))
    assert [(a.attempt, a.error_code, a.finished is not None) for a in attempts] == [
        (1, "interrupted", True),
        (2, None, False),
    ]
    events = [e for e in await store.journal() if e.guid == guid(1)]
    assert [e.kind for e in events] == ["attempt_started", "interrupted", "attempt_started"]
    assert events[-1].data["resumed"] is True


async def test_interrupted_attempt_resumes_and_keeps_the_arrival_firmware(
    store: Store,
) -> None:
    batch_id = await store.import_batch(rows(1), "WO", "P", "m.csv")
    first = await store.begin_attempt(batch_id, guid(1), 1, 1, model=MODEL, from_version=OLD)
    await store.interrupt_attempt(batch_id, guid(1), first, stage=Stage.UPLOAD, reason="rig 1 down")
    state = await store.guid_state(batch_id, guid(1))
    assert state.status is GuidStatus.INTERRUPTED
    assert (state.model, state.from_version) == (MODEL, OLD)
    # Seen again after the hub was flashed by the interrupted attempt: it now reports NEW, but
    # the batch keeps the version it arrived with.
    second = await store.begin_attempt(batch_id, guid(1), 1, 2, model=MODEL, from_version=NEW)
    assert second == 2
    state = await store.guid_state(batch_id, guid(1))
    assert (state.status, state.from_version) == (GuidStatus.IN_PROGRESS, OLD)
    attempts = await store.attempts(batch_id, guid(1))
    assert [(a.attempt, a.stage_reached, a.error_code) for a in attempts] == [
        (1, Stage.UPLOAD, "interrupted"),
        (2, None, None),
    ]
    with pytest.raises(UnknownAttemptError):
        await store.interrupt_attempt(batch_id, guid(1), 1, stage=Stage.UPLOAD, reason="again")
    kinds = [e.kind for e in await store.journal(batch_id=batch_id, guid=guid(1))]
    assert kinds.count("interrupted") == 1


async def test_a_slot_releases_the_guid_it_let_go_of_whatever_was_begun(store: Store) -> None:
    """release_guid closes the slot's open attempt and ends `in_progress`; between attempts it
    ends `in_progress` alone; it never touches another slot's attempt or a final GUID."""
    batch_id = await store.import_batch(rows(1, 2, 3), "WO", "P", "m.csv")
    # An open attempt in the slot: closed as interrupted, the GUID interrupted.
    await store.begin_attempt(batch_id, guid(1), 1, 3)
    closed = await store.release_guid(
        batch_id, guid(1), 1, 3, stage=Stage.AUTHORIZE, reason="rig down"
    )
    assert closed == 1
    assert (await store.guid_state(batch_id, guid(1))).status is GuidStatus.INTERRUPTED
    [attempt] = await store.attempts(batch_id, guid(1))
    assert (attempt.error_code, attempt.error_detail) == ("interrupted", "rig down")
    assert attempt.finished is not None
    # Between attempts (the failed one closed, the next not begun): no longer in progress.
    await store.begin_attempt(batch_id, guid(2), 1, 3)
    await store.end_attempt(batch_id, guid(2), 1, stage=Stage.UPLOAD, error_code="timeout")
    assert (
        await store.release_guid(batch_id, guid(2), 1, 3, stage=Stage.IDENTIFY, reason="x") is None
    )
    assert (await store.guid_state(batch_id, guid(2))).status is GuidStatus.INTERRUPTED
    # Another slot's attempt, a GUID never begun, a final GUID, a second call: nothing changes.
    await store.begin_attempt(batch_id, guid(3), 2, 1)
    assert (
        await store.release_guid(batch_id, guid(3), 1, 3, stage=Stage.IDENTIFY, reason="x") is None
    )
    assert (await store.guid_state(batch_id, guid(3))).status is GuidStatus.IN_PROGRESS
    assert (
        await store.release_guid(batch_id, guid(1), 1, 3, stage=Stage.IDENTIFY, reason="x") is None
    )
    await store.record_result(result(batch_id, 3, Outcome.REFLASHED, slot=1))
    assert (
        await store.release_guid(batch_id, guid(3), 2, 1, stage=Stage.IDENTIFY, reason="x") is None
    )
    kinds = [e.kind for e in await store.journal(batch_id=batch_id) if e.kind == "interrupted"]
    assert len(kinds) == 2
    await store.close_batch(batch_id)


# --- closing --------------------------------------------------------------------------------------


async def test_close_marks_unseen_not_received_and_leaves_recorded_alone(
    store: Store,
) -> None:
    batch_id = await store.import_batch(rows(1, 2, 3, 4), "WO", "P", "m.csv")
    await flash(store, batch_id, 1, Outcome.REFLASHED)
    await flash(store, batch_id, 2, Outcome.FAILED)
    recorded = [await store.guid_state(batch_id, guid(n)) for n in (1, 2)]

    info = await store.close_batch(batch_id)
    assert info.status is BatchStatus.CLOSED
    assert info.closed_at is not None
    assert dict(info.counts) == {
        Outcome.REFLASHED: 1,
        Outcome.ALREADY_CURRENT: 0,
        Outcome.FAILED: 1,
        Outcome.NOT_RECEIVED: 2,
    }
    assert (info.expected, info.received, info.pending) == (4, 2, 0)
    assert [await store.guid_state(batch_id, guid(n)) for n in (1, 2)] == recorded
    for n in (3, 4):
        state = await store.guid_state(batch_id, guid(n))
        assert (state.status, state.outcome, state.attempts) == (
            GuidStatus.FINAL,
            Outcome.NOT_RECEIVED,
            0,
        )
    assert await store.find_open_batch(guid(3)) is None
    final = (await store.outbox_pending())[-1]
    assert (route(final).topic, route(final).retain) == (f"batches/{batch_id}/summary", True)
    summary = SummaryPayload.model_validate_json(final.payload)
    assert summary.status is BatchStatus.CLOSED
    assert summary.guids is not None
    assert summary.guids.reflashed == [guid(1)]
    assert summary.guids.failed == [guid(2)]
    assert summary.guids.not_received == [guid(3), guid(4)]
    assert summary.guids.already_current == []

    with pytest.raises(BatchClosedError):
        await store.close_batch(batch_id)
    with pytest.raises(OutcomeAlreadyRecordedError):
        await store.record_result(result(batch_id, 3, Outcome.REFLASHED))
    assert [b.batch_id for b in await store.list_batches(BatchStatus.OPEN)] == []
    assert [b.batch_id for b in await store.list_batches(BatchStatus.CLOSED)] == [batch_id]


async def test_close_waits_for_hubs_being_flashed(store: Store) -> None:
    batch_id = await store.import_batch(rows(1, 2), "WO", "P", "m.csv")
    await store.begin_attempt(batch_id, guid(1), 1, 3)
    with pytest.raises(BatchBusyError, match="rig 1 slot 3") as caught:
        await store.close_batch(batch_id)
    assert [g for g, _, _ in caught.value.busy] == [guid(1)]
    assert (await store.get_batch(batch_id)).status is BatchStatus.OPEN


# --- recovery -------------------------------------------------------------------------------------


async def test_interrupted_and_never_seen_again_fails_at_close(store_url: str) -> None:
    async with await open_store(store_url) as store:
        batch_id = await store.import_batch(rows(1), "WO", "P", "m.csv")
        attempt = await store.begin_attempt(batch_id, guid(1), 1, 1)
        await store.record_stage(batch_id, guid(1), attempt, Stage.UPLOAD)
    async with await open_store(store_url) as store:
        await store.recover_interrupted()
        info = await store.close_batch(batch_id)
        assert info.counts[Outcome.FAILED] == 1
        state = await store.guid_state(batch_id, guid(1))
        assert (state.failure_stage, state.failure_code) == (Stage.UPLOAD, "interrupted")
        topics = [route(m).topic for m in await store.outbox_pending()]
        assert f"batches/{batch_id}/results/{guid(1)}" in topics


# --- outbox ---------------------------------------------------------------------------------------


async def test_outbox_keeps_commit_order_and_stable_event_ids(store: Store, store_url: str) -> None:
    batch_id = await store.import_batch(rows(1, 2, 3), "WO", "P", "m.csv")
    await flash(store, batch_id, 2, Outcome.REFLASHED)
    await flash(store, batch_id, 1, Outcome.ALREADY_CURRENT)
    await store.record_rejected(guid(50), 2, 8, "not_in_batch")

    messages = await store.outbox_pending()
    assert [route(m).topic for m in messages] == [
        f"batches/{batch_id}/summary",
        f"batches/{batch_id}/results/{guid(2)}",
        f"batches/{batch_id}/summary",
        f"batches/{batch_id}/results/{guid(1)}",
        f"batches/{batch_id}/summary",
        "alerts",
    ]
    ids = [m.id for m in messages]
    assert ids == sorted(ids)
    event_ids = [m.event_id for m in messages]
    assert len(set(event_ids)) == len(event_ids)
    assert all(m.data()["event_id"] == m.event_id for m in messages)
    assert [m.data()["schema"] for m in messages] == [
        "jigd.summary/1",
        "jigd.result/1",
        "jigd.summary/1",
        "jigd.result/1",
        "jigd.summary/1",
        "jigd.alert/1",
    ]
    assert await store.outbox_pending() == messages
    assert await store.outbox_pending(limit=2) == messages[:2]

    assert await store.mark_published([ids[0], ids[1]]) == 2
    assert await store.mark_published([ids[0]]) == 0
    assert await store.outbox_depth() == 4
    assert await store.outbox_pending() == messages[2:]

    await store.close()
    async with await open_store(store_url) as reopened:
        again = await reopened.outbox_pending()
        assert [(m.id, m.event_id, m.payload) for m in again] == [
            (m.id, m.event_id, m.payload) for m in messages[2:]
        ]


async def test_results_recorded_at_once_keep_their_batchs_order(store: Store) -> None:
    """Slots finishing together (a PostgreSQL store commits them in parallel): every result
    commits, each before the summary that counts it, and the summaries count up one by one."""
    slots = range(1, 9)
    batch_id = await store.import_batch(rows(*slots), "WO", "P", "m.csv")
    for n in slots:
        await store.begin_attempt(batch_id, guid(n), 1, n)
    await asyncio.gather(
        *(store.record_result(result(batch_id, n, Outcome.REFLASHED, slot=n)) for n in slots)
    )
    assert counted_in_order(await store.outbox_pending(), batch_id) == list(range(9))
    assert (await store.get_batch(batch_id)).counts[Outcome.REFLASHED] == 8


async def test_record_rejected_is_outside_every_batch(store: Store) -> None:
    batch_id = await store.import_batch(rows(1), "WO", "P", "m.csv")
    await store.record_rejected(guid(50), 2, 8, "not_in_batch")
    [rejected] = await store.list_rejected()
    assert (rejected.guid, rejected.rig, rejected.slot, rejected.reason) == (
        guid(50),
        2,
        8,
        "not_in_batch",
    )
    assert (await store.get_batch(batch_id)).expected == 1
    [event] = await store.journal(guid=guid(50))
    assert (event.kind, event.batch_id, event.rig, event.slot) == ("rejected", None, 2, 8)
    alert = (await store.outbox_pending())[-1]
    assert route(alert) == ("alerts", 1, False)
    payload = AlertPayload.model_validate_json(alert.payload)
    assert (payload.kind, payload.guid, payload.reason) == (
        "rejected_hub",
        guid(50),
        "not_in_batch",
    )


async def test_hubs_rejected_before_their_batch_are_set_aside_until_put_back(
    store: Store,
) -> None:
    await store.record_rejected(guid(1), 1, 3, "not_in_batch")
    await store.record_rejected(guid(2), 1, 4, "not_in_batch")
    await store.record_rejected(guid(2), 2, 5, "not_in_batch")  # tried again elsewhere
    await store.record_rejected(guid(3), 1, 6, "other_reason")
    await store.record_rejected(guid(9), 1, 7, "not_in_batch")  # in no batch
    before = len(await store.outbox_pending())
    batch_id = await store.import_batch(rows(1, 2, 3, 4), "WO", "P", "m.csv")

    aside = await store.set_aside(batch_id)
    assert [(h.guid, h.rig, h.slot) for h in aside] == [(guid(1), 1, 3), (guid(2), 2, 5)]
    created = (await store.get_batch(batch_id)).created_at
    assert all(h.seen_at < created for h in aside)  # seen before the import
    alerts = [
        AlertPayload.model_validate_json(m.payload)
        for m in (await store.outbox_pending())[before:]
        if route(m).topic == "alerts"
    ]
    assert [(a.kind, a.guid, a.rig, a.slot, a.reason) for a in alerts] == [
        ("hub_set_aside", guid(1), 1, 3, "not_in_batch"),
        ("hub_set_aside", guid(2), 2, 5, "not_in_batch"),
    ]
    assert all(batch_id in a.message and "re-insert" in a.message for a in alerts)
    assert [e.kind for e in await store.journal(batch_id=batch_id, guid=guid(1))] == ["set_aside"]

    # A slot that looked just before the import committed rejects after it: set aside too.
    await store.record_rejected(guid(4), 1, 1, "not_in_batch")
    assert [h.guid for h in await store.set_aside(batch_id)] == [guid(1), guid(2), guid(4)]
    # Put back: it leaves the list at its first attempt.
    await flash(store, batch_id, 1, Outcome.REFLASHED)
    assert [h.guid for h in await store.set_aside(batch_id)] == [guid(2), guid(4)]
    await flash(store, batch_id, 4, Outcome.FAILED)

    info = await store.close_batch(batch_id)
    assert info.counts[Outcome.NOT_RECEIVED] == 2
    assert info.expected == sum(info.counts.values())
    assert [h.guid for h in await store.set_aside(batch_id)] == [guid(2)]
    final = SummaryPayload.model_validate_json((await store.outbox_pending())[-1].payload)
    assert final.guids is not None
    assert (final.guids.not_received, final.set_aside) == ([guid(2), guid(3)], [guid(2)])
    with pytest.raises(UnknownBatchError):
        await store.set_aside("B999999")


async def test_outbox_changed_is_set_by_commits_that_queue_messages(store: Store) -> None:
    store.outbox_changed.clear()
    batch_id = await store.import_batch(rows(1), "WO", "P", "m.csv")
    assert store.outbox_changed.is_set()
    store.outbox_changed.clear()
    await store.begin_attempt(batch_id, guid(1), 1, 1)
    assert not store.outbox_changed.is_set()
    await store.record_result(result(batch_id, 1, Outcome.REFLASHED))
    assert store.outbox_changed.is_set()
