"""Domain events: the records several daemon layers share (docs/architecture.md, "Contracts").

A slot's state (`SlotStatus`), what a hub link did (`LinkStats`), a GUID's final result
(`GuidResult`), and the events the store
journals and queues in its outbox: a result, a batch summary, an alert. An event is a pydantic
model whose JSON text is its payload, exactly as committed and delivered, with a unique
`event_id` (uuid4 hex, generated when the event is built, so a redelivery after a crash carries
the same id and consumers deduplicate on it) and `ts`. Times are ISO 8601 UTC with microseconds
and a `Z`.

Nothing here knows how an event is delivered: jigd.payloads maps each event kind to its MQTT
topic, QoS and retain flag. This module imports only jigd.model, the standard library and
pydantic.
"""

from __future__ import annotations

import enum
import re
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, ClassVar, Final, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer, WithJsonSchema

from jigd import model as identifiers
from jigd.model import DeviceModel, FirmwareVersion, Guid, Outcome, SlotState, Stage

__all__ = [
    "ALERT_SCHEMA",
    "MAX_SLOT",
    "RESULT_SCHEMA",
    "SUMMARY_SCHEMA",
    "AlertEvent",
    "AlertKind",
    "BatchStatus",
    "DeviceModelField",
    "Event",
    "EventKind",
    "FirmwareVersionField",
    "GuidField",
    "GuidLists",
    "GuidResult",
    "InvalidResultError",
    "LinkStats",
    "OutboxEvent",
    "OutcomeCounts",
    "ResultEvent",
    "SlotStatus",
    "SlotWait",
    "SummaryEvent",
    "UtcDateTime",
    "alert_event",
    "format_utc",
    "new_event_id",
    "parse_utc",
    "rejected_alert_event",
    "result_event",
    "set_aside_alert_event",
]

RESULT_SCHEMA: Final = "jigd.result/1"
SUMMARY_SCHEMA: Final = "jigd.summary/1"
ALERT_SCHEMA: Final = "jigd.alert/1"
MAX_SLOT: Final = 8
_SHA256_RE = re.compile(r"[0-9a-f]{64}")


# --- times and identifiers --------------------------------------------------------------------


def format_utc(value: datetime) -> str:
    """`2025-06-01T12:00:00.000000Z`: fixed width, so text order is time order."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"time {value.isoformat()} has no timezone; jigd records UTC times")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_utc(text: str) -> datetime:
    """Read a time written by format_utc (or any ISO 8601 time with an offset) as UTC."""
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise ValueError(f"time {text!r} has no timezone")
    return value.astimezone(UTC)


def _require_utc(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("a time needs a timezone")
    return value.astimezone(UTC)


def new_event_id() -> str:
    return uuid.uuid4().hex


UtcDateTime = Annotated[
    datetime,
    AfterValidator(_require_utc),
    PlainSerializer(format_utc, return_type=str),
    WithJsonSchema(
        {
            "type": "string",
            "format": "date-time",
            "description": "UTC, with microseconds and a Z",
            "examples": ["2025-06-01T12:00:00.000000Z"],
        }
    ),
]

# The identifiers of jigd.model as they appear in payloads: canonical text. The schemas below
# are what the AsyncAPI document shows; pydantic cannot derive them from the parse functions.
GuidField = Annotated[
    identifiers.GuidField,
    WithJsonSchema(
        {
            "type": "string",
            "pattern": "^[0-9A-F]{2}(-[0-9A-F]{2}){7}$",
            "description": "GUID (EUI-64), canonical form",
            "examples": ["00-DB-12-34-56-78-90-A0"],
        }
    ),
]
DeviceModelField = Annotated[
    identifiers.DeviceModelField,
    WithJsonSchema(
        {
            "type": "string",
            "pattern": "^[0-9A-F]{4}/[0-9A-F]{8}$",
            "description": "Device Model: manufacturer (4 hex) / model (8 hex)",
            "examples": ["1086/57310102"],
        }
    ),
]
FirmwareVersionField = Annotated[
    identifiers.FirmwareVersionField,
    WithJsonSchema(
        {
            "type": "string",
            "pattern": "^[0-9A-F]{8}$",
            "description": "Firmware Version, 8 hex characters",
            "examples": ["04000007"],
        }
    ),
]


# --- shared values ----------------------------------------------------------------------------


class BatchStatus(enum.StrEnum):
    OPEN = "open"
    CLOSED = "closed"


class AlertKind(enum.StrEnum):
    """What an alert is about."""

    REJECTED_HUB = "rejected_hub"  # a hub in no open batch: not written, set it aside
    RIG_OFFLINE = "rig_offline"  # a rig's controller stopped answering
    NO_FIRMWARE = "no_firmware"  # no production firmware in the catalog for a Device Model
    # a hub that speaks SMP but cannot be identified (no jig group): never written, set it aside
    UNIDENTIFIED_HUB = "unidentified_hub"
    # a catalog entry whose image failed verification (when the catalog was read) or failed a
    # flash (changed on disk, refused by a hub's bootloader): never flashed until fixed
    CATALOG_ENTRY_REJECTED = "catalog_entry_rejected"
    # a hub of a batch just imported that was rejected (not_in_batch) before the import and has
    # not been put back since: re-insert it (one alert per GUID)
    HUB_SET_ASIDE = "hub_set_aside"
    # a slot taken out of service (by a person, or by a failed self-test): no hub is started in
    # it until it is enabled again; and a slot put back in service
    SLOT_DISABLED = "slot_disabled"
    SLOT_ENABLED = "slot_enabled"
    # a slot failing hubs significantly more often than the rest of its rig (a worn contact, a
    # bad cable): check it, take it out of service (docs/install.md, "Slot yield watch")
    SLOT_SUSPECT = "slot_suspect"


class EventKind(enum.StrEnum):
    """The kinds of event the store queues in its outbox."""

    RESULT = "result"
    SUMMARY = "summary"
    ALERT = "alert"


@dataclass(frozen=True, slots=True)
class SlotStatus:
    """What a slot is doing, for the control API, MQTT and metrics."""

    rig: int
    slot: int
    state: SlotState = SlotState.OFFLINE
    guid: Guid | None = None
    batch_id: str | None = None
    stage: Stage | None = None
    progress: float = 0.0  # percent of the upload
    attempts: int = 0
    outcome: Outcome | None = None
    detail: str = ""
    since: float = field(default_factory=time.monotonic)
    model: DeviceModel | None = None  # once the hub identified
    hub_since: float | None = None  # monotonic time the slot started on this hub
    expected_s: float | None = None  # how long this hub is expected to take in the slot
    wait: SlotWait | None = None  # what the slot is waiting for, while it waits


@dataclass(frozen=True, slots=True)
class SlotWait:
    """A slot waiting for something with a time limit (a hub's boot): "waiting for boot
    12/30 s" rather than a frozen ETA."""

    what: str
    since: float  # monotonic
    limit_s: float


@dataclass(frozen=True, slots=True)
class LinkStats:
    """What one hub link did, reported when it closes: for the link metrics (`errors` by the
    kinds of docs/metrics.md, "Link error kinds")."""

    bytes_uploaded: int
    errors: Mapping[str, int]
    bytes_dropped: int
    slot: int = 0
    frame_bytes: int | None = None  # what the link's upload settled on, if it uploaded
    window: int | None = None


class InvalidResultError(ValueError):
    """A GuidResult whose fields contradict its outcome; names the batch and GUID."""


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
    # A failed hub: True if jigd left it locked (never unlocked, or locked again after the
    # failure), False if it may be open (locking it again failed), None if jigd cannot tell.
    locked: bool | None = None

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
        elif any(f is not None for f in failure) or self.locked is not None:
            yield "only a failed result has failure stage, code, detail or locked"
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


# --- events -----------------------------------------------------------------------------------


class Event(BaseModel):
    """Fields every event has."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        populate_by_name=True,
        # Every field is always sent, defaults included: the schema says so.
        json_schema_serialization_defaults_required=True,
    )

    # Each event type narrows this to its own name (a Literal); declared here to come first.
    schema_name: str = Field(alias="schema", description="message type and version")
    event_id: Annotated[
        str, Field(pattern=r"^[0-9a-f]{32}$", description="unique per message; deduplicate on it")
    ]
    ts: Annotated[UtcDateTime, Field(description="when the message was written (UTC)")]

    def to_json(self) -> str:
        """The payload text, as committed and delivered."""
        return self.model_dump_json(by_alias=True)


class ResultEvent(Event):
    """The final result of one GUID."""

    KIND: ClassVar[EventKind] = EventKind.RESULT

    schema_name: Literal["jigd.result/1"] = Field(default=RESULT_SCHEMA, alias="schema")
    batch: str
    guid: GuidField
    outcome: Outcome
    model: DeviceModelField | None = Field(description="Device Model the hub identified as")
    from_version: FirmwareVersionField | None
    to_version: FirmwareVersionField | None
    image_sha256: str | None
    rig: int
    slot: int
    attempts: int
    started: UtcDateTime
    finished: UtcDateTime
    failure_stage: Stage | None
    failure_code: str | None
    failure_detail: str | None
    last_link_errors: list[str]


class OutcomeCounts(BaseModel):
    """How many GUIDs of a batch have each outcome."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    reflashed: int
    already_current: int
    failed: int
    not_received: int


class GuidLists(BaseModel):
    """The GUIDs of a batch per outcome, sorted."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    reflashed: list[GuidField]
    already_current: list[GuidField]
    failed: list[GuidField]
    not_received: list[GuidField]


class SummaryEvent(Event):
    """Batch counts after every change; GUID lists once closed."""

    KIND: ClassVar[EventKind] = EventKind.SUMMARY

    schema_name: Literal["jigd.summary/1"] = Field(default=SUMMARY_SCHEMA, alias="schema")
    batch: str
    booking: str
    party: str
    status: BatchStatus
    created_at: UtcDateTime
    closed_at: UtcDateTime | None
    expected: int
    received: int
    pending: int
    counts: OutcomeCounts
    guids: GuidLists | None = Field(description="present when the batch is closed")
    set_aside: list[GuidField] | None = Field(
        default=None,
        description="present when the batch is closed: the `not_received` GUIDs that were put "
        "in a slot before the batch was imported (rejected then, `not_in_batch`) and never put "
        "back, sorted",
    )


class AlertEvent(Event):
    """Something a person should look at."""

    KIND: ClassVar[EventKind] = EventKind.ALERT

    schema_name: Literal["jigd.alert/1"] = Field(default=ALERT_SCHEMA, alias="schema")
    kind: AlertKind
    message: str = Field(description="what happened and what to do, for a person")
    guid: GuidField | None = None
    rig: int | None = None
    slot: int | None = None
    reason: str | None = Field(default=None, description="short machine-readable cause")
    model: DeviceModelField | None = None


# The events the store journals and queues in its outbox.
OutboxEvent = ResultEvent | SummaryEvent | AlertEvent


def result_event(result: GuidResult, *, now: datetime) -> ResultEvent:
    return ResultEvent(
        event_id=new_event_id(),
        ts=now,
        batch=result.batch_id,
        guid=result.guid,
        outcome=result.outcome,
        model=result.model,
        from_version=result.from_version,
        to_version=result.to_version,
        image_sha256=result.image_sha256,
        rig=result.rig,
        slot=result.slot,
        attempts=result.attempts,
        started=result.started,
        finished=result.finished,
        failure_stage=result.failure_stage,
        failure_code=result.failure_code,
        failure_detail=result.failure_detail,
        last_link_errors=list(result.last_link_errors),
    )


def rejected_alert_event(
    guid: Guid, rig: int, slot: int, reason: str, *, now: datetime, detail: str | None = None
) -> AlertEvent:
    why = f"{reason}: {detail}" if detail else reason
    return AlertEvent(
        event_id=new_event_id(),
        ts=now,
        kind=AlertKind.REJECTED_HUB,
        message=(
            f"rig {rig} slot {slot}: hub {guid} rejected ({why}); it was not written, set it aside"
        ),
        guid=guid,
        rig=rig,
        slot=slot,
        reason=reason,
    )


def set_aside_alert_event(
    batch_id: str, guid: Guid, rig: int, slot: int, seen_at: datetime, *, now: datetime
) -> AlertEvent:
    """A GUID of the batch just imported that was rejected before the import: put it back."""
    return AlertEvent(
        event_id=new_event_id(),
        ts=now,
        kind=AlertKind.HUB_SET_ASIDE,
        message=(
            f"rig {rig} slot {slot}: hub {guid} was put in at {format_utc(seen_at)}, before "
            f"batch {batch_id} was imported, and rejected (not_in_batch); it was not written: "
            "re-insert it"
        ),
        guid=guid,
        rig=rig,
        slot=slot,
        reason="not_in_batch",
    )


def alert_event(
    kind: AlertKind,
    *,
    detail: str,
    rig: int | None = None,
    slot: int | None = None,
    guid: Guid | None = None,
    model: DeviceModel | None = None,
    reason: str | None = None,
    now: datetime,
) -> AlertEvent:
    """An alert of `kind`; its message names the rig, slot, hub or Device Model and the fix."""
    where = _where(rig, slot, guid)
    if kind is AlertKind.RIG_OFFLINE:
        text = (
            f"{where}: offline ({detail}); its slots wait, check the controller's cable and power"
        )
    elif kind is AlertKind.NO_FIRMWARE:
        text = (
            f"{where}: no production firmware in the catalog for Device Model {model} "
            f"({detail}); add one with `jigd catalog add`"
        )
    elif kind is AlertKind.CATALOG_ENTRY_REJECTED:
        text = (
            f"{where}: firmware catalog entry {detail}; it is never flashed, and while it is "
            f"the latest firmware for Device Model {model} those hubs fail at select "
            "(image_untrusted), until the image is fixed (`jigd catalog verify`) or the entry "
            "withdrawn, and the catalog reloaded (`systemctl reload jigd`)"
        )
    elif kind is AlertKind.SLOT_DISABLED:
        text = (
            f"{where}: taken out of service ({detail}); no hub is started in it until "
            f"`jigctl slot enable {rig} {slot}`"
        )
    elif kind is AlertKind.SLOT_SUSPECT:
        text = (
            f"{where}: suspect: {detail}; check its contacts and cable, and take it out of "
            "service until it is fixed"
        )
    else:
        text = f"{where}: {detail}"
    return AlertEvent(
        event_id=new_event_id(),
        ts=now,
        kind=kind,
        message=text,
        guid=guid,
        rig=rig,
        slot=slot,
        reason=reason,
        model=model,
    )


def _where(rig: int | None, slot: int | None, guid: Guid | None) -> str:
    parts = []
    if rig is not None:
        parts.append(f"rig {rig}")
    if slot is not None:
        parts.append(f"slot {slot}")
    if guid is not None:
        parts.append(f"hub {guid}")
    return " ".join(parts) or "station"
