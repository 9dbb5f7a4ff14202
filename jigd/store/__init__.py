"""The station's durable store: batches, per-GUID state and attempts, journal, MQTT outbox.

This module holds the interface (`Store`), the values it returns and the errors it raises; the
SQLite backend is `jigd.store.sqlite.SqliteStore`. A later PostgreSQL backend implements the same
`Store` protocol. Every value returned is immutable; GUIDs and versions are the typed values of
`jigd.model`, times are timezone-aware UTC datetimes.
"""

from __future__ import annotations

import asyncio
import enum
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from jigd.manifest import ManifestError, ManifestProblem, ManifestRow
from jigd.model import DeviceModel, FirmwareVersion, Guid, Outcome, Stage

if TYPE_CHECKING:  # jigd.payloads builds its messages from this module's values
    from jigd.payloads import AlertKind

__all__ = [
    "AttemptRecord",
    "BatchBusyError",
    "BatchClosedError",
    "BatchInfo",
    "BatchRef",
    "BatchStatus",
    "GuidBusyError",
    "GuidInOpenBatchError",
    "GuidResult",
    "GuidState",
    "GuidStatus",
    "InterruptedGuid",
    "InvalidRecordError",
    "InvalidResultError",
    "JournalEvent",
    "OutboxMessage",
    "OutcomeAlreadyRecordedError",
    "RejectedHub",
    "SchemaVersionError",
    "Store",
    "StoreClosedError",
    "StoreError",
    "UnknownAttemptError",
    "UnknownBatchError",
    "UnknownGuidError",
]

_SHA256_RE = re.compile(r"[0-9a-f]{64}")
MAX_SLOT = 8


# --- errors -----------------------------------------------------------------------------------


class StoreError(Exception):
    """Base of every store error: the database failed, or a request breaks the books."""


class StoreClosedError(StoreError):
    """The store was used after close()."""


class SchemaVersionError(StoreError):
    """The database was written by a newer jigd than this one."""

    def __init__(self, path: str, found: int, known: int) -> None:
        self.found = found
        self.known = known
        super().__init__(
            f"{path}: database schema version {found} is newer than this jigd knows ({known}); "
            "run the jigd version that wrote it, or a newer one"
        )


class UnknownBatchError(StoreError, LookupError):
    """No batch has this id."""

    def __init__(self, batch_id: str) -> None:
        self.batch_id = batch_id
        super().__init__(f"batch {batch_id!r} does not exist; `jigctl batch list` shows the ids")


class BatchClosedError(StoreError):
    """The batch is closed: nothing more can be recorded in it and it cannot close again."""

    def __init__(self, batch_id: str, closed_at: datetime) -> None:
        self.batch_id = batch_id
        self.closed_at = closed_at
        super().__init__(f"batch {batch_id} was closed at {closed_at.isoformat()}")


class BatchBusyError(StoreError):
    """The batch cannot close while hubs of it are being flashed."""

    def __init__(self, batch_id: str, busy: Sequence[tuple[Guid, int | None, int | None]]) -> None:
        self.batch_id = batch_id
        self.busy = tuple(busy)
        where = ", ".join(f"{guid} (rig {rig} slot {slot})" for guid, rig, slot in self.busy)
        super().__init__(
            f"batch {batch_id} has {len(self.busy)} hub(s) being flashed: {where}; "
            "wait until their slots are done, then close it"
        )


class UnknownGuidError(StoreError, LookupError):
    """The GUID is not listed in the batch."""

    def __init__(self, batch_id: str, guid: Guid) -> None:
        self.batch_id = batch_id
        self.guid = guid
        super().__init__(f"GUID {guid} is not listed in batch {batch_id}")


class OutcomeAlreadyRecordedError(StoreError):
    """The GUID already has its one final outcome in this batch; nothing was changed."""

    def __init__(self, batch_id: str, guid: Guid, outcome: Outcome) -> None:
        self.batch_id = batch_id
        self.guid = guid
        self.outcome = outcome
        super().__init__(
            f"GUID {guid} of batch {batch_id} already has its outcome {outcome}; "
            "a GUID has exactly one outcome, so nothing was changed"
        )


class GuidBusyError(StoreError):
    """An attempt on the GUID is already in progress (the same GUID in two slots)."""

    def __init__(self, batch_id: str, guid: Guid, rig: int | None, slot: int | None) -> None:
        self.batch_id = batch_id
        self.guid = guid
        self.rig = rig
        self.slot = slot
        super().__init__(
            f"GUID {guid} of batch {batch_id} is already being flashed in rig {rig} slot {slot}; "
            "two hubs report the same GUID, set this one aside"
        )


class UnknownAttemptError(StoreError, LookupError):
    """No such attempt of the GUID (begin_attempt returns the attempt numbers)."""

    def __init__(self, batch_id: str, guid: Guid, attempt: int) -> None:
        self.batch_id = batch_id
        self.guid = guid
        self.attempt = attempt
        super().__init__(f"GUID {guid} of batch {batch_id} has no attempt {attempt}")


class InvalidRecordError(StoreError, ValueError):
    """A value given to the store that cannot be recorded; the message names what and why."""


class InvalidResultError(InvalidRecordError):
    """A GuidResult whose fields contradict its outcome; names the batch and GUID."""


class GuidInOpenBatchError(ManifestError, StoreError):
    """Importing a manifest that lists GUIDs already in another open batch; nothing was stored.

    `conflicts` maps each such GUID to the open batch that lists it.
    """

    def __init__(
        self, source: str, problems: Sequence[ManifestProblem], conflicts: Mapping[Guid, str]
    ) -> None:
        self.conflicts = MappingProxyType(dict(conflicts))
        super().__init__(source, problems)


# --- values -----------------------------------------------------------------------------------


class BatchStatus(enum.StrEnum):
    OPEN = "open"
    CLOSED = "closed"


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


@dataclass(frozen=True, slots=True)
class GuidResult:
    """The final result of one GUID, as the flash procedure reports it to `record_result`.

    Checked on construction: the fields must fit the outcome (a reflashed hub has versions and
    an image hash, a failed one a stage and code, only a failed one has failure fields).
    `model` is the Device Model the hub identified itself as (None if identification failed).
    """

    batch_id: str
    guid: Guid
    outcome: Outcome
    rig: int
    slot: int
    attempts: int
    started: datetime
    finished: datetime
    model: DeviceModel | None = None
    from_version: FirmwareVersion | None = None
    to_version: FirmwareVersion | None = None
    image_sha256: str | None = None
    failure_stage: Stage | None = None
    failure_code: str | None = None
    failure_detail: str | None = None
    last_link_errors: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        problems = list(self._problems())
        if problems:
            raise InvalidResultError(
                f"result for GUID {self.guid} of batch {self.batch_id} ({self.outcome}): "
                + "; ".join(problems)
            )

    def _problems(self) -> Iterable[str]:
        yield from self._where_and_when()
        yield from self._fields_fit_outcome()

    def _where_and_when(self) -> Iterable[str]:
        if not self.batch_id:
            yield "batch id is empty"
        if self.rig < 1:
            yield f"rig {self.rig} is not a rig number (1 or more)"
        if not 1 <= self.slot <= MAX_SLOT:
            yield f"slot {self.slot} is not a slot number (1-{MAX_SLOT})"
        if self.attempts < 1:
            yield f"attempts {self.attempts} is less than 1"
        naive = [
            name
            for name in ("started", "finished")
            if getattr(self, name).tzinfo is None or getattr(self, name).utcoffset() is None
        ]
        for name in naive:
            yield f"{name} {getattr(self, name).isoformat()} has no timezone"
        if not naive and self.finished < self.started:
            yield f"finished {self.finished.isoformat()} is before started"

    def _fields_fit_outcome(self) -> Iterable[str]:
        if self.outcome is Outcome.NOT_RECEIVED:
            yield "not_received is recorded by closing the batch, never by a slot"
        if self.image_sha256 is not None and not _SHA256_RE.fullmatch(self.image_sha256):
            yield f"image sha256 {self.image_sha256!r} is not 64 lower-case hex characters"
        failure = (self.failure_stage, self.failure_code, self.failure_detail)
        if self.outcome is Outcome.FAILED:
            if self.failure_stage is None or not self.failure_code:
                yield "a failed result needs a failure stage and code"
        elif any(f is not None for f in failure):
            yield "only a failed result has failure stage, code or detail"
        if self.outcome in (Outcome.REFLASHED, Outcome.ALREADY_CURRENT) and (
            self.from_version is None or self.to_version is None or self.image_sha256 is None
        ):
            yield "needs from and to firmware versions and the image sha256"
        if (
            self.outcome is Outcome.ALREADY_CURRENT
            and self.from_version is not None
            and self.from_version != self.to_version
        ):
            yield f"from version {self.from_version} differs from to version {self.to_version}"


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
class OutboxMessage:
    """An MQTT message waiting to be published (or published at `published_at`).

    `topic` is the suffix under `<prefix>/<station>/`; `payload` is the JSON text exactly as
    committed, so a re-publish after a crash is byte for byte the same, `event_id` included.
    """

    id: int
    topic: str
    payload: str
    qos: int
    retain: bool
    event_id: str
    created_at: datetime
    published_at: datetime | None

    def data(self) -> dict[str, Any]:
        """The payload as a JSON object."""
        value: dict[str, Any] = json.loads(self.payload)
        return value


# --- interface --------------------------------------------------------------------------------


class Store(Protocol):
    """What the station, control API, MQTT publisher and reports need from a store."""

    @property
    def outbox_changed(self) -> asyncio.Event:
        """Set whenever a commit adds to the outbox; the publisher clears it before reading."""
        ...

    async def close(self) -> None: ...

    async def schema_version(self) -> int: ...

    async def recover_interrupted(self) -> list[InterruptedGuid]: ...

    async def import_batch(
        self, rows: Sequence[ManifestRow], booking: str, party: str, source: str
    ) -> str: ...

    async def list_batches(self, status: BatchStatus | None = None) -> list[BatchInfo]: ...

    async def get_batch(self, batch_id: str) -> BatchInfo: ...

    async def close_batch(self, batch_id: str) -> BatchInfo: ...

    async def find_open_batch(self, guid: Guid) -> BatchRef | None: ...

    async def guid_state(self, batch_id: str, guid: Guid) -> GuidState: ...

    async def interrupted_in_slot(self, rig: int, slot: int) -> GuidState | None: ...

    async def begin_attempt(
        self,
        batch_id: str,
        guid: Guid,
        rig: int,
        slot: int,
        *,
        model: DeviceModel | None = None,
        from_version: FirmwareVersion | None = None,
    ) -> int: ...

    async def interrupt_attempt(
        self, batch_id: str, guid: Guid, attempt: int, *, stage: Stage, reason: str
    ) -> None: ...

    async def attempts(self, batch_id: str, guid: Guid) -> list[AttemptRecord]: ...

    async def record_stage(
        self, batch_id: str, guid: Guid, attempt: int, stage: Stage, detail: str | None = None
    ) -> None: ...

    async def end_attempt(
        self,
        batch_id: str,
        guid: Guid,
        attempt: int,
        *,
        stage: Stage,
        error_code: str,
        error_detail: str | None = None,
    ) -> None: ...

    async def record_result(self, result: GuidResult) -> None: ...

    async def record_rejected(self, guid: Guid, rig: int, slot: int, reason: str) -> int: ...

    async def record_alert(
        self,
        kind: AlertKind,
        *,
        detail: str,
        rig: int | None = None,
        slot: int | None = None,
        guid: Guid | None = None,
        model: DeviceModel | None = None,
        reason: str | None = None,
    ) -> str:
        """Journal an alert and queue its `alerts` message in one transaction; its event_id."""
        ...

    async def list_rejected(self) -> list[RejectedHub]: ...

    async def batch_results(self, batch_id: str) -> list[GuidState]: ...

    async def journal(
        self, *, batch_id: str | None = None, guid: Guid | None = None
    ) -> list[JournalEvent]: ...

    async def outbox_pending(self, limit: int = 100) -> list[OutboxMessage]: ...

    async def mark_published(self, ids: Iterable[int]) -> int: ...

    async def outbox_depth(self) -> int: ...
