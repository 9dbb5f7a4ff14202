"""The test harness itself: the broker fixture is a real mosquitto; leaked tasks fail a test."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import aiomqtt
import pytest

from tests.services import Mosquitto

REPO = Path(__file__).resolve().parents[1]


async def _round_trip(port: int) -> bytes:
    async with aiomqtt.Client("127.0.0.1", port, protocol=aiomqtt.ProtocolVersion.V5) as client:
        await client.subscribe("jigd-test/ping", qos=1)
        await client.publish("jigd-test/ping", b"pong", qos=1)
        async for message in client.messages:
            assert isinstance(message.payload, bytes)
            return message.payload
    raise AssertionError("no message")


async def test_publish_and_receive_through_real_broker(mosquitto: Mosquitto) -> None:
    assert await _round_trip(mosquitto.port) == b"pong"


async def test_round_trip_fails_when_broker_is_stopped(mosquitto: Mosquitto) -> None:
    mosquitto.stop()
    with pytest.raises(aiomqtt.MqttError):
        await _round_trip(mosquitto.port)


def test_leaked_task_fails_the_test(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text(
        "from tests.conftest import _no_leaked_tasks  # noqa: F401\n", encoding="utf-8"
    )
    (tmp_path / "test_leak.py").write_text(
        textwrap.dedent(
            """
            import asyncio

            async def test_leaks() -> None:
                asyncio.get_running_loop().create_task(asyncio.sleep(60), name="orphan")
            """
        ),
        encoding="utf-8",
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-o",
            "asyncio_mode=auto",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        check=False,
        timeout=60,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "left 1 task(s) running: orphan" in result.stdout
