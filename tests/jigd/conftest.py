"""Fixtures shared by the jigd tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.jigd.mqtt_helpers import PASSWORD, broker, password_file
from tests.services import Mosquitto


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
