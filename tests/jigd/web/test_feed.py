"""The live feed: a slot's changes coalesced (latest wins), serialised once for every client,
and a client that falls behind dropped without holding up the others."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

from jigd.config import RigConfig, SlotConfig, StationConfig
from jigd.events import GuidResult, SlotStatus
from jigd.model import DeviceModel, FirmwareVersion, Guid, Outcome, SlotState, Stage
from jigd.slot_yield import Suspicion
from jigd.station import Station
from jigd.web.feed import FLUSH_S, MAX_QUEUED, Feed

MODEL = DeviceModel(0x1086, 0x57310102)
OTHER = DeviceModel(0x1086, 0x57310201)


def _events(data: bytes) -> list[tuple[str, dict[str, object]]]:
    found = []
    for block in data.decode().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in lines:
            found.append((lines["event"], json.loads(lines["data"])))
    return found


def _feed() -> Feed:
    return Feed(Station(StationConfig(station="t")))


async def test_a_slots_changes_are_coalesced_and_the_latest_wins() -> None:
    feed = _feed()
    observer = feed.observer()
    first, second = feed.connect(), feed.connect()
    for tenth in range(1000):  # a fast upload's progress
        observer.on_slot(
            SlotStatus(rig=1, slot=3, state=SlotState.BUSY, stage=Stage.UPLOAD, progress=tenth / 10)
        )
    observer.on_slot(SlotStatus(rig=2, slot=1, state=SlotState.EMPTY))
    await asyncio.sleep(FLUSH_S + 0.1)
    data = first.take()
    assert data == second.take()  # one serialisation, the same bytes for every client
    events = _events(data)
    assert [(e, d["rig"], d["slot"]) for e, d in events] == [("slot", 1, 3), ("slot", 2, 1)]
    assert events[0][1]["progress"] == 99.9
    assert events[0][1]["state"] == "busy"


async def test_nothing_is_serialised_without_clients() -> None:
    feed = _feed()
    feed.observer().on_slot(SlotStatus(rig=1, slot=1, state=SlotState.BUSY))
    late = feed.connect()
    await asyncio.sleep(FLUSH_S + 0.1)
    assert late.take() == b""  # it gets the state from its snapshot instead


async def test_a_client_that_falls_behind_is_dropped_and_the_others_go_on() -> None:
    feed = _feed()
    observer = feed.observer()
    stuck, reading = feed.connect(), feed.connect()
    received = 0
    for n in range(MAX_QUEUED + 10):
        observer.on_rejected(Guid(0x00DB000000000000 + n), 1, 1, "not_in_batch")
        received += len(_events(reading.take()))
    assert stuck.dropped
    assert not reading.dropped
    assert feed.clients == 1
    assert received == MAX_QUEUED + 10
    assert len(feed.alerts) == 50  # the recent ones, for the next snapshot
    assert "not_in_batch" in feed.alerts[-1]["message"]


def test_no_firmware_is_one_alert_per_device_model() -> None:
    feed = _feed()
    now = datetime.now(UTC)
    for n, model in enumerate((MODEL, MODEL, MODEL, OTHER)):
        result = GuidResult(
            batch_id="B000001",
            guid=Guid(0x00DB000000000100 + n),
            outcome=Outcome.FAILED,
            rig=1,
            slot=1,
            attempts=1,
            started=now,
            finished=now,
            model=model,
            failure_stage=Stage.SELECT,
            failure_code="no_firmware",
            failure_detail="no production firmware",
        )
        feed.observer().on_result(result, 3.0)
    messages = [a["message"] for a in feed.alerts]
    assert len(messages) == 2  # a pallet of one unknown model is one thing to fix
    assert str(MODEL) in messages[0]
    assert str(OTHER) in messages[1]


async def test_a_suspect_slot_is_alerted_and_shown_with_its_reason() -> None:
    slots = [SlotConfig(slot=n, port=f"/dev/ttyJIG{n}") for n in (3, 4)]
    station = Station(
        StationConfig(station="t", rigs=[RigConfig(rig=1, controller="/dev/ttyCTL", slots=slots)])
    )
    feed = Feed(station)
    observer = feed.observer()
    client = feed.connect()
    now = datetime.now(UTC)
    for n in range(35):
        failed = n >= 30
        station.slot_yield.add(
            GuidResult(
                batch_id="B000001",
                guid=Guid(0x00DB000000000000 + n),
                outcome=Outcome.FAILED if failed else Outcome.ALREADY_CURRENT,
                rig=1,
                slot=3 if failed else 4,
                attempts=1,
                started=now,
                finished=now,
                model=MODEL,
                from_version=None if failed else FirmwareVersion(0x04000007),
                to_version=None if failed else FirmwareVersion(0x04000007),
                image_sha256=None if failed else "ab" * 32,
                failure_stage=Stage.UPLOAD if failed else None,
                failure_code="link_timeout" if failed else None,
            )
        )
    reason = station.slot_yield.suspect(1, 3)
    assert reason is not None
    observer.on_slot_suspect(Suspicion(1, 3, reason, 1e-6))
    observer.on_slot(SlotStatus(rig=1, slot=3, state=SlotState.EMPTY))
    observer.on_slot(SlotStatus(rig=1, slot=4, state=SlotState.EMPTY))
    await asyncio.sleep(FLUSH_S + 0.1)
    events = _events(client.take())
    alerts = [d for e, d in events if e == "alert"]
    assert [a["kind"] for a in alerts] == ["slot_suspect"]
    assert str(alerts[0]["message"]).startswith("rig 1 slot 3: suspect: 5 of its last 5 hubs")
    views = {d["slot"]: d for e, d in events if e == "slot"}
    assert views[3]["suspect"] == reason
    assert views[4]["suspect"] is None
