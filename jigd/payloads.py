"""MQTT payloads and topics: the one place where messages to the logistics system are built.

A contract (DESIGN.md, "MQTT"): every payload is a JSON object with `schema` (versioned name),
a unique `event_id` (uuid4 hex, generated when the message is written to the outbox, so a
re-publish after a crash carries the same id and consumers deduplicate on it) and `ts`. Topics
here are suffixes under `<prefix>/<station>/`: payloads carry nothing station-specific, the
publisher adds the prefix. Times are ISO 8601 UTC with microseconds and a `Z`.

The pydantic models are the source of the AsyncAPI document's message schemas
(`python -m jigd.asyncapi` writes docs/asyncapi.yaml from them).
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Final, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer, WithJsonSchema

from jigd import model as identifiers
from jigd.model import DeviceModel, Guid, Outcome, SlotState, Stage
from jigd.store import BatchInfo, BatchStatus, GuidResult

if TYPE_CHECKING:
    from jigd.slot import SlotStatus

__all__ = [
    "ALERTS_TOPIC",
    "ALERT_SCHEMA",
    "RESULT_SCHEMA",
    "SLOT_EXPIRY_S",
    "SLOT_SCHEMA",
    "STATUS_SCHEMA",
    "STATUS_TOPIC",
    "SUMMARY_SCHEMA",
    "AlertKind",
    "AlertPayload",
    "GuidLists",
    "OutcomeCounts",
    "Outgoing",
    "Payload",
    "ResultPayload",
    "SlotPayload",
    "StatusPayload",
    "SummaryPayload",
    "UtcDateTime",
    "alert_message",
    "format_utc",
    "new_event_id",
    "parse_utc",
    "rejected_alert_message",
    "result_message",
    "result_topic",
    "slot_message",
    "slot_topic",
    "status_message",
    "summary_message",
    "summary_topic",
]

RESULT_SCHEMA: Final = "jigd.result/1"
SUMMARY_SCHEMA: Final = "jigd.summary/1"
ALERT_SCHEMA: Final = "jigd.alert/1"
STATUS_SCHEMA: Final = "jigd.status/1"
SLOT_SCHEMA: Final = "jigd.slot/1"

ALERTS_TOPIC: Final = "alerts"
STATUS_TOPIC: Final = "status"
QOS_AT_MOST_ONCE: Final = 0
QOS_AT_LEAST_ONCE: Final = 1
# MQTT 5 message expiry of the retained slot messages: a station that went away does not leave
# slot states behind for long. The publisher repeats each slot's state well within it.
SLOT_EXPIRY_S: Final = 60


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


def new_event_id() -> str:
    return uuid.uuid4().hex


def result_topic(batch_id: str, guid: Guid) -> str:
    return f"batches/{batch_id}/results/{guid}"


def summary_topic(batch_id: str) -> str:
    return f"batches/{batch_id}/summary"


def slot_topic(rig: int, slot: int) -> str:
    return f"slots/{rig}/{slot}"


class Payload(BaseModel):
    """Fields every message has."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        populate_by_name=True,
        # Every field is always sent, defaults included: the schema says so.
        json_schema_serialization_defaults_required=True,
    )

    # Each message type narrows this to its own name (a Literal); declared here to come first.
    schema_name: str = Field(alias="schema", description="message type and version")
    event_id: Annotated[
        str, Field(pattern=r"^[0-9a-f]{32}$", description="unique per message; deduplicate on it")
    ]
    ts: Annotated[UtcDateTime, Field(description="when the message was written (UTC)")]

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True)


class ResultPayload(Payload):
    """The final result of one GUID (`batches/<batch>/results/<guid>`, QoS 1, not retained)."""

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


class SummaryPayload(Payload):
    """Batch counts (`batches/<batch>/summary`, QoS 1, retained); GUID lists once closed."""

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


class AlertKind(enum.StrEnum):
    """What an alert is about."""

    REJECTED_HUB = "rejected_hub"  # a hub in no open batch: not written, set it aside
    RIG_OFFLINE = "rig_offline"  # a rig's controller stopped answering
    NO_FIRMWARE = "no_firmware"  # no production firmware in the catalog for a Device Model
    # a hub that speaks SMP but cannot be identified (no jig group): never written, set it aside
    UNIDENTIFIED_HUB = "unidentified_hub"


class AlertPayload(Payload):
    """Something a person should look at (`alerts`, QoS 1, not retained)."""

    schema_name: Literal["jigd.alert/1"] = Field(default=ALERT_SCHEMA, alias="schema")
    kind: AlertKind
    message: str = Field(description="what happened and what to do, for a person")
    guid: GuidField | None = None
    rig: int | None = None
    slot: int | None = None
    reason: str | None = Field(default=None, description="short machine-readable cause")
    model: DeviceModelField | None = None


class StatusPayload(Payload):
    """Whether the station is connected (`status`, QoS 1, retained).

    `offline` with reason `connection_lost` is the Last Will the broker publishes when it loses
    the station's connection: its `ts` is when that connection was opened, not when it was lost.
    """

    schema_name: Literal["jigd.status/1"] = Field(default=STATUS_SCHEMA, alias="schema")
    state: Literal["online", "offline"]
    reason: Literal["stopped", "connection_lost"] | None = Field(
        description="why the station is offline; null when online"
    )
    version: str = Field(description="jigd version")


class SlotPayload(Payload):
    """What a slot is doing (`slots/<rig>/<slot>`, QoS 0, retained, expires after 60 s).

    At most 4 per second per slot; the latest state wins, and a slot's final state is always
    sent. Not durable: nothing is queued while the station is disconnected.
    """

    schema_name: Literal["jigd.slot/1"] = Field(default=SLOT_SCHEMA, alias="schema")
    rig: int
    slot: int
    state: SlotState
    guid: GuidField | None = Field(description="the hub in the slot, once identified")
    batch: str | None
    stage: Stage | None = Field(description="flash procedure stage of the running attempt")
    progress: float = Field(ge=0, le=100, description="upload progress, percent")
    attempts: int
    outcome: Outcome | None = Field(description="set once the hub has its result")
    detail: str


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message ready for the outbox: topic suffix, payload, QoS and retain flag."""

    topic: str
    payload: ResultPayload | SummaryPayload | AlertPayload | StatusPayload | SlotPayload
    qos: int
    retain: bool


def result_message(result: GuidResult, *, now: datetime) -> Outgoing:
    payload = ResultPayload(
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
    return Outgoing(
        result_topic(result.batch_id, result.guid), payload, QOS_AT_LEAST_ONCE, retain=False
    )


def summary_message(
    info: BatchInfo, guids: Mapping[Outcome, Sequence[Guid]] | None, *, now: datetime
) -> Outgoing:
    """The batch summary; pass `guids` (every outcome) when the batch closes."""
    payload = SummaryPayload(
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
    )
    return Outgoing(summary_topic(info.batch_id), payload, QOS_AT_LEAST_ONCE, retain=True)


def rejected_alert_message(
    guid: Guid, rig: int, slot: int, reason: str, *, now: datetime
) -> Outgoing:
    payload = AlertPayload(
        event_id=new_event_id(),
        ts=now,
        kind=AlertKind.REJECTED_HUB,
        message=(
            f"rig {rig} slot {slot}: hub {guid} rejected ({reason}); it was not written, "
            "set it aside"
        ),
        guid=guid,
        rig=rig,
        slot=slot,
        reason=reason,
    )
    return Outgoing(ALERTS_TOPIC, payload, QOS_AT_LEAST_ONCE, retain=False)


def alert_message(
    kind: AlertKind,
    *,
    detail: str,
    rig: int | None = None,
    slot: int | None = None,
    guid: Guid | None = None,
    model: DeviceModel | None = None,
    reason: str | None = None,
    now: datetime,
) -> Outgoing:
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
    else:
        text = f"{where}: {detail}"
    payload = AlertPayload(
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
    return Outgoing(ALERTS_TOPIC, payload, QOS_AT_LEAST_ONCE, retain=False)


def _where(rig: int | None, slot: int | None, guid: Guid | None) -> str:
    parts = []
    if rig is not None:
        parts.append(f"rig {rig}")
    if slot is not None:
        parts.append(f"slot {slot}")
    if guid is not None:
        parts.append(f"hub {guid}")
    return " ".join(parts) or "station"


def status_message(
    state: Literal["online", "offline"],
    reason: Literal["stopped", "connection_lost"] | None,
    *,
    version: str,
    now: datetime,
) -> Outgoing:
    """The station's status; `offline`/`connection_lost` is the Last Will."""
    payload = StatusPayload(
        event_id=new_event_id(), ts=now, state=state, reason=reason, version=version
    )
    return Outgoing(STATUS_TOPIC, payload, QOS_AT_LEAST_ONCE, retain=True)


def slot_message(status: SlotStatus, *, now: datetime) -> Outgoing:
    """A slot's state; `now` is when the slot changed to it."""
    payload = SlotPayload(
        event_id=new_event_id(),
        ts=now,
        rig=status.rig,
        slot=status.slot,
        state=status.state,
        guid=status.guid,
        batch=status.batch_id,
        stage=status.stage,
        progress=min(100.0, max(0.0, status.progress)),
        attempts=status.attempts,
        outcome=status.outcome,
        detail=status.detail,
    )
    return Outgoing(slot_topic(status.rig, status.slot), payload, QOS_AT_MOST_ONCE, retain=True)
