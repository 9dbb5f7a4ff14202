"""The publisher's MQTT connection against a real mosquitto: PUBACK reason codes, lost links."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from jigd.mqtt_client import (
    BrokerClient,
    MqttConnectError,
    MqttError,
    PublishRefusedError,
    Will,
    describe_error,
)
from jigd.secrets import Secret
from tests.jigd.mqtt_helpers import PASSWORD, WAIT_S, Subscriber, broker
from tests.services import Mosquitto

LOGGER = logging.getLogger("test.mqtt_client")


def properties(packet_type: int) -> Properties:
    return Properties(packet_type)  # type: ignore[no-untyped-call]  # paho: no annotations


def client(
    port: int,
    *,
    keepalive_s: int = 5,
    username: str | None = None,
    password: Secret | None = None,
) -> BrokerClient:
    will = Will("jigd/v1/t/status", b"gone", 1, True, properties(PacketTypes.WILLMESSAGE))
    return BrokerClient(
        "127.0.0.1",
        port,
        client_id="client-test",
        keepalive_s=keepalive_s,
        will=will,
        timeout_s=WAIT_S,
        logger=LOGGER,
        username=username,
        password=password,
    )


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    server = broker(tmp_path / "broker")
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_publish_waits_for_puback_and_raises_on_a_refusal(auth_broker: Mosquitto) -> None:
    publish = properties(PacketTypes.PUBLISH)
    secret = Secret(PASSWORD.encode())
    async with (
        Subscriber(auth_broker.port, username="jigd", password=PASSWORD) as sub,
        client(auth_broker.port, username="jigd", password=secret) as connection,
    ):
        await connection.publish_confirmed(
            "jigd/v1/t/a", b"{}", qos=1, retain=False, properties=publish
        )
        with pytest.raises(PublishRefusedError) as refused:
            await connection.publish_confirmed(
                "elsewhere/t/a", b"{}", qos=1, retain=False, properties=publish
            )
        assert (refused.value.topic, refused.value.reason.value) == ("elsewhere/t/a", 135)
        assert (
            describe_error(refused.value) == "PublishRefusedError: reason code 135 (Not authorized)"
        )
        # The connection is fine; only that topic is refused.
        await connection.publish_confirmed(
            "jigd/v1/t/b", b"{}", qos=0, retain=False, properties=publish
        )
        await sub.wait_for(lambda s: len(s.messages) == 2, "both accepted messages")
        assert [m.topic for m in sub.messages] == ["jigd/v1/t/a", "jigd/v1/t/b"]


async def test_a_refused_connection_names_the_reason_not_the_password(
    auth_broker: Mosquitto,
) -> None:
    wrong = Secret(("wrong-" + PASSWORD).encode())
    with pytest.raises(MqttConnectError) as refused:
        async with client(auth_broker.port, username="jigd", password=wrong):
            pytest.fail("connected with a wrong password")
    described = describe_error(refused.value)
    assert described in (
        "MqttConnectError: reason code 134 (Bad user name or password)",
        "MqttConnectError: reason code 135 (Not authorized)",
    )
    assert PASSWORD not in str(refused.value) + repr(refused.value)


async def test_no_broker_is_an_mqtt_error_with_its_errno(tmp_path: Path) -> None:
    closed = broker(tmp_path / "never-started")
    with pytest.raises(MqttError) as caught:
        async with client(closed.port):
            pytest.fail("connected to no broker")
    assert describe_error(caught.value) == "MqttError: errno 111 (Connection refused)"


async def test_a_broker_that_goes_away_is_noticed(own_broker: Mosquitto) -> None:
    async with client(own_broker.port) as connection:
        own_broker.stop()
        with pytest.raises(MqttError, match="Disconnected"):
            async with asyncio.timeout(WAIT_S):
                await connection.wait_lost()


async def test_a_broker_that_stops_answering_is_noticed_by_keepalive(
    own_broker: Mosquitto,
) -> None:
    assert own_broker.process is not None
    pid = own_broker.process.pid
    async with client(own_broker.port, keepalive_s=1) as connection:
        os.kill(pid, signal.SIGSTOP)  # the TCP connection stays; the broker says nothing
        try:
            with pytest.raises(MqttError, match="Disconnected"):
                async with asyncio.timeout(WAIT_S):
                    await connection.wait_lost()
        finally:
            os.kill(pid, signal.SIGCONT)
