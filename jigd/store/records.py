"""What every SQL backend of the store shares and needs no database for: checking the input of
an operation, and turning rows into the contract's values. A backend's SQL differs; these rules
do not, so SQLite and PostgreSQL refuse the same input with the same message and read the same
rows into the same values."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from jigd.events import MAX_SLOT, AlertKind, GuidResult, format_utc, parse_utc
from jigd.manifest import FILE_FIELD, ManifestError, ManifestProblem, ManifestRow
from jigd.model import DeviceModel, FirmwareVersion, Guid, Outcome, Stage
from jigd.store.errors import (
    GuidBusyElsewhereError,
    GuidInOpenBatchError,
    InvalidRecordError,
    StoreError,
)
from jigd.store.values import (
    INTERRUPTED_CODE,
    AttemptRecord,
    BatchRef,
    GuidState,
    GuidStatus,
    HubTimes,
    SelftestCheck,
)

__all__ = [
    "ADOPTED",
    "ATTEMPT_COLUMNS",
    "FINAL_STATE_COLUMNS",
    "OUTCOME_COLUMNS",
    "STATE_COLUMNS",
    "STATE_FROM",
    "batch_id_of",
    "books_problems",
    "check_alert",
    "check_holder",
    "check_import",
    "check_selftest",
    "check_slot",
    "conflict_error",
    "failed_at_close",
    "final_attempt",
    "final_state",
    "oldest_open_batch",
    "opt_str",
    "opt_time",
    "result_journal",
    "to_attempt",
    "to_hub_times",
    "to_state",
]

STATE_COLUMNS = """
    s.batch_id, s.guid, e.line, e.declared_model, e.declared_firmware, s.status, s.outcome,
    s.model, s.from_version, s.to_version, s.image_sha256, s.rig, s.slot, s.attempts,
    s.started_at, s.finished_at, s.failure_stage, s.failure_code, s.failure_detail,
    s.last_link_errors, s.locked, s.station
"""
# What a station adopts, on opening, from before schema 6 (docs/architecture.md, "Site"): the
# rows that can still change, as (table, condition); both backends set their `station`.
ADOPTED: tuple[tuple[str, str], ...] = (
    ("attempts", "station = '' AND finished_at IS NULL"),
    ("guid_states", "station IS NULL AND status IN ('in_progress', 'interrupted')"),
    ("rejected_hubs", "station = ''"),
    ("slot_service", "station = ''"),
    ("selftests", "station = ''"),
)
STATE_FROM = "guid_states s JOIN expected_guids e USING (batch_id, guid)"
ATTEMPT_COLUMNS = (
    "attempt, rig, slot, started_at, finished_at, stage_reached, error_code, error_detail"
)
# The GUID state a result sets (with status 'final' and updated_at): final_state's order.
FINAL_STATE_COLUMNS = (
    "outcome, model, from_version, to_version, image_sha256, rig, slot, attempts, started_at, "
    "finished_at, failure_stage, failure_code, failure_detail, last_link_errors, locked"
)
# batch_counts' columns of the outcomes, in the order of Outcome.
OUTCOME_COLUMNS = ", ".join(str(o) for o in Outcome)


def batch_id_of(seq: int) -> str:
    """Safe in a path or a topic level (no `/`, `+`, `#`); sortable for the first million."""
    return f"B{seq:06d}"


def opt_time(text: str | None) -> datetime | None:
    return None if text is None else parse_utc(text)


def opt_str(value: object | None) -> str | None:
    return None if value is None else str(value)


def check_slot(rig: int, slot: int) -> None:
    if rig < 1 or not 1 <= slot <= MAX_SLOT:
        raise InvalidRecordError(f"rig {rig} slot {slot} is not a rig (1+) and slot (1-{MAX_SLOT})")


def to_state(row: Sequence[Any]) -> GuidState:
    """A GUID state from a row of STATE_COLUMNS."""
    (
        batch_id,
        guid,
        line,
        declared_model,
        declared_firmware,
        status,
        outcome,
        model,
        from_version,
        to_version,
        image_sha256,
        rig,
        slot,
        attempts,
        started,
        finished,
        failure_stage,
        failure_code,
        failure_detail,
        last_link_errors,
        locked,
        station,
    ) = row
    return GuidState(
        batch_id=batch_id,
        guid=Guid.parse(guid),
        line=line,
        declared_model=None if declared_model is None else DeviceModel.parse(declared_model),
        declared_firmware_version=(
            None if declared_firmware is None else FirmwareVersion.parse(declared_firmware)
        ),
        status=GuidStatus(status),
        outcome=None if outcome is None else Outcome(outcome),
        model=None if model is None else DeviceModel.parse(model),
        from_version=None if from_version is None else FirmwareVersion.parse(from_version),
        to_version=None if to_version is None else FirmwareVersion.parse(to_version),
        image_sha256=image_sha256,
        rig=rig,
        slot=slot,
        attempts=attempts,
        started=opt_time(started),
        finished=opt_time(finished),
        failure_stage=None if failure_stage is None else Stage(failure_stage),
        failure_code=failure_code,
        failure_detail=failure_detail,
        last_link_errors=tuple(json.loads(last_link_errors)),
        locked=None if locked is None else bool(locked),
        station=station,
    )


def to_attempt(row: Sequence[Any]) -> AttemptRecord:
    """An attempt from a row of ATTEMPT_COLUMNS."""
    attempt, rig, slot, started, finished, stage, code, detail = row
    return AttemptRecord(
        attempt=attempt,
        rig=rig,
        slot=slot,
        started=parse_utc(started),
        finished=opt_time(finished),
        stage_reached=None if stage is None else Stage(stage),
        error_code=code,
        error_detail=detail,
    )


def to_hub_times(row: Sequence[Any]) -> HubTimes:
    """A hub's times from a row of the backends' hub-times query: batch, GUID, model, outcome,
    rig, slot, attempts, first start, finish, last attempt's start, end of its upload."""
    (
        batch_id,
        guid,
        model,
        outcome,
        rig,
        slot,
        attempts,
        started,
        finished,
        last_started,
        uploaded,
    ) = row
    return HubTimes(
        batch_id=batch_id,
        guid=Guid.parse(guid),
        model=DeviceModel.parse(model),
        outcome=Outcome(outcome),
        rig=rig,
        slot=slot,
        attempts=attempts,
        started=parse_utc(started),
        finished=parse_utc(finished),
        last_started=parse_utc(last_started),
        uploaded=opt_time(uploaded),
    )


def failed_at_close(state: GuidState, stage: Stage, now: datetime) -> GuidResult:
    """The `failed` result a GUID seen but without an outcome (interrupted, or between
    attempts) gets when its batch closes; `stage` is the last stage its attempts reached."""
    if state.rig is None or state.slot is None or state.started is None:
        # begin_attempt sets all three before a GUID can be in these states.
        raise StoreError(
            f"GUID {state.guid} of batch {state.batch_id} is {state.status} "
            "without rig, slot or start time; the database is inconsistent"
        )
    return GuidResult(
        batch_id=state.batch_id,
        guid=state.guid,
        outcome=Outcome.FAILED,
        rig=state.rig,
        slot=state.slot,
        attempts=max(state.attempts, 1),
        started=state.started,
        finished=now,
        model=state.model,
        from_version=state.from_version,
        failure_stage=stage,
        failure_code=INTERRUPTED_CODE,
        failure_detail=(
            "the flash was cut short and the hub was not seen again before the batch "
            "closed; flash it again in a new batch"
        ),
        last_link_errors=state.last_link_errors,
    )


def check_import(rows: Sequence[ManifestRow], booking: str, party: str, source: str) -> None:
    """Input checks that need no database; raise ManifestError naming each problem."""
    problems = []
    if not booking:
        problems.append(
            ManifestProblem(
                source, None, "booking", "empty; give the Work Order's booking reference"
            )
        )
    if not party:
        problems.append(
            ManifestProblem(source, None, "party", "empty; give the SEC Party that sent the hubs")
        )
    if not rows:
        problems.append(ManifestProblem(source, None, FILE_FIELD, "no GUIDs to import"))
    first: dict[Guid, int] = {}
    for row in rows:
        if row.guid in first:
            problems.append(
                ManifestProblem(
                    source,
                    row.line,
                    "guid",
                    f"{row.guid} is listed twice, on lines {first[row.guid]} and {row.line}; "
                    "list each GUID once",
                )
            )
        else:
            first[row.guid] = row.line
    if problems:
        raise ManifestError(source, problems)


def conflict_error(
    source: str, rows: Mapping[str, ManifestRow], conflicts: Mapping[Guid, tuple[str, int, str]]
) -> GuidInOpenBatchError:
    """The import refused: each GUID mapped to (open batch, its line there, its source)."""
    problems = []
    for guid, (other, other_line, other_source) in sorted(conflicts.items()):
        row = rows[str(guid)]
        problems.append(
            ManifestProblem(
                source,
                row.line,
                "guid",
                f"{guid} is already in open batch {other} (line {other_line} of {other_source}); "
                f"remove this line, or close batch {other} first",
            )
        )
    return GuidInOpenBatchError(source, problems, {g: c[0] for g, c in conflicts.items()})


def check_alert(
    kind: AlertKind, detail: str, rig: int | None, slot: int | None, model: DeviceModel | None
) -> None:
    """InvalidRecordError when the fields do not fit an alert of `kind` (Store.record_alert)."""
    if kind is AlertKind.REJECTED_HUB:
        raise InvalidRecordError("a rejected hub is recorded with record_rejected")
    if kind is AlertKind.HUB_SET_ASIDE:
        raise InvalidRecordError("a set-aside hub is alerted by import_batch")
    if kind in (AlertKind.SLOT_DISABLED, AlertKind.SLOT_ENABLED):
        raise InvalidRecordError(f"a {kind} alert comes from set_slot_service")
    if kind is AlertKind.RIG_OFFLINE and rig is None:
        raise InvalidRecordError("a rig_offline alert needs the rig")
    if kind is AlertKind.SLOT_SUSPECT and (rig is None or slot is None):
        raise InvalidRecordError("a slot_suspect alert needs the rig and slot")
    if kind is AlertKind.NO_FIRMWARE and model is None:
        raise InvalidRecordError("a no_firmware alert needs the Device Model")
    if rig is not None and rig < 1:
        raise InvalidRecordError(f"rig {rig} is not a rig number (1 or more)")
    if slot is not None:
        if rig is None:
            raise InvalidRecordError(f"slot {slot} of which rig? an alert needs both")
        check_slot(rig, slot)
    if not detail.strip():
        raise InvalidRecordError(f"{kind} alert: the detail is empty")


def check_selftest(rig: int, checks: Sequence[SelftestCheck]) -> None:
    """InvalidRecordError for a self-test that cannot be stored (Store.record_selftest)."""
    if rig < 1:
        raise InvalidRecordError(f"rig {rig} is not a rig number (1 or more)")
    if not checks:
        raise InvalidRecordError(f"rig {rig}: a self-test with no checks")
    for check in checks:
        if check.slot is not None:
            check_slot(rig, check.slot)


def books_problems(
    kept: Mapping[str, tuple[int, ...]], recounts: Sequence[Sequence[Any]]
) -> list[str]:
    """Each batch whose books do not balance, one line each (see Store.check_books).

    `kept` maps a batch to its kept counts (expected, received, pending, the outcomes in the
    order of Outcome); `recounts` are rows of (batch, status, the same counts recounted from
    the GUID states, GUIDs listed), in batch order.
    """
    problems = []
    for batch_id, status, *recount, listed in recounts:
        counts = kept.get(batch_id)
        expected, _, pending, *outcomes = recount
        if counts is None:
            problems.append(f"batch {batch_id}: no kept counts")
        elif counts != tuple(recount):
            problems.append(f"batch {batch_id}: kept counts {counts} but a recount gives {recount}")
        if listed != expected or expected != pending + sum(outcomes):
            problems.append(
                f"batch {batch_id}: {listed} GUIDs listed, {expected} with a state, "
                f"{pending} pending + {sum(outcomes)} with an outcome"
            )
        if status == "closed" and pending:
            problems.append(f"batch {batch_id}: closed with {pending} GUIDs pending")
    return problems


def check_holder(state: GuidState, station: str) -> None:
    """GuidBusyElsewhereError if another station holds the GUID (it is in progress there)."""
    if state.status is GuidStatus.IN_PROGRESS and state.station not in (None, "", station):
        raise GuidBusyElsewhereError(state.batch_id, state.guid, state.station)


def oldest_open_batch(
    guid: Guid, rows: Sequence[Sequence[Any]], logger: logging.Logger
) -> BatchRef | None:
    """Store.find_open_batch from its rows (batch, booking, party, line, declared model and
    firmware, status, outcome, station), oldest batch first; a GUID in several is logged."""
    if not rows:
        return None
    if len(rows) > 1:
        logger.warning(
            "GUID %s is in %d open batches (%s); using the oldest",
            guid,
            len(rows),
            ", ".join(r[0] for r in rows),
        )
    batch_id, booking, party, line, model, firmware, status, outcome, station = rows[0]
    return BatchRef(
        batch_id=batch_id,
        booking=booking,
        party=party,
        guid=guid,
        line=line,
        declared_model=None if model is None else DeviceModel.parse(model),
        declared_firmware_version=None if firmware is None else FirmwareVersion.parse(firmware),
        status=GuidStatus(status),
        outcome=None if outcome is None else Outcome(outcome),
        station=station,
    )


def final_state(result: GuidResult) -> tuple[Any, ...]:
    """A result's GUID state values, in the order of FINAL_STATE_COLUMNS."""
    return (
        str(result.outcome),
        opt_str(result.model),
        opt_str(result.from_version),
        opt_str(result.to_version),
        result.image_sha256,
        result.rig,
        result.slot,
        result.attempts,
        format_utc(result.started),
        format_utc(result.finished),
        opt_str(result.failure_stage),
        result.failure_code,
        result.failure_detail,
        json.dumps(list(result.last_link_errors)),
        result.locked,
    )


def final_attempt(result: GuidResult) -> tuple[Any, ...]:
    """A result's last attempt: number, rig, slot, start, finish, stage reached, error code and
    detail (the stage is `record` for a hub that did not fail)."""
    return (
        result.attempts,
        result.rig,
        result.slot,
        format_utc(result.started),
        format_utc(result.finished),
        str(result.failure_stage or Stage.RECORD),
        result.failure_code,
        result.failure_detail,
    )


def result_journal(result: GuidResult, event_id: str) -> dict[str, Any]:
    """The `result` journal event's fields (the journal's columns and its data)."""
    return {
        "batch_id": result.batch_id,
        "guid": result.guid,
        "rig": result.rig,
        "slot": result.slot,
        "outcome": str(result.outcome),
        "to_version": opt_str(result.to_version),
        "failure_stage": opt_str(result.failure_stage),
        "failure_code": result.failure_code,
        "locked": result.locked,
        "event_id": event_id,
    }
