"""MQTT messages: each event's topic, QoS and retain flag, and the station's own messages.

A contract (docs/architecture.md, "MQTT"): every payload is a JSON object with `schema`
(versioned name), a unique `event_id` and `ts` (see jigd.events). Results, summaries and alerts
are the store's events (jigd.events), committed to its outbox as JSON text and delivered as they
are; `event_route` gives each its topic, QoS and retain flag. Status and slot messages are built
here. Topics here are suffixes under `<prefix>/<station>/`: payloads carry nothing
station-specific, the publisher adds the prefix.

The pydantic models are the source of the AsyncAPI document's message schemas
(`python -m jigd.asyncapi` writes docs/asyncapi.yaml from them); the models below add each
event's MQTT documentation to the event models of jigd.events.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal, NamedTuple

from pydantic import Field

from jigd.events import (
    AlertEvent,
    Event,
    EventKind,
    GuidField,
    ResultEvent,
    SlotStatus,
    SummaryEvent,
    new_event_id,
)
from jigd.model import Guid, Outcome, SlotState, Stage

__all__ = [
    "ALERTS_TOPIC",
    "SLOT_EXPIRY_S",
    "SLOT_SCHEMA",
    "STATUS_SCHEMA",
    "STATUS_TOPIC",
    "AlertPayload",
    "Outgoing",
    "ResultPayload",
    "Route",
    "SlotPayload",
    "StatusPayload",
    "SummaryPayload",
    "event_route",
    "result_topic",
    "slot_message",
    "slot_topic",
    "status_message",
    "summary_topic",
]

STATUS_SCHEMA: Final = "jigd.status/1"
SLOT_SCHEMA: Final = "jigd.slot/1"

ALERTS_TOPIC: Final = "alerts"
STATUS_TOPIC: Final = "status"
QOS_AT_MOST_ONCE: Final = 0
QOS_AT_LEAST_ONCE: Final = 1
# MQTT 5 message expiry of the retained slot messages: a station that went away does not leave
# slot states behind for long. The publisher repeats each slot's state well within it.
SLOT_EXPIRY_S: Final = 60


def result_topic(batch_id: str, guid: Guid) -> str:
    return f"batches/{batch_id}/results/{guid}"


def summary_topic(batch_id: str) -> str:
    return f"batches/{batch_id}/summary"


def slot_topic(rig: int, slot: int) -> str:
    return f"slots/{rig}/{slot}"


class ResultPayload(ResultEvent):
    """The final result of one GUID (`batches/<batch>/results/<guid>`, QoS 1, not retained)."""


class SummaryPayload(SummaryEvent):
    """Batch counts (`batches/<batch>/summary`, QoS 1, retained); GUID lists once closed."""


class AlertPayload(AlertEvent):
    """Something a person should look at (`alerts`, QoS 1, not retained)."""


class Route(NamedTuple):
    """Where and how an event is published: topic suffix, QoS, retain flag."""

    topic: str
    qos: int
    retain: bool


def event_route(kind: EventKind, data: Mapping[str, Any]) -> Route:
    """The topic suffix, QoS and retain flag of a store event, from its kind and payload data
    (`batch` and `guid` name the topic of a result or summary)."""
    if kind is EventKind.RESULT:
        topic = result_topic(data["batch"], Guid.parse(data["guid"]))
        return Route(topic, QOS_AT_LEAST_ONCE, retain=False)
    if kind is EventKind.SUMMARY:
        return Route(summary_topic(data["batch"]), QOS_AT_LEAST_ONCE, retain=True)
    return Route(ALERTS_TOPIC, QOS_AT_LEAST_ONCE, retain=False)


class StatusPayload(Event):
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


class SlotPayload(Event):
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
    payload: Event
    qos: int
    retain: bool


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
