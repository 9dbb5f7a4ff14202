"""MQTT benchmark: outbox publish throughput and the latency from commit to broker acknowledgement.

Run: .venv/bin/python -m bench.mqtt [--results 5000] [--latency-results 500]

A local mosquitto (started here, as the tests do), a real SQLite store on a temporary directory
and the real MqttPublisher.

- Throughput: N results are committed while the publisher is stopped (N result messages and N
  summaries in the outbox), then the publisher starts; time until the outbox is empty, every
  message acknowledged by the broker (PUBACK) and marked published. A QoS 1 subscriber in its
  own process (as the logistics system would be) receives them.
- Latency: with the publisher running and the outbox empty, results are committed one at a time
  (every 20 ms, as a busy station would not even reach); for each, the time from
  `record_result` returning (durable commit) to the broker's PUBACK of its result message, and to
  the subscriber receiving it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jigd.mqtt_client
from jigd.config import MqttConfig
from jigd.events import GuidResult
from jigd.manifest import parse_manifest
from jigd.model import DeviceModel, FirmwareVersion, Guid, Outcome
from jigd.mqtt import MqttPublisher
from jigd.store.sqlite import SqliteStore
from tests.services import Mosquitto

STATION = "bench"
LATENCY_INTERVAL_S = 0.02
TIMEOUT_S = 300.0
MODEL = DeviceModel(0x1086, 0x57310102)


class AckClock:
    """Records when the broker acknowledged each topic (wraps the publisher's confirmed publish)."""

    def __init__(self) -> None:
        self.acked: dict[str, float] = {}
        self._original = jigd.mqtt_client.BrokerClient.publish_confirmed

    def install(self) -> None:
        original = self._original
        acked = self.acked

        async def timed(client: Any, topic: str, payload: bytes, **kwargs: Any) -> None:
            await original(client, topic, payload, **kwargs)
            acked[topic] = time.monotonic()

        jigd.mqtt_client.BrokerClient.publish_confirmed = timed  # type: ignore[method-assign,assignment]

    def uninstall(self) -> None:
        jigd.mqtt_client.BrokerClient.publish_confirmed = self._original  # type: ignore[method-assign]


SUBSCRIBER = """
import asyncio, json, sys, time

import aiomqtt

async def main(port, topic, count, out):
    arrived = {}
    received = 0
    v5 = aiomqtt.ProtocolVersion.V5
    async with aiomqtt.Client("127.0.0.1", int(port), protocol=v5) as client:
        await client.subscribe(topic, qos=1)
        print("ready", flush=True)
        async for message in client.messages:
            arrived[str(message.topic)] = time.monotonic()
            received += 1
            if received >= int(count):
                break
    with open(out, "w") as f:
        json.dump(arrived, f)

asyncio.run(main(*sys.argv[1:]))
"""


class Counter:
    """A QoS 1 subscriber in its own process, as the logistics system would be: when each topic
    last arrived (CLOCK_MONOTONIC, comparable across processes)."""

    def __init__(self, port: int, expected: int, directory: Path) -> None:
        self._argv = [
            sys.executable,
            "-c",
            SUBSCRIBER,
            str(port),
            f"jigd/v1/{STATION}/batches/#",
            str(expected),
            str(directory / "arrived.json"),
        ]
        self._out = directory / "arrived.json"
        self.arrived: dict[str, float] = {}

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Counter]:
        proc = await asyncio.create_subprocess_exec(
            *self._argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        try:
            assert proc.stdout is not None
            async with asyncio.timeout(TIMEOUT_S):
                await proc.stdout.readline()  # subscribed
            yield self
            async with asyncio.timeout(TIMEOUT_S):
                _, err = await proc.communicate()
            if proc.returncode != 0:
                raise RuntimeError(f"the subscriber failed: {err.decode()}")
            self.arrived = json.loads(self._out.read_text(encoding="utf-8"))
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


@contextlib.asynccontextmanager
async def running(publisher: MqttPublisher) -> AsyncIterator[None]:
    task = asyncio.create_task(publisher.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def new_batch(store: SqliteStore, count: int, first: int) -> tuple[str, list[Guid]]:
    lines = "".join(f"00DB{n:012X}\n" for n in range(first, first + count))
    rows = parse_manifest(("guid\n" + lines).encode(), "bench.csv")
    batch_id = await store.import_batch(rows, "WO-BENCH", "BENCH", "bench.csv")
    return batch_id, [row.guid for row in rows]


async def record(store: SqliteStore, batch_id: str, guid: Guid) -> None:
    attempt = await store.begin_attempt(batch_id, guid, 1, 1)
    now = datetime.now(UTC)
    await store.record_result(
        GuidResult(
            batch_id=batch_id,
            guid=guid,
            outcome=Outcome.REFLASHED,
            rig=1,
            slot=1,
            attempts=attempt,
            started=now - timedelta(minutes=3),
            finished=now,
            model=MODEL,
            from_version=FirmwareVersion(0x03000001),
            to_version=FirmwareVersion(0x04000007),
            image_sha256="ab" * 32,
        )
    )


async def wait_drained(store: SqliteStore) -> None:
    async with asyncio.timeout(TIMEOUT_S):
        while await store.outbox_depth():  # noqa: ASYNC110 - no "drained" event to wait on
            await asyncio.sleep(0.005)


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else 0


async def throughput(
    store: SqliteStore, port: int, count: int, directory: Path, *, subscriber: bool
) -> None:
    batch_id, guids = await new_batch(store, count, 1)
    started = time.perf_counter()
    for guid in guids:
        await record(store, batch_id, guid)
    commit_s = time.perf_counter() - started
    messages = await store.outbox_depth()
    publisher = MqttPublisher(_config(port), STATION, store, password=None)
    counter = Counter(port, messages, directory)
    async with contextlib.AsyncExitStack() as stack:
        if subscriber:
            await stack.enter_async_context(counter.running())
        await stack.enter_async_context(running(publisher))
        started = time.perf_counter()
        await wait_drained(store)
        drained_s = time.perf_counter() - started
    print(f"  committed {count} results ({messages} outbox messages) in {commit_s:.1f} s")
    print(
        f"  published and acknowledged {messages} messages in {drained_s:.2f} s: "
        f"{messages / drained_s:,.0f} messages/s ({count / drained_s:,.0f} results/s with "
        "their summaries); "
        + (f"the subscriber received all {messages}" if subscriber else "no subscriber")
    )


async def latency(store: SqliteStore, port: int, count: int, directory: Path) -> None:
    batch_id, guids = await new_batch(store, count, 1_000_000)
    clock = AckClock()
    clock.install()
    commits: dict[str, float] = {}
    record_s: list[float] = []
    try:
        publisher = MqttPublisher(_config(port), STATION, store, password=None)
        async with running(publisher):
            await wait_drained(store)  # the import's summary
            counter = Counter(port, 2 * count, directory)
            async with counter.running():
                for guid in guids:
                    topic = f"jigd/v1/{STATION}/batches/{batch_id}/results/{guid}"
                    before = time.monotonic()
                    await record(store, batch_id, guid)
                    commits[topic] = time.monotonic()
                    record_s.append(commits[topic] - before)
                    await asyncio.sleep(LATENCY_INTERVAL_S)
                await wait_drained(store)
    finally:
        clock.uninstall()
    to_ack = [(clock.acked[t] - c) * 1000 for t, c in commits.items()]
    to_subscriber = [(counter.arrived[t] - c) * 1000 for t, c in commits.items()]
    print(
        f"  {count} results, one every {LATENCY_INTERVAL_S * 1000:.0f} ms; "
        f"record_result (durable commit) p50 {percentile(record_s, 50) * 1000:.1f} ms"
    )
    for name, values in (("commit -> PUBACK", to_ack), ("commit -> subscriber", to_subscriber)):
        print(
            f"  {name}: p50 {percentile(values, 50):.2f} ms, p99 {percentile(values, 99):.2f} ms, "
            f"max {max(values):.2f} ms"
        )


def _config(port: int) -> MqttConfig:
    return MqttConfig(enabled=True, host="127.0.0.1", port=port)


async def run(results: int, latency_results: int, *, subscriber: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="jigd-bench-mqtt-") as tmp:
        directory = Path(tmp)
        broker = Mosquitto(
            directory, extra_config=f"user {getpass.getuser()}\nmax_queued_messages 0\n"
        )
        broker.start()
        try:
            print(f"MQTT: outbox throughput ({results} results, mosquitto on 127.0.0.1)")
            async with await SqliteStore.open(directory / "throughput.sqlite3") as store:
                await throughput(store, broker.port, results, directory, subscriber=subscriber)
            print("MQTT: latency from commit to acknowledgement")
            async with await SqliteStore.open(directory / "latency.sqlite3") as store:
                await latency(store, broker.port, latency_results, directory)
        finally:
            broker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.mqtt", description=__doc__)
    parser.add_argument("--results", type=int, default=5000)
    parser.add_argument("--latency-results", type=int, default=500)
    parser.add_argument(
        "--no-subscriber",
        action="store_true",
        help="measure throughput with nobody subscribed (the broker only acknowledges)",
    )
    args = parser.parse_args()
    asyncio.run(run(args.results, args.latency_results, subscriber=not args.no_subscriber))


if __name__ == "__main__":
    main()
