"""The slot yield watch end to end: `jigd demo --faults worn-slot` (the daemon and the simulator
as processes, a real mosquitto) raises `slot_suspect` for the worn slot, and for no other,
before that slot has failed 5 hubs; the alert is on MQTT, in the metrics and in the status."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from jigd.config import MqttConfig
from jigd.demo import DemoOptions, DemoRun
from tests.jigd.e2e_helpers import demo, metrics_text, truth, wait_for_slot
from tests.jigd.mqtt_helpers import Subscriber, check_payloads, outbox_messages
from tests.services import Mosquitto, free_port

pytestmark = pytest.mark.slow  # end to end with real processes: not in `make test-fast`

FAILED_BEFORE_ALERT_MAX = 4  # the acceptance: alerted before the slot failed its 5th hub


async def _suspect_series(port: int) -> dict[tuple[str, str], float]:
    """`jigd_slot_suspect` per (rig, slot), from the daemon's /metrics."""
    text = await metrics_text(port)
    found = re.findall(r'^jigd_slot_suspect\{rig="(\d+)",slot="(\d+)"\} ([0-9.]+)$', text, re.M)
    return {(rig, slot): float(value) for rig, slot, value in found}


@pytest.mark.timeout(400)
async def test_worn_slot_is_suspected_before_it_fails_five_hubs(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    workdir = tmp_path / "demo"
    metrics_port = free_port()
    options = DemoOptions(
        hubs=48,
        rigs=1,
        slots=2,
        faults="worn-slot",
        seed=2,
        workdir=workdir,
        image_size=64 * 1024,
        live=False,
        mqtt=MqttConfig(enabled=True, host="127.0.0.1", port=mosquitto.port, reconnect_max_s=0.5),
        metrics_port=metrics_port,
    )
    assert options.worn_slot is not None
    worn = tuple(str(n) for n in options.worn_slot)
    seen: dict[str, object] = {}

    async def watch(run: DemoRun) -> None:
        view = await wait_for_slot(run, lambda slot: slot["suspect"] is not None, 300.0)
        seen["view"] = view
        seen["metrics"] = await _suspect_series(metrics_port)
        await asyncio.Event().wait()  # until the demo ends

    async with Subscriber(mosquitto.port, topic="jigd/v1/demo/#") as logistics:
        code, lines = await demo(options, during=watch)
        assert code == 0, "\n".join(lines[-40:])  # the books balance
        await logistics.wait_for(
            lambda s: any(
                m.data.get("schema") == "jigd.summary/1" and m.data["status"] == "closed"
                for m in s.messages
            ),
            "the closing summary",
        )
    messages = outbox_messages(logistics.messages)
    check_payloads(messages)
    assert f"jigd demo: rig {worn[0]} slot {worn[1]} is worn" in "\n".join(lines)
    assert truth(workdir)["worn_slots"][0]["rig"] == options.worn_slot[0]

    alerts = [m.data for m in messages if m.data.get("kind") == "slot_suspect"]
    assert len(alerts) == 1, alerts  # once, for the worn slot only
    alert = alerts[0]
    assert (str(alert["rig"]), str(alert["slot"])) == worn
    assert "suspect" in alert["message"]
    # Commit order: how many of the worn slot's hubs had failed when the alert was committed.
    failed_before = 0
    for message in messages:
        data = message.data
        if data.get("kind") == "slot_suspect":
            break
        if (
            data.get("schema") == "jigd.result/1"
            and data["outcome"] == "failed"
            and (str(data["rig"]), str(data["slot"])) == worn
        ):
            failed_before += 1
    assert 1 <= failed_before <= FAILED_BEFORE_ALERT_MAX

    view = seen["view"]
    assert isinstance(view, dict)
    assert (str(view["rig"]), str(view["slot"])) == worn
    metrics = seen["metrics"]
    assert isinstance(metrics, dict)
    assert metrics[worn] == 1
    assert all(value == 0 for key, value in metrics.items() if key != worn), metrics
    assert len(metrics) == options.slots
