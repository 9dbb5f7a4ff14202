"""The daemon's MQTT end to end: `jigd run` and `jigsim serve` as processes, a real mosquitto.

What the logistics system depends on, seen from a subscriber: a result for every GUID of a batch
and a final summary that matches the store, through a 30 s broker outage, a SIGKILL between
commit and acknowledgement, and a wrong password, while the station never stops flashing.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from jigd.config import MqttConfig
from jigd.demo import DemoOptions, DemoRun, Paths, run_demo
from jigd.demo.workdir import STATION
from jigd.store.sqlite import SqliteStore
from tests.jigd.mqtt_helpers import (
    PASSWORD,
    Received,
    Subscriber,
    broker,
    check_payloads,
    first_occurrences,
    leaks,
    outbox_messages,
)
from tests.services import Mosquitto, free_port

pytestmark = pytest.mark.slow  # end to end with real processes: not in `make test-fast`

OUTAGE_S = 30.0  # the acceptance's outage
WAIT_S = 120.0  # the longest any step of these tests may take


def _mqtt(port: int, **changes: Any) -> MqttConfig:
    settings: dict[str, Any] = {"reconnect_max_s": 1.0, "keepalive_s": 5.0, **changes}
    return MqttConfig(enabled=True, host="127.0.0.1", port=port, **settings)


async def _until(
    check: Callable[[], Awaitable[bool]], what: str, timeout_s: float = WAIT_S
) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout_s:g} s")
        await asyncio.sleep(0.1)


async def _done(run: DemoRun) -> int:
    batch, _ = await run.progress()
    return batch.expected - batch.pending


async def _metrics(port: int) -> dict[str, float]:
    """The unlabelled samples of the daemon's /metrics."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        text = await response.text()
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if match := re.fullmatch(r"([a-z_]+) ([-0-9.e+]+)", line):
            samples[match.group(1)] = float(match.group(2))
    return samples


def _persistent_broker(directory: Path) -> Mosquitto:
    """A broker that keeps its subscribers' sessions (and their queued messages) over a restart."""
    return broker(directory, extra=f"persistence true\npersistence_location {directory}/\n")


class _Logistics:
    """The logistics system's consumer: one persistent session, reconnected after outages."""

    def __init__(self, port: int) -> None:
        self._port = port
        self._sessions: list[Subscriber] = []
        self.messages: list[Received] = []

    async def connect(self, *, resume: bool = False) -> None:
        subscriber = Subscriber(self._port, client_id="logistics", persistent=True)
        await (subscriber.resume() if resume else subscriber).__aenter__()
        self._sessions.append(subscriber)

    async def disconnect(self) -> None:
        for subscriber in self._sessions:
            await subscriber.__aexit__(None, None, None)
        self.keep()

    def received(self) -> list[Received]:
        seen = [m for s in self._sessions for m in s.messages]
        return [*self.messages, *seen]

    def keep(self) -> None:
        """Keep what the current sessions received (before the broker goes away)."""
        self.messages = self.received()
        self._sessions.clear()

    def results(self) -> dict[str, Received]:
        return {m.data["guid"]: m for m in self.received() if m.data["schema"] == "jigd.result/1"}


async def _outbox_order(workdir: Path) -> tuple[list[str], int]:
    """The outbox's event ids in commit order, and how many are still unpublished."""
    async with await SqliteStore.open(Paths(workdir).store, station=STATION) as store:
        rows = await store._run(
            lambda: store._db.execute("SELECT event_id FROM outbox ORDER BY id").fetchall()
        )
        depth = await store.outbox_depth()
    return [str(r[0]) for r in rows], depth


def _check_books_against(workdir: Path, logistics: _Logistics) -> None:
    """A result for every GUID of the batch the station saw, and a final summary whose lists
    match the reports (never-seen GUIDs are `not_received` only there, as docs/mqtt.md says)."""
    summary = json.loads((workdir / "reports" / "summary.json").read_text("utf-8"))
    seen = {
        g for outcome, guids in summary["guids"].items() if outcome != "not_received" for g in guids
    }
    results = logistics.results()
    assert set(results) == seen
    for guid, message in results.items():
        assert message.data["batch"] == summary["batch"]
        assert guid in summary["guids"][message.data["outcome"]]
    final = [m for m in logistics.received() if m.data["schema"] == "jigd.summary/1"][-1]
    assert final.data["status"] == "closed"
    assert final.data["counts"] == summary["counts"]
    assert {k: sorted(v) for k, v in final.data["guids"].items()} == {
        k: sorted(v) for k, v in summary["guids"].items()
    }


@pytest.mark.timeout(400)
async def test_a_30_s_broker_outage_loses_nothing_and_flashing_goes_on(tmp_path: Path) -> None:
    server = _persistent_broker(tmp_path / "broker")
    server.start()
    logistics = _Logistics(server.port)
    await logistics.connect()
    metrics_port = free_port()
    workdir = tmp_path / "demo"
    seen: dict[str, Any] = {}

    async def outage(run: DemoRun) -> None:
        async def some_results() -> bool:
            return len(logistics.results()) >= 2

        await _until(some_results, "the first results on the broker")
        logistics.keep()
        server.stop()
        seen["done_at_stop"] = await _done(run)
        stopped = time.monotonic()

        async def disconnected() -> bool:
            return (await _metrics(metrics_port)).get("jigd_mqtt_connected") == 0

        await _until(disconnected, "jigd_mqtt_connected 0 during the outage")
        await asyncio.sleep(max(0.0, OUTAGE_S - (time.monotonic() - stopped)))
        seen["done_at_start"] = await _done(run)
        seen["waiting"] = (await _metrics(metrics_port))["jigd_mqtt_outbox_depth"]
        server.start()
        await logistics.connect(resume=True)

    options = DemoOptions(
        hubs=40,
        rigs=1,
        faults="light",
        seed=11,
        workdir=workdir,
        image_size=128 * 1024,
        baud=115200,
        live=False,
        mqtt=_mqtt(server.port),
        metrics_port=metrics_port,
    )
    lines: list[str] = []
    try:
        code = await run_demo(options, show=lines.append, during=outage)
        assert code == 0, "\n".join(lines[-40:])
        assert "jigd demo: every result and summary is published" in lines
        # The station went on flashing while the broker was away, and what it committed waited.
        assert seen["done_at_start"] >= seen["done_at_stop"] + 8, seen
        assert seen["waiting"] > 0
        order, depth = await _outbox_order(workdir)
        assert depth == 0

        async def everything() -> bool:
            return any(
                m.data["schema"] == "jigd.summary/1" and m.data["status"] == "closed"
                for m in logistics.received()
            )

        await _until(everything, "the final summary at the subscriber", 30.0)
    finally:
        await logistics.disconnect()
        server.stop()
    received = logistics.received()
    check_payloads(received)  # duplicates, if any, carry the same event_id and content
    _check_books_against(workdir, logistics)
    assert first_occurrences(outbox_messages(received)) == order  # commit order, nothing skipped


@pytest.mark.timeout(300)
async def test_results_committed_before_a_sigkill_are_published_after_restart(
    tmp_path: Path,
) -> None:
    server = _persistent_broker(tmp_path / "broker")  # down: nothing can be acknowledged
    logistics = _Logistics(server.port)
    workdir = tmp_path / "demo"
    seen: dict[str, int] = {}

    async def kill_after_commits(run: DemoRun) -> None:
        async def committed() -> bool:
            return await _done(run) >= 3

        await _until(committed, "three results committed")
        await run.daemon.kill()
        _, seen["unpublished"] = await _outbox_order(workdir)
        server.start()
        await logistics.connect()
        await run.start_daemon()

    options = DemoOptions(
        hubs=16,
        rigs=1,
        faults="none",
        seed=12,
        workdir=workdir,
        image_size=64 * 1024,
        live=False,
        mqtt=_mqtt(server.port),
    )
    lines: list[str] = []
    try:
        code = await run_demo(options, show=lines.append, during=kill_after_commits)
        assert code == 0, "\n".join(lines[-40:])
        assert "jigd demo: every result and summary is published" in lines
        order, depth = await _outbox_order(workdir)
        assert depth == 0

        async def everything() -> bool:
            return len(outbox_messages(logistics.received())) >= len(order)

        await _until(everything, "every outbox message at the subscriber", 30.0)
    finally:
        await logistics.disconnect()
        server.stop()
    assert seen["unpublished"] >= 3 * 2  # results and summaries, committed and never acknowledged
    received = logistics.received()
    check_payloads(received)
    _check_books_against(workdir, logistics)
    assert first_occurrences(outbox_messages(received)) == order


@pytest.mark.timeout(300)
async def test_a_wrong_password_keeps_flashing_and_is_never_shown(
    tmp_path: Path, auth_broker: Mosquitto
) -> None:
    server = auth_broker
    secret = tmp_path / "mqtt-password"
    secret.write_text("wrong-" + PASSWORD + "\n", encoding="utf-8")
    secret.chmod(0o600)
    logistics = Subscriber(server.port, username="jigd", password=PASSWORD)
    metrics_port = free_port()
    workdir = tmp_path / "demo"
    seen: dict[str, float] = {}

    async def fix_the_password(run: DemoRun) -> None:
        async def flashing_while_refused() -> bool:
            samples = await _metrics(metrics_port)
            return samples.get("jigd_mqtt_outbox_depth", 0) >= 4 and await _done(run) >= 2

        await _until(flashing_while_refused, "results committed while the broker refuses jigd")
        samples = await _metrics(metrics_port)
        seen["connected"] = samples["jigd_mqtt_connected"]
        seen["results_refused"] = await _done(run)
        assert await run.daemon.stop() == 0
        secret.write_text(PASSWORD + "\n", encoding="utf-8")
        await run.start_daemon()

    options = DemoOptions(
        hubs=16,
        rigs=1,
        faults="none",
        seed=13,
        workdir=workdir,
        image_size=64 * 1024,
        live=False,
        mqtt=_mqtt(server.port, username="jigd", password_file=secret),
        metrics_port=metrics_port,
    )
    lines: list[str] = []
    try:
        async with logistics:
            code = await run_demo(options, show=lines.append, during=fix_the_password)
            assert code == 0, "\n".join(lines[-40:])
            assert "jigd demo: every result and summary is published" in lines
            order, depth = await _outbox_order(workdir)
            assert depth == 0
            await logistics.wait_for(
                lambda s: len(outbox_messages(s.messages)) >= len(order), "the drained outbox"
            )
    finally:
        server.stop()
    assert seen["connected"] == 0
    assert seen["results_refused"] >= 2
    assert first_occurrences(outbox_messages(logistics.messages)) == order
    texts = [*lines, (workdir / "jigd.log").read_text("utf-8"), server.log_path.read_text("utf-8")]
    assert not [t for t in texts if leaks(t)]
    log = (workdir / "jigd.log").read_text("utf-8")
    assert "reason code 13" in log  # the refusal is named (134/135), the password is not
