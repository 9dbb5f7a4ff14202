"""Helpers for the MQTT tests: a subscriber as the logistics system, brokers of our own."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from jigd.config import MqttConfig
from jigd.events import Event, GuidResult
from jigd.manifest import parse_manifest
from jigd.model import DeviceModel, FirmwareVersion, Guid, Outcome
from jigd.mqtt import MqttPublisher
from jigd.payloads import (
    AlertPayload,
    ResultPayload,
    SlotPayload,
    StatusPayload,
    SummaryPayload,
)
from jigd.store.sqlite import SqliteStore
from tests.services import Mosquitto

REPO = Path(__file__).resolve().parents[2]
STATION = "st1"
PREFIX = f"jigd/v1/{STATION}/"
MODEL = DeviceModel(0x1086, 0x57310102)
OLD = FirmwareVersion(0x03000001)
NEW = FirmwareVersion(0x04000007)
SHA = "ab" * 32
WAIT_S = 10.0  # every wait for the broker is bounded by this
PASSWORD = "s3cr3t-Pa55-do-not-print"
SCHEMAS: dict[str, type[Event]] = {
    "jigd.result/1": ResultPayload,
    "jigd.summary/1": SummaryPayload,
    "jigd.alert/1": AlertPayload,
    "jigd.status/1": StatusPayload,
    "jigd.slot/1": SlotPayload,
}

# --- helpers ----------------------------------------------------------------------------------


def manifest(count: int, first: int = 1) -> bytes:
    lines = [f"00DB{n:012X},1086,57310102,03000001" for n in range(first, first + count)]
    return ("guid,manufacturer,model,firmware_version\n" + "\n".join(lines) + "\n").encode()


async def new_batch(store: SqliteStore, count: int, first: int = 1) -> tuple[str, list[Guid]]:
    rows = parse_manifest(manifest(count, first), "m.csv")
    batch_id = await store.import_batch(rows, "WO-1", "PARTY", "m.csv")
    return batch_id, [row.guid for row in rows]


async def record(store: SqliteStore, batch_id: str, guid: Guid, slot: int = 1) -> None:
    attempt = await store.begin_attempt(batch_id, guid, 1, slot, model=MODEL, from_version=OLD)
    now = datetime.now(UTC)
    await store.record_result(
        GuidResult(
            batch_id=batch_id,
            guid=guid,
            outcome=Outcome.REFLASHED,
            rig=1,
            slot=slot,
            attempts=attempt,
            started=now - timedelta(minutes=3),
            finished=now,
            model=MODEL,
            from_version=OLD,
            to_version=NEW,
            image_sha256=SHA,
        )
    )


async def outbox_rows(store: SqliteStore) -> list[tuple[str, str]]:
    """(event_id, kind) of every outbox event, published or not, in commit order."""

    def read() -> list[tuple[str, str]]:
        rows = store._db.execute("SELECT event_id, kind FROM outbox ORDER BY id").fetchall()
        return [(str(e), str(t)) for e, t in rows]

    return await store._run(read)


def config_for(port: int, **changes: Any) -> MqttConfig:
    settings: dict[str, Any] = {"reconnect_max_s": 0.5, "keepalive_s": 5, **changes}
    return MqttConfig(enabled=True, host="127.0.0.1", port=port, **settings)


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retain: bool
    properties: Properties | None

    @property
    def data(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.payload)
        return value

    def prop(self, name: str) -> Any:
        """An MQTT 5 property of the message (paho keeps them as attributes)."""
        return vars(self.properties).get(name) if self.properties is not None else None

    @property
    def suffix(self) -> str:
        return self.topic.removeprefix(PREFIX)


class Subscriber:
    """A consumer of the logistics system: everything under the prefix, QoS 1."""

    def __init__(
        self,
        port: int,
        *,
        topic: str = "jigd/v1/#",
        client_id: str | None = None,
        persistent: bool = False,
        **kwargs: Any,
    ) -> None:
        properties = None
        if persistent:  # the broker keeps the session, and queues for it, while it is away
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = 300
        self._client = aiomqtt.Client(
            "127.0.0.1",
            port,
            identifier=client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=not persistent,
            properties=properties,
            **kwargs,
        )
        self._topic = topic
        self._subscribe = True
        self.messages: list[Received] = []
        self._arrived = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def resume(self) -> Subscriber:
        """Reconnect to a persistent session without subscribing again."""
        self._subscribe = False
        return self

    async def __aenter__(self) -> Subscriber:
        await self._client.__aenter__()
        if self._subscribe:
            await self._client.subscribe(self._topic, qos=1)
        self._task = asyncio.create_task(self._collect(), name="subscriber")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(aiomqtt.MqttError):
            await self._client.__aexit__(None, None, None)

    async def _collect(self) -> None:
        with contextlib.suppress(aiomqtt.MqttError):  # the broker went away
            async for message in self._client.messages:
                assert isinstance(message.payload, bytes)
                self.messages.append(
                    Received(
                        str(message.topic), message.payload, message.retain, message.properties
                    )
                )
                self._arrived.set()

    def of(self, schema: str) -> list[Received]:
        return [m for m in self.messages if m.data.get("schema") == schema]

    async def wait_for(self, done: Callable[[Subscriber], bool], what: str) -> None:
        try:
            async with asyncio.timeout(WAIT_S):
                while not done(self):
                    self._arrived.clear()
                    await self._arrived.wait()
        except TimeoutError:
            got = [(m.suffix, m.data.get("schema")) for m in self.messages]
            pytest.fail(f"no {what} within {WAIT_S} s; received {got}")


async def eventually(check: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
    """Poll a condition that has no event to wait on (the publisher's state)."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout_s} s")
        await asyncio.sleep(0.02)


async def outbox_drained(store: SqliteStore) -> None:
    deadline = time.monotonic() + WAIT_S
    while await store.outbox_depth():
        if time.monotonic() > deadline:
            pytest.fail(f"outbox depth still {await store.outbox_depth()} after {WAIT_S} s")
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def running(publisher: MqttPublisher) -> AsyncIterator[asyncio.Task[None]]:
    """The publisher's run() as the daemon's TaskGroup would own it: cancelled and awaited."""
    task = asyncio.create_task(publisher.run(), name="mqtt-publisher")
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def check_payloads(messages: list[Received]) -> None:
    """Every payload is valid for its schema, JSON-typed; duplicates are exact copies."""
    by_event: dict[str, Received] = {}
    for message in messages:
        data = message.data
        SCHEMAS[data["schema"]].model_validate(data)
        assert message.prop("ContentType") == "application/json"
        assert message.prop("PayloadFormatIndicator") == 1
        first = by_event.setdefault(data["event_id"], message)
        assert (first.topic, first.payload) == (message.topic, message.payload)


def first_occurrences(messages: list[Received]) -> list[str]:
    seen: dict[str, None] = {}
    for message in messages:
        seen.setdefault(message.data["event_id"], None)
    return list(seen)


def outbox_messages(messages: list[Received]) -> list[Received]:
    return [m for m in messages if m.data["schema"] not in ("jigd.status/1", "jigd.slot/1")]


def broker(directory: Path, port: int | None = None, extra: str = "") -> Mosquitto:
    """A broker of our own (to stop and restart it, or give it users), which may write files."""
    directory.mkdir(parents=True, exist_ok=True)
    # As root, mosquitto drops to the `mosquitto` user unless told to stay this user.
    extra = f"user {getpass.getuser()}\n" + extra
    if port is None:
        return Mosquitto(directory, extra_config=extra)
    return Mosquitto(directory, port, extra_config=extra)


def password_file(path: Path, user: str, password: str) -> None:
    """A mosquitto password file, by mosquitto_passwd (shipped with mosquitto)."""
    tool = shutil.which("mosquitto_passwd")
    if tool is None:
        pytest.fail(
            "mosquitto_passwd is missing: it comes with Debian's mosquitto package, which "
            "`make test` installs (.ci/system-deps)"
        )
    subprocess.run([tool, "-b", "-c", str(path), user, password], check=True, timeout=WAIT_S)


def leaks(text: str) -> bool:
    return PASSWORD in text or "wrong-" + PASSWORD in text
