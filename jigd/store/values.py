"""The values the store returns: immutable, with the typed identifiers of jigd.model and
timezone-aware UTC datetimes."""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, NamedTuple

from jigd.events import (
    BatchStatus,
    EventKind,
    GuidLists,
    OutcomeCounts,
    SummaryEvent,
    new_event_id,
)
from jigd.model import DeviceModel, FirmwareVersion, Guid, Outcome, Stage

# The error code of an attempt cut short by something other than the hub (a restart, a lost rig,
# a pulled hub, jigd stopping), and the failure code of a GUID that was not seen again after one.
INTERRUPTED_CODE: Final = "interrupted"

__all__ = [
    "INTERRUPTED_CODE",
    "AttemptRecord",
    "BatchInfo",
    "BatchRef",
    "GuidState",
    "GuidStatus",
    "HubTimes",
    "InterruptedGuid",
    "JournalEvent",
    "OutboxMessage",
    "RejectedHub",
    "SelftestCheck",
    "SelftestRun",
    "SetAsideHub",
    "SlotService",
    "StationInfo",
    "summary_event",
]


class GuidStatus(enum.StrEnum):
    """Where a listed GUID is: not seen yet, being flashed, cut short by a restart, or done."""

    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    INTERRUPTED = "interrupted"
    FINAL = "final"


def _zero_counts() -> Mapping[Outcome, int]:
    return MappingProxyType(dict.fromkeys(Outcome, 0))


@dataclass(frozen=True, slots=True)
class BatchInfo:
    """A batch and how far it has got. `counts` has every outcome; `pending` has none yet."""

    batch_id: str
    booking: str
    party: str
    source: str
    status: BatchStatus
    created_at: datetime
    closed_at: datetime | None
    expected: int
    received: int  # GUIDs seen in a slot at least once
    pending: int  # GUIDs without an outcome yet (not seen, in progress or interrupted)
    counts: Mapping[Outcome, int] = field(default_factory=_zero_counts)


@dataclass(frozen=True, slots=True)
class BatchRef:
    """The open batch that lists a GUID, with what the sending party declared about the hub."""

    batch_id: str
    booking: str
    party: str
    guid: Guid
    line: int
    declared_model: DeviceModel | None
    declared_firmware_version: FirmwareVersion | None
    status: GuidStatus
    outcome: Outcome | None
    # The station that began the GUID's last attempt (None: none yet, or before schema 6): while
    # the GUID is in progress, the station that holds it (docs/architecture.md, "Site").
    station: str | None = None


@dataclass(frozen=True, slots=True)
class GuidState:
    """Everything recorded about one GUID of one batch."""

    batch_id: str
    guid: Guid
    line: int
    declared_model: DeviceModel | None
    declared_firmware_version: FirmwareVersion | None
    status: GuidStatus
    outcome: Outcome | None
    model: DeviceModel | None
    from_version: FirmwareVersion | None
    to_version: FirmwareVersion | None
    image_sha256: str | None
    rig: int | None
    slot: int | None
    attempts: int
    started: datetime | None
    finished: datetime | None
    failure_stage: Stage | None
    failure_code: str | None
    failure_detail: str | None
    last_link_errors: tuple[str, ...]
    locked: bool | None = None  # a failed hub: left locked (True), maybe open (False), not known
    # The station of its last attempt: the one holding it while in progress, the one that
    # recorded its result once final (None: no attempt, or recorded before schema 6).
    station: str | None = None


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One attempt on a GUID: where, when, the stage it reached and how it ended."""

    attempt: int
    rig: int
    slot: int
    started: datetime
    finished: datetime | None
    stage_reached: Stage | None
    error_code: str | None
    error_detail: str | None


@dataclass(frozen=True, slots=True)
class HubTimes:
    """When a GUID with an outcome of its own (reflashed, already_current, failed) was worked
    on: what the capacity plan measures (jigd.plan).

    `started` is its first attempt's start, `finished` its result; `last_started` is the start
    of its last attempt (the one that gave the outcome) and `uploaded` the end of that attempt's
    upload (None when it uploaded nothing).
    """

    batch_id: str
    guid: Guid
    model: DeviceModel
    outcome: Outcome
    rig: int
    slot: int
    attempts: int
    started: datetime
    finished: datetime
    last_started: datetime
    uploaded: datetime | None


class InterruptedGuid(NamedTuple):
    """A GUID whose attempt was cut short by a restart; resumed when the hub is seen again."""

    batch_id: str
    guid: Guid


@dataclass(frozen=True, slots=True)
class RejectedHub:
    """A hub seen in a slot that no open batch lists; outside every batch's books."""

    id: int
    guid: Guid
    rig: int
    slot: int
    reason: str
    ts: datetime


@dataclass(frozen=True, slots=True)
class SetAsideHub:
    """A GUID of a batch that was put in a slot before the batch was imported, rejected then
    (`not_in_batch`) and not put back since: the technician re-inserts it."""

    guid: Guid
    rig: int  # where it was last rejected
    slot: int
    seen_at: datetime


@dataclass(frozen=True, slots=True)
class JournalEvent:
    """One entry of the append-only journal: what happened, when, to which GUID/slot."""

    id: int
    ts: datetime
    kind: str
    batch_id: str | None
    guid: Guid | None
    rig: int | None
    slot: int | None
    data: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class PurgeCounts:
    """What a retention purge removed (or, in a dry run, would remove)."""

    outbox: int  # published outbox rows
    journal: int  # journal events
    dry_run: bool


@dataclass(frozen=True, slots=True)
class BackupInfo:
    """A finished online backup: its file, its size and how long the store was held for it."""

    path: Path
    size: int  # bytes
    blocked_s: float  # how long other store operations waited for the copy


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """An event waiting to be delivered (or delivered at `published_at`).

    `kind` says which event it is; `payload` is its JSON text exactly as committed, so a
    redelivery after a crash is byte for byte the same, `event_id` included.
    """

    id: int
    kind: EventKind
    payload: str
    event_id: str
    created_at: datetime
    published_at: datetime | None
    # The station that committed it: its topic is `<prefix>/<station>/...` ('' before schema 6:
    # the publishing station's own).
    station: str = ""

    def data(self) -> dict[str, Any]:
        """The payload as a JSON object."""
        value: dict[str, Any] = json.loads(self.payload)
        return value


def summary_event(
    info: BatchInfo,
    guids: Mapping[Outcome, Sequence[Guid]] | None,
    *,
    now: datetime,
    set_aside: Sequence[Guid] = (),
) -> SummaryEvent:
    """The batch's summary event; pass `guids` (every outcome) and the `set_aside` GUIDs when
    the batch closes."""
    return SummaryEvent(
        event_id=new_event_id(),
        ts=now,
        batch=info.batch_id,
        booking=info.booking,
        party=info.party,
        status=info.status,
        created_at=info.created_at,
        closed_at=info.closed_at,
        expected=info.expected,
        received=info.received,
        pending=info.pending,
        counts=OutcomeCounts(**{o.value: info.counts.get(o, 0) for o in Outcome}),
        guids=(
            None
            if guids is None
            else GuidLists(**{o.value: sorted(guids.get(o, ())) for o in Outcome})
        ),
        set_aside=None if guids is None else sorted(set_aside),
    )


@dataclass(frozen=True, slots=True)
class SlotService:
    """A slot taken out of service (`disabled`) or put back: why, by whom, when."""

    rig: int
    slot: int
    disabled: bool
    reason: str
    by: str
    at: datetime


@dataclass(frozen=True, slots=True)
class SelftestCheck:
    """One check of a rig self-test: `slot` None for the controller itself."""

    slot: int | None
    check: str
    passed: bool
    detail: str = ""


@dataclass(frozen=True, slots=True)
class SelftestRun:
    """A rig self-test as stored: when, and each check in the order made."""

    rig: int
    ts: datetime
    checks: tuple[SelftestCheck, ...]

    @property
    def failed(self) -> int:
        return sum(1 for c in self.checks if not c.passed)


@dataclass(frozen=True, slots=True)
class StationInfo:
    """A station of the site as the store knows it: when its daemon started and was last heard
    of, and its slots as it last reported them (JSON text, `jigctl status` site-wide)."""

    station: str
    host: str
    pid: int
    started_at: datetime
    seen_at: datetime
    slots: str
