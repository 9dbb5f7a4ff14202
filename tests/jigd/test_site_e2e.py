"""A site of two stations on one PostgreSQL store and one batch, end to end (issue 15,
acceptance 2): station A's daemon is SIGKILLed mid-upload three times and restarted while
station B works on; after A's first kill, four of A's hubs (two it was uploading to, two off
its pallet) are carried to B's bench. B refuses the two A still holds (`busy_elsewhere`, naming
A) until A's restart lets go of them, then flashes them. Every GUID ends with exactly one
outcome, written by one station; nothing is lost; and what a real mosquitto delivered matches
the site's reports."""

from __future__ import annotations

import asyncio
import csv
import itertools
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import psycopg
import pytest

from jigd import control_api as api
from jigd.config import MqttConfig
from jigd.demo import DemoOptions, SiteRun, StationRun, run_site
from jigd.model import Guid
from jigd.store import open_store
from tests.jigd.mqtt_helpers import Received, Subscriber, check_payloads, eventually
from tests.jigd.test_site_demo_e2e import _uploading
from tests.postgres import PostgresCluster
from tests.services import Mosquitto

KILLS = 3
WAIT_S = 120.0


async def _refused(station: StationRun, guids: list[Guid]) -> list[api.RejectedHubView]:
    """Wait until `station` has refused each of `guids` as busy elsewhere."""
    async with asyncio.timeout(WAIT_S):
        while True:
            rejected = (await station.client.call(api.REJECTED)).rejected
            found = [r for r in rejected if r.reason == "busy_elsewhere" and r.guid in guids]
            if {r.guid for r in found} >= set(guids):
                return found
            await asyncio.sleep(0.1)


def _rows(url: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(query).fetchall()


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_three_kills_and_four_moved_hubs_on_a_site_balance_and_match_mqtt(
    tmp_path: Path, postgres_cluster: PostgresCluster, mosquitto: Mosquitto
) -> None:
    url = postgres_cluster.new_database()
    moved: list[Guid] = []
    held: list[Guid] = []
    refusals: list[api.RejectedHubView] = []

    async def scenario(site: SiteRun) -> None:
        a, b = site.station(1), site.station(2)
        for kill in range(1, KILLS + 1):
            uploading = await _uploading(a, 2 if kill == 1 else 1)
            await a.kill_daemon()
            if kill == 1:
                held.extend(uploading)
                off_pallet = [g for g in reversed(a.guids) if g not in uploading][:2]
                moved.extend([*uploading, *off_pallet])
                await site.move(1, 2, moved)
                # A is down and still holds the two it was uploading to: B must not touch them.
                refusals.extend(await _refused(b, held))
            else:
                await asyncio.sleep(1.0)
            await a.start_daemon()

    options = DemoOptions(
        stations=2,
        hubs=48,
        rigs=1,
        faults="none",
        seed=21,
        workdir=tmp_path / "site",
        store_url=url,
        live=False,
        mqtt=MqttConfig(
            enabled=True,
            host="127.0.0.1",
            port=mosquitto.port,
            reconnect_max_s=1.0,
            keepalive_s=5.0,
        ),
    )
    lines: list[str] = []
    async with Subscriber(mosquitto.port) as logistics:
        code = await run_site(options, show=lines.append, during=scenario)
        assert code == 0, "\n".join(lines[-60:])

        def closed(subscriber: Subscriber) -> bool:
            return any(
                m.data.get("schema") == "jigd.summary/1" and m.data.get("status") == "closed"
                for m in subscriber.messages
            )

        await eventually(lambda: closed(logistics), "the final summary at the subscriber")
    received = logistics.messages
    reports = tmp_path / "site" / "reports"
    with (reports / "results.csv").open(encoding="utf-8", newline="") as file:
        rows = {row["guid"]: row for row in csv.DictReader(file)}
    summary = json.loads((reports / "summary.json").read_text("utf-8"))

    # The four moved hubs were flashed on B; the two A held were refused by B while A was
    # down, naming A, and B's refusal reached MQTT as an alert.
    assert len(moved) == 4
    assert {r.guid for r in refusals} == set(held)
    for guid in map(str, moved):
        assert rows[guid]["outcome"] in ("reflashed", "already_current"), rows[guid]
        assert rows[guid]["station"] == "demo-2", rows[guid]
    alerts = [m.data for m in received if m.data.get("reason") == "busy_elsewhere"]
    assert alerts
    assert all("station demo-1" in a["message"] for a in alerts), alerts

    # Three kills, each an attempt of A's left open and recovered as interrupted at its start.
    recovered = _rows(
        url,
        "SELECT count(*) FROM attempts WHERE station = 'demo-1' AND error_code = 'interrupted' "
        "AND error_detail = 'jigd stopped during this attempt'",
    )
    assert recovered[0][0] >= KILLS

    # One outcome per GUID, written by one station; one station at a time on each GUID.
    results = _rows(url, "SELECT guid, count(*) FROM events WHERE kind = 'result' GROUP BY guid")
    assert all(count == 1 for _, count in results), results
    attempts: dict[str, list[tuple[int, str, str, str | None]]] = defaultdict(list)
    for guid, attempt, station, started, finished in _rows(
        url, "SELECT guid, attempt, station, started_at, finished_at FROM attempts"
    ):
        attempts[guid].append((attempt, station, started, finished))
    for guid, history in attempts.items():
        history.sort()
        for before, after in itertools.pairwise(history):
            assert before[3] is not None, (guid, history)  # closed before the next began
            assert before[3] <= after[2], (guid, history)
        row = rows[guid]
        assert row["station"] == history[-1][1], (guid, row, history)
    async with await open_store(url) as store:
        assert await store.check_books() == []

    # MQTT: each published GUID once (duplicates carry the same event_id and payload), under
    # the topic of the station that recorded it, as the site's reports say.
    check_payloads(received)
    published: dict[str, set[str]] = defaultdict(set)
    by_guid: dict[str, Received] = {}
    for message in received:
        if message.data.get("schema") == "jigd.result/1":
            published[message.data["guid"]].add(message.data["event_id"])
            by_guid[message.data["guid"]] = message
    assert all(len(ids) == 1 for ids in published.values()), published
    seen = {
        g for outcome, guids in summary["guids"].items() if outcome != "not_received" for g in guids
    }
    assert set(by_guid) == seen
    for guid, message in by_guid.items():
        assert message.data["outcome"] == rows[guid]["outcome"]
        assert message.topic.startswith(f"jigd/v1/{rows[guid]['station']}/batches/"), message.topic
    last = [m for m in received if m.data.get("schema") == "jigd.summary/1"][-1]
    assert last.data["status"] == "closed"
    assert last.data["counts"] == summary["counts"]
