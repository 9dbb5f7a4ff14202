"""The SQLite store keeps the books: one outcome per GUID, durable results, an ordered outbox."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
import threading
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from jigd.manifest import ManifestError, ManifestRow, parse_manifest
from jigd.model import DeviceModel, FirmwareVersion, Guid, Outcome, Stage
from jigd.payloads import AlertPayload, ResultPayload, SummaryPayload
from jigd.store import (
    BatchBusyError,
    BatchClosedError,
    BatchStatus,
    GuidBusyError,
    GuidInOpenBatchError,
    GuidResult,
    GuidStatus,
    InterruptedGuid,
    InvalidResultError,
    OutcomeAlreadyRecordedError,
    SchemaVersionError,
    Store,
    StoreClosedError,
    StoreError,
    UnknownAttemptError,
    UnknownBatchError,
    UnknownGuidError,
)
from jigd.store.sqlite import MIGRATIONS, SqliteStore

REPO = Path(__file__).resolve().parents[3]
MODEL = DeviceModel(0x1086, 0x57310102)
OLD = FirmwareVersion(0x03000001)
NEW = FirmwareVersion(0x04000007)
SHA = "ab" * 32
T0 = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)


class StepClock:
    """A clock that moves one second per reading, so every record has a distinct time."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


def guid(n: int) -> Guid:
    return Guid(0x00DB_0000_0000_0000 + n)


def rows(*numbers: int) -> list[ManifestRow]:
    return [ManifestRow(i + 2, guid(n), MODEL, OLD) for i, n in enumerate(numbers)]


def result(
    batch_id: str, n: int, outcome: Outcome, *, attempts: int = 1, slot: int = 1
) -> GuidResult:
    """A valid result of each outcome; tests vary it with dataclasses.replace."""
    fields: dict[str, object] = {"from_version": OLD, "to_version": NEW, "image_sha256": SHA}
    if outcome is Outcome.ALREADY_CURRENT:
        fields["from_version"] = NEW
    elif outcome is Outcome.FAILED:
        fields = {
            "from_version": OLD,
            "failure_stage": Stage.VERIFY,
            "failure_code": "boot_reverted",
            "failure_detail": "the hub booted its old image",
            "last_link_errors": ("timeout after 2.0 s", "bad CRC"),
        }
    return GuidResult(
        batch_id=batch_id,
        guid=guid(n),
        outcome=outcome,
        rig=1,
        slot=slot,
        attempts=attempts,
        started=T0,
        finished=T0 + timedelta(minutes=3),
        model=MODEL,
        **fields,  # type: ignore[arg-type]  # per-outcome fields of several types
    )


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "var" / "jigd.sqlite3"


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[SqliteStore]:
    async with await SqliteStore.open(db_path, clock=StepClock()) as opened:
        yield opened


async def flash(store: SqliteStore, batch_id: str, n: int, outcome: Outcome) -> None:
    attempt = await store.begin_attempt(batch_id, guid(n), 1, 1)
    await store.record_result(result(batch_id, n, outcome, attempts=attempt))


# --- opening ------------------------------------------------------------------------------------


async def test_open_creates_directories_and_uses_wal_full_sync_foreign_keys(
    store: SqliteStore, db_path: Path
) -> None:
    assert await asyncio.to_thread(db_path.is_file)
    assert await store.schema_version() == len(MIGRATIONS)

    def pragmas() -> tuple[str, int, int]:
        conn = store._db  # the worker thread's own connection
        return (
            conn.execute("PRAGMA journal_mode").fetchone()[0],
            conn.execute("PRAGMA synchronous").fetchone()[0],
            conn.execute("PRAGMA foreign_keys").fetchone()[0],
        )

    assert await store._run(pragmas) == ("wal", 2, 1)  # 2 is FULL


def test_sqlite_store_implements_the_store_protocol() -> None:
    # Checked by mypy: the station, MQTT publisher and reports depend on `Store` only.
    implementation: type[Store] = SqliteStore
    assert implementation is SqliteStore


async def test_all_database_work_runs_on_one_worker_thread(store: SqliteStore) -> None:
    threads = {await store._run(threading.get_ident) for _ in range(5)}
    assert len(threads) == 1
    assert threading.get_ident() not in threads


async def test_close_stops_the_thread_and_refuses_further_use(db_path: Path) -> None:
    store = await SqliteStore.open(db_path)
    before = {t.name for t in threading.enumerate()}
    assert any(name.startswith("jigd-store") for name in before)
    await store.close()
    await store.close()  # idempotent
    assert not any(t.name.startswith("jigd-store") for t in threading.enumerate())
    with pytest.raises(StoreClosedError):
        await store.list_batches()


async def test_open_names_the_path_when_it_cannot_create_the_store(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    await asyncio.to_thread(blocker.write_text, "not a directory")
    with pytest.raises(StoreError, match=r"file/jigd\.sqlite3: cannot create"):
        await SqliteStore.open(blocker / "jigd.sqlite3")
    assert not any(t.name.startswith("jigd-store") for t in threading.enumerate())


# --- batches ------------------------------------------------------------------------------------


async def test_import_batch_gives_topic_safe_ids_and_queues_a_summary(store: SqliteStore) -> None:
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
    assert (message.topic, message.qos, message.retain) == ("batches/B000001/summary", 1, True)
    summary = SummaryPayload.model_validate_json(message.payload)
    assert (summary.expected, summary.pending, summary.guids) == (3, 3, None)


async def test_declared_model_and_firmware_are_kept(store: SqliteStore) -> None:
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
    store: SqliteStore,
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
    store: SqliteStore, manifest: list[ManifestRow], booking: str, party: str, expected: str
) -> None:
    with pytest.raises(ManifestError) as caught:
        await store.import_batch(manifest, booking, party, "m.csv")
    assert caught.value.problems[0].startswith(expected)
    assert await store.list_batches() == []


async def test_unknown_batch_and_guid_are_typed_errors(store: SqliteStore) -> None:
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


# --- attempts and results -----------------------------------------------------------------------


async def test_record_result_writes_state_attempt_journal_and_outbox_together(
    store: SqliteStore,
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
    topics = [(m.topic, m.qos, m.retain) for m in messages]
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


async def test_exactly_one_outcome_per_guid(store: SqliteStore) -> None:
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


async def test_final_outcome_and_journal_are_protected_in_the_database(
    store: SqliteStore, db_path: Path
) -> None:
    batch_id = await store.import_batch(rows(1), "WO", "P", "m.csv")
    await flash(store, batch_id, 1, Outcome.REFLASHED)
    await store.close()
    conn = sqlite3.connect(db_path)
    try:
        with pytest.raises(sqlite3.IntegrityError, match="final outcome cannot change"):
            conn.execute("UPDATE guid_states SET outcome = 'failed'")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("DELETE FROM events")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("UPDATE events SET kind = 'x'")
    finally:
        conn.close()


async def test_same_guid_in_two_slots_is_refused_and_retries_number_attempts(
    store: SqliteStore,
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
    store: SqliteStore,
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


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"outcome": Outcome.NOT_RECEIVED}, "closing the batch"),
        ({"slot": 9}, "slot 9"),
        ({"attempts": 0}, "attempts 0"),
        ({"started": datetime(2025, 3, 1)}, "no timezone"),
        ({"finished": T0 - timedelta(seconds=1)}, "before started"),
        ({"image_sha256": "AB" * 32}, "lower-case hex"),
        ({"failure_code": "x", "failure_stage": Stage.UPLOAD}, "only a failed result"),
        ({"to_version": None}, "needs from and to"),
    ],
)
def test_result_fields_must_fit_the_outcome(changes: dict[str, object], message: str) -> None:
    good = result("B000001", 1, Outcome.REFLASHED)
    with pytest.raises(InvalidResultError, match=message) as caught:
        replace(good, **changes)  # type: ignore[arg-type]  # values of several field types
    assert str(guid(1)) in str(caught.value)
    with pytest.raises(InvalidResultError, match="failure stage and code"):
        replace(result("B000001", 1, Outcome.FAILED), failure_code=None)


# --- closing ------------------------------------------------------------------------------------


async def test_close_marks_unseen_not_received_and_leaves_recorded_alone(
    store: SqliteStore,
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
    assert (final.topic, final.retain) == (f"batches/{batch_id}/summary", True)
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


async def test_close_waits_for_hubs_being_flashed(store: SqliteStore) -> None:
    batch_id = await store.import_batch(rows(1, 2), "WO", "P", "m.csv")
    await store.begin_attempt(batch_id, guid(1), 1, 3)
    with pytest.raises(BatchBusyError, match="rig 1 slot 3") as caught:
        await store.close_batch(batch_id)
    assert [g for g, _, _ in caught.value.busy] == [guid(1)]
    assert (await store.get_batch(batch_id)).status is BatchStatus.OPEN


# --- durability and recovery --------------------------------------------------------------------

CHILD = """
import asyncio, os, signal, sys
from datetime import UTC, datetime
from pathlib import Path

from jigd.manifest import parse_manifest
from jigd.model import FirmwareVersion, Outcome
from jigd.store import GuidResult
from jigd.store.sqlite import SqliteStore


async def main(path):
    store = await SqliteStore.open(Path(path))
    rows = parse_manifest(b"guid\\n00DB000000000001\\n00DB000000000002\\n00DB000000000003\\n", "m")
    batch_id = await store.import_batch(rows, "WO", "P", "m.csv")
    one, two, _ = (row.guid for row in rows)
    await store.begin_attempt(batch_id, two, 1, 2)
    attempt = await store.begin_attempt(batch_id, one, 1, 1)
    now = datetime.now(UTC)
    await store.record_result(GuidResult(
        batch_id=batch_id, guid=one, outcome=Outcome.REFLASHED, rig=1, slot=1, attempts=attempt,
        started=now, finished=now, from_version=FirmwareVersion(1), to_version=FirmwareVersion(2),
        image_sha256="cd" * 32,
    ))
    print(batch_id, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # no close, no checkpoint: the WAL must carry it


asyncio.run(main(sys.argv[1]))
"""


async def test_results_survive_sigkill_and_in_progress_becomes_interrupted(db_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        str(db_path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    out, err = await proc.communicate()
    assert proc.returncode == -signal.SIGKILL, err.decode()
    batch_id = out.decode().strip()

    async with await SqliteStore.open(db_path) as store:
        state = await store.guid_state(batch_id, guid(1))
        assert (state.outcome, state.to_version, state.image_sha256) == (
            Outcome.REFLASHED,
            FirmwareVersion(2),
            "cd" * 32,
        )
        topics = [m.topic for m in await store.outbox_pending()]
        assert topics == [
            f"batches/{batch_id}/summary",
            f"batches/{batch_id}/results/{guid(1)}",
            f"batches/{batch_id}/summary",
        ]
        assert (await store.guid_state(batch_id, guid(2))).status is GuidStatus.IN_PROGRESS

        assert await store.recover_interrupted() == [InterruptedGuid(batch_id, guid(2))]
        assert await store.recover_interrupted() == []
        state = await store.guid_state(batch_id, guid(2))
        assert (state.status, state.outcome) == (GuidStatus.INTERRUPTED, None)
        [attempt] = await store.attempts(batch_id, guid(2))
        assert attempt.error_code == "interrupted"
        assert [e.kind for e in await store.journal(guid=guid(2))] == [
            "attempt_started",
            "interrupted",
        ]
        # Seen again: resumed as the next attempt.
        assert await store.begin_attempt(batch_id, guid(2), 1, 4) == 2
        assert (await store.journal(guid=guid(2)))[-1].data["resumed"] is True


async def test_interrupted_and_never_seen_again_fails_at_close(db_path: Path) -> None:
    async with await SqliteStore.open(db_path) as store:
        batch_id = await store.import_batch(rows(1), "WO", "P", "m.csv")
        attempt = await store.begin_attempt(batch_id, guid(1), 1, 1)
        await store.record_stage(batch_id, guid(1), attempt, Stage.UPLOAD)
    async with await SqliteStore.open(db_path) as store:
        await store.recover_interrupted()
        info = await store.close_batch(batch_id)
        assert info.counts[Outcome.FAILED] == 1
        state = await store.guid_state(batch_id, guid(1))
        assert (state.failure_stage, state.failure_code) == (Stage.UPLOAD, "interrupted")
        topics = [m.topic for m in await store.outbox_pending()]
        assert f"batches/{batch_id}/results/{guid(1)}" in topics


# --- outbox -------------------------------------------------------------------------------------


async def test_outbox_keeps_commit_order_and_stable_event_ids(
    store: SqliteStore, db_path: Path
) -> None:
    batch_id = await store.import_batch(rows(1, 2, 3), "WO", "P", "m.csv")
    await flash(store, batch_id, 2, Outcome.REFLASHED)
    await flash(store, batch_id, 1, Outcome.ALREADY_CURRENT)
    await store.record_rejected(guid(50), 2, 8, "not_in_batch")

    messages = await store.outbox_pending()
    assert [m.topic for m in messages] == [
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
    async with await SqliteStore.open(db_path) as reopened:
        again = await reopened.outbox_pending()
        assert [(m.id, m.event_id, m.payload) for m in again] == [
            (m.id, m.event_id, m.payload) for m in messages[2:]
        ]


async def test_record_rejected_is_outside_every_batch(store: SqliteStore) -> None:
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
    assert (alert.topic, alert.qos, alert.retain) == ("alerts", 1, False)
    payload = AlertPayload.model_validate_json(alert.payload)
    assert (payload.kind, payload.guid, payload.reason) == (
        "rejected_hub",
        guid(50),
        "not_in_batch",
    )


async def test_outbox_changed_is_set_by_commits_that_queue_messages(store: SqliteStore) -> None:
    store.outbox_changed.clear()
    batch_id = await store.import_batch(rows(1), "WO", "P", "m.csv")
    assert store.outbox_changed.is_set()
    store.outbox_changed.clear()
    await store.begin_attempt(batch_id, guid(1), 1, 1)
    assert not store.outbox_changed.is_set()
    await store.record_result(result(batch_id, 1, Outcome.REFLASHED))
    assert store.outbox_changed.is_set()


# --- the event loop -----------------------------------------------------------------------------


async def test_event_loop_keeps_ticking_during_a_large_import(store: SqliteStore) -> None:
    loop = asyncio.get_running_loop()
    manifest = [ManifestRow(i + 2, guid(i), MODEL, OLD) for i in range(10_000)]
    gaps: list[float] = []
    importing = asyncio.Event()
    done = asyncio.Event()

    async def ticker() -> None:
        last = loop.time()
        while not done.is_set():
            await asyncio.sleep(0.005)
            now = loop.time()
            if importing.is_set():
                gaps.append(now - last)
            last = now

    # Which threads run SQL: the connection reports every statement it executes.
    sql_threads: set[int] = set()
    await store._run(
        store._db.set_trace_callback, lambda statement: sql_threads.add(threading.get_ident())
    )
    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.01)
    importing.set()
    await store.import_batch(manifest, "WO", "P", "big.csv")
    done.set()
    await task
    await store._run(store._db.set_trace_callback, None)
    assert (await store.get_batch("B000001")).expected == 10_000
    # No statement ran on the event loop's thread, and the loop kept ticking meanwhile (a
    # blocking import would give no tick at all until it returned).
    assert sql_threads
    assert threading.get_ident() not in sql_threads
    assert len(gaps) >= 3


# --- migrations ---------------------------------------------------------------------------------

SYNTHETIC_V2 = """
ALTER TABLE batches ADD COLUMN site TEXT NOT NULL DEFAULT 'unknown';
CREATE TABLE station_notes (id INTEGER PRIMARY KEY, note TEXT NOT NULL) STRICT;
"""


async def test_a_version_1_database_upgrades_and_keeps_its_data(db_path: Path) -> None:
    async with await SqliteStore.open(db_path, migrations=MIGRATIONS[:1]) as store:
        assert await store.schema_version() == 1
        batch_id = await store.import_batch(rows(1, 2), "WO", "P", "m.csv")
        await flash(store, batch_id, 1, Outcome.REFLASHED)

    migrations = (*MIGRATIONS[:1], SYNTHETIC_V2)
    async with await SqliteStore.open(db_path, migrations=migrations) as store:
        assert await store.schema_version() == 2
        assert (await store.guid_state(batch_id, guid(1))).outcome is Outcome.REFLASHED
        assert (await store.get_batch(batch_id)).expected == 2

        def site() -> str:
            return str(store._db.execute("SELECT site FROM batches").fetchone()[0])

        assert await store._run(site) == "unknown"
    conn = sqlite3.connect(db_path)
    try:
        versions = conn.execute("SELECT version FROM schema_migrations ORDER BY version")
        assert [v for (v,) in versions] == [1, 2]
    finally:
        conn.close()


async def test_a_failing_migration_rolls_back_whole(db_path: Path) -> None:
    async with await SqliteStore.open(db_path, migrations=MIGRATIONS[:1]):
        pass
    broken = (*MIGRATIONS[:1], SYNTHETIC_V2 + "\nINSERT INTO no_such_table VALUES (1);")
    with pytest.raises(StoreError, match="version 2 failed and was rolled back"):
        await SqliteStore.open(db_path, migrations=broken)
    conn = sqlite3.connect(db_path)
    try:
        columns = [row[1] for row in conn.execute("PRAGMA table_info(batches)")]
        assert "site" not in columns
        assert conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone() == (1,)
    finally:
        conn.close()


async def test_a_database_from_a_newer_jigd_is_refused(db_path: Path) -> None:
    async with await SqliteStore.open(db_path, migrations=(*MIGRATIONS, SYNTHETIC_V2)):
        pass
    with pytest.raises(SchemaVersionError, match="newer than this jigd"):
        await SqliteStore.open(db_path)
    assert not any(t.name.startswith("jigd-store") for t in threading.enumerate())


async def test_interrupted_attempt_resumes_and_keeps_the_arrival_firmware(
    store: SqliteStore,
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
