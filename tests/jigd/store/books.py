"""Values for the store tests: GUIDs, manifest rows, results of each outcome, a stepping clock."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from jigd.events import EventKind, GuidResult
from jigd.manifest import ManifestRow
from jigd.model import DeviceModel, FirmwareVersion, Guid, Outcome, Stage
from jigd.payloads import Route, event_route
from jigd.reports import render_reports
from jigd.store import OutboxMessage, Store

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


async def flash(store: Store, batch_id: str, n: int, outcome: Outcome) -> None:
    attempt = await store.begin_attempt(batch_id, guid(n), 1, 1)
    await store.record_result(result(batch_id, n, outcome, attempts=attempt))


def route(message: OutboxMessage) -> Route:
    """Where the MQTT publisher sends an outbox event: topic suffix, QoS, retain."""
    return event_route(message.kind, message.data())


def counted_in_order(messages: list[OutboxMessage], batch_id: str) -> list[int]:
    """The outcomes each summary of an open batch counts, in outbox order (by id), checked
    against the order the batch's readers rely on: every GUID's result comes before a summary
    that counts it, so no summary counts more outcomes than results came before it."""
    counted: list[int] = []
    results = 0
    for message in sorted(messages, key=lambda m: m.id):
        data = message.data()
        if data.get("batch") != batch_id:
            continue
        if message.kind is EventKind.RESULT:
            results += 1
        elif message.kind is EventKind.SUMMARY:
            counted.append(sum(data["counts"].values()))
            assert counted[-1] <= results, f"summary {message.id} counts results queued after it"
    return counted


class SetClock:
    """A clock that reads what the test set (`now`): records get the times a test chooses."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


UPLOADED = "uploaded 262144 bytes, resumed from offset 0"  # what the slot journals


async def timed_flash(
    store: Store,
    clock: SetClock,
    batch_id: str,
    n: int,
    *,
    start: datetime,
    upload_s: float,
    activate_s: float,
    model: DeviceModel = MODEL,
    outcome: Outcome = Outcome.REFLASHED,
    failed_s: tuple[float, ...] = (),
    rig: int = 1,
) -> None:
    """A hub flashed with known times, as a slot records it: a failed attempt lasting each of
    `failed_s` (the next starts when it ends), then one that uploads for `upload_s` (none when
    already current) and ends `activate_s` later with `outcome`."""
    at = start
    for seconds in failed_s:
        clock.now = at
        attempt = await store.begin_attempt(batch_id, guid(n), rig, 1, model=model)
        at += timedelta(seconds=seconds)
        clock.now = at
        await store.end_attempt(batch_id, guid(n), attempt, stage=Stage.VERIFY, error_code="x")
    clock.now = at
    attempt = await store.begin_attempt(batch_id, guid(n), rig, 1, model=model)
    if outcome is Outcome.REFLASHED:
        at += timedelta(seconds=upload_s)
        clock.now = at
        await store.record_stage(batch_id, guid(n), attempt, Stage.UPLOAD, UPLOADED)
    at += timedelta(seconds=activate_s)
    clock.now = at
    done = result(batch_id, n, outcome, attempts=attempt)
    await store.record_result(replace(done, model=model, rig=rig, started=start, finished=at))


async def books_of(store: Store, batch_ids: list[str]) -> dict[str, dict[str, str]]:
    """Every report file of the batches, generated at one fixed time so they compare byte for
    byte."""
    return {batch_id: await render_reports(store, batch_id, now=T0) for batch_id in batch_ids}
