"""Fixtures shared by the jigd tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from jigd.config import StationConfig
from jigd.daemon import run_daemon
from jigd.secrets import MasterKeys
from jigd.station import Station
from tests.jigd.mqtt_helpers import PASSWORD, broker, password_file
from tests.services import Mosquitto, free_port


@pytest.fixture
def auth_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """Users only, and the user `jigd` may only use `jigd/v1/#`."""
    directory = tmp_path / "auth-broker"
    directory.mkdir()
    password_file(directory / "passwd", "jigd", PASSWORD)
    (directory / "acl").write_text("user jigd\ntopic readwrite jigd/v1/#\n", encoding="utf-8")
    server = broker(
        directory,
        extra=(
            "allow_anonymous false\n"
            f"password_file {directory / 'passwd'}\n"
            f"acl_file {directory / 'acl'}\n"
        ),
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[Station]:
    """A daemon in this process (no rigs) with its control API on a real Unix socket."""
    config = StationConfig(
        station="test",
        catalog_dir=tmp_path / "catalog",
        store_path=tmp_path / "state" / "jigd.sqlite3",
        control_socket=tmp_path / "run" / "control.sock",
        metrics_port=free_port(),
        metrics_host="127.0.0.1",
    )
    (tmp_path / "catalog").mkdir(exist_ok=True)  # a test may have filled it first
    ready: asyncio.Future[Station] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        run_daemon(
            config,
            master_keys=MasterKeys({}, tmp_path / "keys.toml"),
            on_ready=ready.set_result,
            handle_signals=False,
        )
    )
    async with asyncio.timeout(10):
        station = await ready
    try:
        yield station
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
