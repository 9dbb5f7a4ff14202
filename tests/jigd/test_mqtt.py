"""The MQTT publisher against a real mosquitto: nothing lost, commit order, Last Will, auth, TLS."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
import time
import warnings
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from jigd.events import AlertKind, SlotStatus
from jigd.model import Guid, Outcome, SlotState, Stage
from jigd.mqtt import MqttPublisher
from jigd.mqtt_client import MqttCodeError, MqttError, describe_error
from jigd.mqtt_settings import MqttConfigError, parse_mqtt_url
from jigd.secrets import Secret
from jigd.store import InvalidRecordError
from jigd.store.sqlite import SqliteStore
from tests.jigd.mqtt_helpers import (
    MODEL,
    PASSWORD,
    PREFIX,
    REPO,
    STATION,
    WAIT_S,
    Received,
    Subscriber,
    broker,
    check_payloads,
    config_for,
    eventually,
    first_occurrences,
    leaks,
    new_batch,
    outbox_drained,
    outbox_messages,
    outbox_rows,
    record,
    running,
)
from tests.services import Mosquitto


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    async with await SqliteStore.open(tmp_path / "jigd.sqlite3") as opened:
        yield opened


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A broker with a persistence file, so consumers' sessions survive its restart."""
    directory = tmp_path / "broker"
    server = broker(directory, extra=f"persistence true\npersistence_location {directory}/\n")
    server.start()
    try:
        yield server
    finally:
        server.stop()


# --- (a) results, summaries, status ----------------------------------------------------------


async def test_results_and_summaries_arrive_in_commit_order(
    mosquitto: Mosquitto, store: SqliteStore
) -> None:
    batch_id, guids = await new_batch(store, 6)
    for guid in guids[:3]:  # committed before the publisher starts
        await record(store, batch_id, guid)
    connections: list[bool] = []
    publisher = MqttPublisher(
        config_for(mosquitto.port), STATION, store, password=None, on_connected=connections.append
    )
    async with Subscriber(mosquitto.port) as sub, running(publisher):
        for guid in guids[3:5]:
            await record(store, batch_id, guid)
        await store.close_batch(batch_id)
        await sub.wait_for(
            lambda s: any(m.data.get("status") == "closed" for m in s.of("jigd.summary/1")),
            "final summary",
        )
        await outbox_drained(store)
        assert publisher.connected
        assert connections == [False, True]

        [online] = sub.of("jigd.status/1")
        assert (online.suffix, online.data["state"], online.data["reason"]) == (
            "status",
            "online",
            None,
        )
        results = sub.of("jigd.result/1")
        assert {m.data["guid"] for m in results} == {str(g) for g in guids[:5]}
        assert {m.suffix for m in results} == {f"batches/{batch_id}/results/{g}" for g in guids[:5]}
        assert all(not m.retain for m in results)
        check_payloads(sub.messages)

        # Commit order: each message first arrives in the order the store committed it.
        published = outbox_messages(sub.messages)
        assert first_occurrences(published) == [e for e, _ in await outbox_rows(store)]

        # The final summary's GUID lists are the store's books.
        final = sub.of("jigd.summary/1")[-1].data
        states = await store.batch_results(batch_id)
        for outcome in Outcome:
            assert final["guids"][outcome.value] == sorted(
                str(s.guid) for s in states if s.outcome is outcome
            )
        assert final["guids"]["not_received"] == [str(guids[5])]

        # Status and summary are retained: a consumer that comes later gets the latest.
        async with Subscriber(mosquitto.port) as late:
            await late.wait_for(lambda s: len(s.messages) >= 2, "retained messages")
            retained = {m.suffix: m for m in late.messages}
            assert retained["status"].retain
            assert retained["status"].data["state"] == "online"
            assert retained[f"batches/{batch_id}/summary"].data == final


async def test_alerts_are_durable_and_published(mosquitto: Mosquitto, store: SqliteStore) -> None:
    rig_event = await store.record_alert(
        AlertKind.RIG_OFFLINE, rig=2, detail="controller not answering", reason="no_answer"
    )
    firmware_event = await store.record_alert(
        AlertKind.NO_FIRMWARE,
        rig=1,
        slot=3,
        guid=Guid(0x00DB_0000_0000_0042),
        model=MODEL,
        detail="the catalog has only pilot images for it",
        reason="no_firmware",
    )
    await store.record_rejected(Guid(0x00DB_0000_0000_0099), 1, 4, "not_in_batch")
    assert [e.kind for e in await store.journal()] == ["alert", "alert", "rejected"]
    publisher = MqttPublisher(config_for(mosquitto.port), STATION, store, password=None)
    async with Subscriber(mosquitto.port) as sub, running(publisher):
        await sub.wait_for(lambda s: len(s.of("jigd.alert/1")) == 3, "three alerts")
        check_payloads(sub.messages)
        rig, firmware, rejected = (m.data for m in sub.of("jigd.alert/1"))
        assert all(m.suffix == "alerts" for m in sub.of("jigd.alert/1"))
        assert (rig["event_id"], rig["kind"], rig["rig"]) == (rig_event, "rig_offline", 2)
        assert "rig 2: offline (controller not answering)" in rig["message"]
        assert (firmware["event_id"], firmware["model"], firmware["slot"]) == (
            firmware_event,
            "1086/57310102",
            3,
        )
        assert "jigd catalog add" in firmware["message"]
        assert rejected["kind"] == "rejected_hub"


@pytest.mark.parametrize(
    ("kind", "fields", "message"),
    [
        (AlertKind.RIG_OFFLINE, {}, "needs the rig"),
        (AlertKind.NO_FIRMWARE, {"rig": 1}, "needs the Device Model"),
        (AlertKind.REJECTED_HUB, {"rig": 1}, "record_rejected"),
        (AlertKind.RIG_OFFLINE, {"rig": 1, "slot": 9}, r"slot \(1-8\)"),
        (AlertKind.NO_FIRMWARE, {"slot": 2, "model": MODEL}, "of which rig"),
        (AlertKind.RIG_OFFLINE, {"slot": 2}, "needs the rig"),
        (AlertKind.SLOT_SUSPECT, {"rig": 1}, "needs the rig and slot"),
    ],
)
async def test_record_alert_refuses_incomplete_alerts(
    store: SqliteStore, kind: AlertKind, fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidRecordError, match=message):
        await store.record_alert(kind, detail="x", **fields)
    assert await store.outbox_depth() == 0


# --- (b) broker outage -----------------------------------------------------------------------


async def test_broker_outage_delays_but_loses_nothing(
    own_broker: Mosquitto, store: SqliteStore
) -> None:
    batch_id, guids = await new_batch(store, 15)
    connections: list[bool] = []
    publisher = MqttPublisher(
        config_for(own_broker.port), STATION, store, password=None, on_connected=connections.append
    )
    before: list[Received] = []
    async with running(publisher):
        async with Subscriber(own_broker.port, client_id="consumer", persistent=True) as sub:
            for guid in guids[:3]:
                await record(store, batch_id, guid)
            await sub.wait_for(lambda s: len(s.of("jigd.result/1")) == 3, "first results")
            await outbox_drained(store)
            own_broker.stop()
            before = sub.messages
        await eventually(lambda: not publisher.connected, "publisher sees the outage")
        outage_started = time.monotonic()
        for guid in guids[3:13]:  # results keep being committed during a 2 s outage
            await record(store, batch_id, guid)
            await asyncio.sleep(0.2)
        assert await store.outbox_depth() == 10 * 2  # a result and a summary each
        assert time.monotonic() - outage_started >= 2.0
        own_broker.start()
        async with Subscriber(
            own_broker.port, client_id="consumer", persistent=True
        ).resume() as sub:
            for guid in guids[13:]:
                await record(store, batch_id, guid)
            await outbox_drained(store)
            await sub.wait_for(lambda s: len(s.of("jigd.result/1")) >= 12, "results after")
            after = sub.messages
    assert connections[:4] == [False, True, False, True]
    everything = outbox_messages(before + after)
    check_payloads(everything)
    assert {m.data["guid"] for m in everything if m.data["schema"] == "jigd.result/1"} == {
        str(g) for g in guids
    }
    assert first_occurrences(everything) == [e for e, _ in await outbox_rows(store)]


# --- (c) crash before the broker acknowledged --------------------------------------------------

CHILD = """
import asyncio, sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from jigd.config import MqttConfig
from jigd.model import FirmwareVersion, Outcome
from jigd.mqtt import MqttPublisher
from jigd.events import GuidResult
from jigd.store.sqlite import SqliteStore


async def main(path, port, mode):
    store = await SqliteStore.open(Path(path))
    config = MqttConfig(enabled=True, host="127.0.0.1", port=int(port), reconnect_max_s=0.2)
    publisher = MqttPublisher(config, "st1", store, password=None)
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(publisher.run())
        if mode == "record":
            [batch] = await store.list_batches()
            for state in await store.batch_results(batch.batch_id):
                attempt = await store.begin_attempt(batch.batch_id, state.guid, 1, 1)
                now = datetime.now(UTC)
                await store.record_result(GuidResult(
                    batch_id=batch.batch_id, guid=state.guid, outcome=Outcome.REFLASHED, rig=1,
                    slot=1, attempts=attempt, started=now - timedelta(minutes=1), finished=now,
                    from_version=FirmwareVersion(1), to_version=FirmwareVersion(2),
                    image_sha256="cd" * 32,
                ))
            await asyncio.sleep(0.5)  # the publisher tries the broker meanwhile
            print("recorded", flush=True)
        else:
            while not publisher.connected:
                await asyncio.sleep(0.01)
            print("online", flush=True)
        await asyncio.sleep(60)  # killed long before


asyncio.run(main(*sys.argv[1:]))
"""


@contextlib.asynccontextmanager
async def child(db: Path, port: int, mode: str) -> AsyncIterator[None]:
    """A jigd-like process running the publisher, killed with SIGKILL once it says `mode`."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        str(db),
        str(port),
        mode,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(WAIT_S):
            line = await proc.stdout.readline()
        assert line.decode().strip() == {"record": "recorded", "online": "online"}[mode]
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        _, err = await proc.communicate()
        assert proc.returncode == -signal.SIGKILL, err.decode()


async def test_results_committed_before_a_crash_are_published_after_it(tmp_path: Path) -> None:
    db = tmp_path / "jigd.sqlite3"
    async with await SqliteStore.open(db) as store:
        batch_id, guids = await new_batch(store, 5)
    server = broker(tmp_path / "broker")  # not started: the child cannot reach it
    async with child(db, server.port, "record"):
        pass  # SIGKILL: committed, never acknowledged
    async with await SqliteStore.open(db) as store:
        assert await store.outbox_depth() == 1 + 5 * 2  # import summary, results, summaries
        server.start()
        try:
            publisher = MqttPublisher(config_for(server.port), STATION, store, password=None)
            async with Subscriber(server.port) as sub, running(publisher):
                await outbox_drained(store)
                await sub.wait_for(lambda s: len(outbox_messages(s.messages)) >= 11, "outbox")
            check_payloads(sub.messages)
            assert [m.data["guid"] for m in sub.of("jigd.result/1")] == [str(g) for g in guids]
            assert first_occurrences(outbox_messages(sub.messages)) == [
                e for e, _ in await outbox_rows(store)
            ]
            assert sub.of("jigd.summary/1")[-1].data["counts"]["reflashed"] == 5
            assert batch_id == sub.of("jigd.summary/1")[-1].data["batch"]
        finally:
            server.stop()


# --- (d) username and password, ACL ----------------------------------------------------------


async def test_wrong_password_keeps_retrying_and_never_shows_the_password(
    auth_broker: Mosquitto, store: SqliteStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="mqtt")
    batch_id, guids = await new_batch(store, 2)
    for guid in guids:
        await record(store, batch_id, guid)
    connections: list[bool] = []
    wrong = MqttPublisher(
        config_for(auth_broker.port, username="jigd", reconnect_max_s=0.2),
        STATION,
        store,
        password=Secret(("wrong-" + PASSWORD).encode()),
        on_connected=connections.append,
    )

    def attempts() -> int:
        return sum("cannot connect" in r.getMessage() for r in caplog.records)

    async with running(wrong) as task:
        await eventually(lambda: attempts() >= 3, "three connection attempts")
        assert not task.done()
        assert not wrong.connected
        assert connections == [False]
        assert wrong.last_error is not None
        assert "reason code 134" in wrong.last_error or "reason code 135" in wrong.last_error
    assert await store.outbox_depth() == 5
    texts = [r.getMessage() for r in caplog.records]
    texts += [logging.Formatter().formatException(r.exc_info) for r in caplog.records if r.exc_info]
    texts += [repr(wrong), str(wrong.last_error)]
    assert not [t for t in texts if leaks(t)]
    assert any("127.0.0.1" in t and "MqttConnectError: reason code 13" in t for t in texts)

    caplog.clear()
    right = MqttPublisher(
        config_for(auth_broker.port, username="jigd"),
        STATION,
        store,
        password=Secret(PASSWORD.encode()),
    )
    async with (
        Subscriber(auth_broker.port, username="jigd", password=PASSWORD) as sub,
        running(right),
    ):
        await outbox_drained(store)
        await sub.wait_for(lambda s: len(s.of("jigd.result/1")) == 2, "results")
        assert right.connected
    assert not [r for r in caplog.records if leaks(r.getMessage())]


async def test_a_topic_the_acl_refuses_stays_in_the_outbox(
    auth_broker: Mosquitto, store: SqliteStore, caplog: pytest.LogCaptureFixture
) -> None:
    batch_id, guids = await new_batch(store, 1)
    await record(store, batch_id, guids[0])
    publisher = MqttPublisher(
        config_for(auth_broker.port, username="jigd", prefix="elsewhere/v1"),
        STATION,
        store,
        password=Secret(PASSWORD.encode()),
    )

    def refusals() -> list[logging.LogRecord]:
        return [r for r in caplog.records if "stays in the outbox" in r.getMessage()]

    async with running(publisher):
        await eventually(lambda: len(refusals()) >= 2, "the refusal is logged, and retried")
        assert publisher.connected  # the connection is fine; the ACL is not
        assert await store.outbox_depth() == 3  # nothing marked published
    refusal = refusals()[0]
    assert refusal.levelno == logging.ERROR
    assert "elsewhere/v1/st1/batches/" in refusal.getMessage()
    assert "reason code 135 (Not authorized)" in refusal.getMessage()


# --- (e) Last Will and clean stop ------------------------------------------------------------


async def test_last_will_says_offline_when_the_process_dies(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    db = tmp_path / "jigd.sqlite3"
    async with Subscriber(mosquitto.port, topic=f"{PREFIX}status") as sub:
        async with child(db, mosquitto.port, "online"):
            await sub.wait_for(lambda s: len(s.messages) >= 1, "online")
        await sub.wait_for(lambda s: len(s.messages) >= 2, "the Last Will")
        online, will = (m.data for m in sub.messages)
        assert (online["state"], will["state"], will["reason"]) == (
            "online",
            "offline",
            "connection_lost",
        )
        assert will["event_id"] != online["event_id"]
        check_payloads(sub.messages)
    async with Subscriber(mosquitto.port, topic=f"{PREFIX}status") as late:
        await late.wait_for(lambda s: len(s.messages) >= 1, "retained status")
        [retained] = late.messages
        assert retained.retain
        assert retained.data == will


async def test_clean_stop_publishes_offline_and_no_last_will(
    mosquitto: Mosquitto, store: SqliteStore
) -> None:
    connections: list[bool] = []
    publisher = MqttPublisher(
        config_for(mosquitto.port), STATION, store, password=None, on_connected=connections.append
    )
    async with Subscriber(mosquitto.port, topic=f"{PREFIX}status") as sub:
        async with running(publisher):
            await sub.wait_for(lambda s: len(s.messages) >= 1, "online")
        await sub.wait_for(lambda s: len(s.messages) >= 2, "offline")
        assert [(m.data["state"], m.data["reason"]) for m in sub.messages] == [
            ("online", None),
            ("offline", "stopped"),
        ]
    assert connections == [False, True, False]
    assert not publisher.connected
    async with Subscriber(mosquitto.port, topic=f"{PREFIX}status") as late:
        await late.wait_for(lambda s: len(s.messages) >= 1, "retained status")
        assert [m.data["reason"] for m in late.messages] == ["stopped"]


# --- (f) slot progress -----------------------------------------------------------------------


def slot_status(progress: float, state: SlotState = SlotState.BUSY) -> SlotStatus:
    return SlotStatus(
        rig=1,
        slot=3,
        state=state,
        guid=Guid(0x00DB_0000_0000_0007),
        batch_id="B000001",
        stage=Stage.UPLOAD,
        progress=progress,
        attempts=1,
    )


async def test_slot_progress_is_throttled_and_the_last_state_wins(
    mosquitto: Mosquitto, store: SqliteStore
) -> None:
    publisher = MqttPublisher(config_for(mosquitto.port), STATION, store, password=None)
    observer = publisher.observer()
    async with Subscriber(mosquitto.port, topic=f"{PREFIX}slots/#") as sub, running(publisher):
        await eventually(lambda: publisher.connected, "connected")
        started = time.monotonic()
        for update in range(100):  # 100 updates in about a second
            observer.on_slot(slot_status(float(update)))
            await asyncio.sleep(0.01)
        observer.on_slot(slot_status(100.0, SlotState.DONE))
        elapsed = time.monotonic() - started
        await sub.wait_for(
            lambda s: bool(s.messages) and s.messages[-1].data["state"] == "done", "final state"
        )
        sent = len(sub.messages)
        # At most 4 per second: one at once, then one per 0.25 s, and the final state.
        assert 2 <= sent <= int(elapsed / 0.25) + 2, (sent, elapsed)
        final = sub.messages[-1]
        assert final.suffix == "slots/1/3"
        assert (final.data["progress"], final.data["stage"], final.data["guid"]) == (
            100.0,
            "upload",
            "00-DB-00-00-00-00-00-07",
        )
        assert 0 < final.prop("MessageExpiryInterval") <= 60
        assert len(first_occurrences(sub.messages)) == sent  # a new event_id each
        check_payloads(sub.messages)
        async with Subscriber(mosquitto.port, topic=f"{PREFIX}slots/#") as late:
            await late.wait_for(lambda s: len(s.messages) >= 1, "retained slot state")
            assert late.messages[0].retain
            assert late.messages[0].data["state"] == "done"


async def test_slot_changes_while_disconnected_are_not_queued(
    tmp_path: Path, store: SqliteStore
) -> None:
    server = broker(tmp_path / "broker")
    publisher = MqttPublisher(config_for(server.port), STATION, store, password=None)
    async with running(publisher):
        for update in range(50):  # no broker: nothing can be sent, only the latest is kept
            publisher.slot_changed(slot_status(float(update)))
        server.start()
        try:
            async with Subscriber(server.port, topic=f"{PREFIX}slots/#") as sub:
                await sub.wait_for(lambda s: len(s.messages) >= 1, "slot state")
                await eventually(lambda: publisher.connected, "connected")
                assert [m.data["progress"] for m in sub.messages] == [49.0]
        finally:
            server.stop()


# --- TLS -------------------------------------------------------------------------------------


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A test CA and a server certificate for 127.0.0.1 it signed: (ca, cert, key) PEM files."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.now(UTC)

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("jigd test CA"))
        .issuer_name(name("jigd test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = (directory / "ca.pem", directory / "server.pem", directory / "server.key")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


async def test_tls_with_the_station_ca(tmp_path: Path, store: SqliteStore) -> None:
    directory = tmp_path / "tls-broker"
    directory.mkdir()
    ca, cert, key = make_certificates(directory)
    server = broker(directory, extra=f"cafile {ca}\ncertfile {cert}\nkeyfile {key}\n")
    server.start()
    try:
        batch_id, guids = await new_batch(store, 1)
        await record(store, batch_id, guids[0])
        wrong_ca = tmp_path / "other-ca"
        wrong_ca.mkdir()
        other, _, _ = make_certificates(wrong_ca)
        untrusting = MqttPublisher(
            config_for(server.port, tls=True, ca_file=other), STATION, store, password=None
        )
        with warnings.catch_warnings():
            # paho leaves the socket of a failed TLS handshake to the garbage collector.
            warnings.simplefilter("ignore", ResourceWarning)
            async with running(untrusting):
                await eventually(lambda: untrusting.last_error is not None, "TLS refused")
                assert untrusting.last_error == "MqttError: TLS CERTIFICATE_VERIFY_FAILED"
            gc.collect()
        publisher = MqttPublisher(
            config_for(server.port, tls=True, ca_file=ca), STATION, store, password=None
        )
        tls = aiomqtt.TLSParameters(ca_certs=str(ca))
        async with Subscriber(server.port, tls_params=tls) as sub, running(publisher):
            await outbox_drained(store)
            await sub.wait_for(lambda s: len(s.of("jigd.result/1")) == 1, "result over TLS")
    finally:
        server.stop()


# --- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "mqtt://user@host:1883/prefix",
            {"host": "host", "port": 1883, "username": "user", "prefix": "prefix", "tls": False},
        ),
        (
            "mqtt://broker.example",
            {"host": "broker.example", "port": 1883, "username": None, "prefix": "jigd/v1"},
        ),
        ("mqtts://broker/site/a/jigd", {"port": 8883, "tls": True, "prefix": "site/a/jigd"}),
        ("mqtts://u%40x@[::1]:8884/", {"host": "::1", "port": 8884, "username": "u@x"}),
        ("mqtt://127.0.0.1:1884", {"host": "127.0.0.1", "port": 1884}),
    ],
)
def test_parse_mqtt_url(url: str, expected: dict[str, object]) -> None:
    config = parse_mqtt_url(url)
    assert config.enabled
    assert {key: getattr(config, key) for key in expected} == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mqtt://user:hunter2@host/jigd", "password file|password_file"),
        ("http://host", "mqtt:// or mqtts://"),
        ("host:1883", "mqtt:// or mqtts://"),
        ("mqtt://:1883", "no broker host"),
        ("mqtt://host:99999", "not a URL"),
        ("mqtt://host/a//b", "not a topic prefix"),
        ("mqtt://host/jigd/#", "not a topic prefix"),
        ("mqtt://host/jigd?x=1", "query"),
    ],
)
def test_parse_mqtt_url_refuses(url: str, message: str) -> None:
    with pytest.raises(MqttConfigError, match=message) as caught:
        parse_mqtt_url(url)
    assert "hunter2" not in str(caught.value)


def test_url_with_a_password_is_refused_without_showing_it() -> None:
    with pytest.raises(MqttConfigError) as caught:
        parse_mqtt_url("mqtt://user:hunter2@host:99999/jigd")
    assert "hunter2" not in str(caught.value)
    assert "user:***@host" in str(caught.value)


async def test_publisher_settings_are_checked_when_it_is_made(
    store: SqliteStore, tmp_path: Path
) -> None:
    with pytest.raises(MqttConfigError, match=r"mqtt.username"):
        MqttPublisher(config_for(1), STATION, store, password=Secret(b"x"))
    with pytest.raises(MqttConfigError, match=r"not UTF-8") as caught:
        MqttPublisher(config_for(1, username="u"), STATION, store, password=Secret(b"\xffpw"))
    assert "xff" not in str(caught.value)
    with pytest.raises(MqttConfigError, match=r"mqtt.prefix"):
        MqttPublisher(config_for(1, prefix="/jigd"), STATION, store, password=None)
    with pytest.raises(MqttConfigError, match=r"mqtt.ca_file"):
        MqttPublisher(
            config_for(1, tls=True, ca_file=tmp_path / "none.pem"), STATION, store, password=None
        )
    publisher = MqttPublisher(config_for(1, client_id="cid"), STATION, store, password=None)
    assert (publisher.client_id, publisher.topic("alerts")) == ("cid", "jigd/v1/st1/alerts")
    # An event another station of the site committed (handed over by `jigctl station release`)
    # keeps that station's topic level.
    assert publisher.topic("alerts", "st-9") == "jigd/v1/st-9/alerts"
    assert publisher.topic("alerts", "st1") == publisher.topic("alerts", "") == "jigd/v1/st1/alerts"
    assert MqttPublisher(config_for(1), "st-2", store, password=None).client_id == "jigd-st-2"


def test_errors_are_described_by_class_and_code_only() -> None:
    secret = "pa55word"
    connect = MqttError(f"[Errno 111] Connection refused {secret}")
    assert describe_error(connect) == "MqttError: errno 111 (Connection refused)"
    assert describe_error(MqttError(f"weird {secret}")) == "MqttError"
    lost = MqttError("Disconnected during message iteration")
    lost.__cause__ = MqttCodeError(7, "Unexpected disconnection")
    assert describe_error(lost) == (
        "MqttError: Disconnected during message iteration <- "
        "MqttCodeError: code 7 (The connection was lost.)"
    )
