"""Station alerts: a rig going down and a Device Model without firmware reach the outbox."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from jigd.alerts import AlertRecorder
from jigd.events import GuidResult
from jigd.model import DeviceModel, Guid, Outcome, Stage
from jigd.payloads import event_route
from jigd.slot_yield import Suspicion
from jigd.store.sqlite import SqliteStore

MODEL = DeviceModel(0x1086, 0x57310102)
OTHER = DeviceModel(0x1086, 0x57310103)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    async with await SqliteStore.open(tmp_path / "jigd.sqlite3") as opened:
        yield opened


def _failed(guid: int, model: DeviceModel, code: str) -> GuidResult:
    now = datetime.now(UTC)
    return GuidResult(
        batch_id="B000001",
        guid=Guid(guid),
        outcome=Outcome.FAILED,
        rig=1,
        slot=2,
        attempts=1,
        started=now,
        finished=now,
        model=model,
        failure_stage=Stage.SELECT,
        failure_code=code,
        failure_detail="test",
    )


async def _alerts(store: SqliteStore, count: int) -> list[dict[str, Any]]:
    """Wait until `count` alerts are in the outbox; their payloads in commit order."""
    async with asyncio.timeout(5):
        while True:
            pending = [
                m
                for m in await store.outbox_pending()
                if event_route(m.kind, m.data()).topic == "alerts"
            ]
            if len(pending) >= count:
                return [json.loads(m.payload) for m in pending]
            await asyncio.sleep(0.01)


async def test_rig_down_and_no_firmware_are_journalled_and_queued(store: SqliteStore) -> None:
    recorder = AlertRecorder(store)
    observer = recorder.observer()
    task = asyncio.create_task(recorder.run())
    try:
        observer.on_rig(2, True)  # up: nothing to say
        observer.on_rig(2, False)
        observer.on_result(_failed(0x00DB000000000001, MODEL, "no_firmware"), 1.0)
        # The same model again within the repeat window: one alert is enough.
        observer.on_result(_failed(0x00DB000000000002, MODEL, "no_firmware"), 1.0)
        # Another failure code, or another model, is a different matter.
        observer.on_result(_failed(0x00DB000000000003, MODEL, "timeout"), 1.0)
        observer.on_result(_failed(0x00DB000000000004, OTHER, "no_firmware"), 1.0)
        alerts = await _alerts(store, 3)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert [a["kind"] for a in alerts] == ["rig_offline", "no_firmware", "no_firmware"]
    assert alerts[0]["rig"] == 2
    assert alerts[1]["model"] == str(MODEL)
    assert alerts[1]["guid"] == "00-DB-00-00-00-00-00-01"
    assert alerts[2]["model"] == str(OTHER)
    kinds = [e.kind for e in await store.journal()]
    assert kinds.count("alert") == 3


async def test_a_hub_that_cannot_be_identified_is_alerted_without_a_guid(
    store: SqliteStore,
) -> None:
    recorder = AlertRecorder(store)
    observer = recorder.observer()
    task = asyncio.create_task(recorder.run())
    try:
        observer.on_unidentified(1, 3, "no_jig_group", "the hub has no jig group (64)")
        (alert,) = await _alerts(store, 1)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert alert["kind"] == "unidentified_hub"
    assert (alert["rig"], alert["slot"], alert["guid"]) == (1, 3, None)
    assert alert["reason"] == "no_jig_group"
    assert "no jig group" in alert["message"]


async def test_a_suspect_slot_is_alerted_when_it_becomes_suspect(store: SqliteStore) -> None:
    recorder = AlertRecorder(store)
    observer = recorder.observer()
    task = asyncio.create_task(recorder.run())
    try:
        observer.on_slot_suspect(Suspicion(2, 5, "4 of its last 6 hubs failed", 1e-5))
        observer.on_slot_suspect(Suspicion(2, 5, None, 0.5))  # recovered: nothing to alert
        observer.on_slot_suspect(Suspicion(1, 1, "5 of its last 5 hubs failed", 1e-6))
        alerts = await _alerts(store, 2)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert [(a["kind"], a["rig"], a["slot"], a["reason"]) for a in alerts] == [
        ("slot_suspect", 2, 5, "failure_rate"),
        ("slot_suspect", 1, 1, "failure_rate"),
    ]
    assert alerts[0]["message"].startswith("rig 2 slot 5: suspect: 4 of its last 6 hubs failed")
    assert "take it out of service" in alerts[0]["message"]
