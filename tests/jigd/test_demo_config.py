"""The demo's jigd.toml: a `StationConfig` written as TOML that loads back as the same config,
wherever the work directory is (quotes, backslashes, spaces and non-ASCII in its path)."""

from __future__ import annotations

import shutil
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from jigd.config import MqttConfig, load_config
from jigd.demo import DemoOptions, Paths
from jigd.demo.workdir import write_config


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A directory with a short path: the control socket under it must fit a Unix socket
    address (107 bytes), which pytest's own temporary directories may not leave room for."""
    path = Path(tempfile.mkdtemp(prefix="jigd-"))
    try:
        yield path
    finally:
        shutil.rmtree(path)


@pytest.mark.parametrize(
    "name", ["demo", 'the "demo"', "back\\slash", "with space", "ünïcödé 'and' = [x]"]
)
@pytest.mark.parametrize("transport", ["serial", "usb", "mixed"])
def test_written_config_loads_back_as_the_same_config(
    short_tmp: Path, name: str, transport: str
) -> None:
    tmp_path = short_tmp
    secret = tmp_path / 'pass "word"'
    options = DemoOptions(
        rigs=3,
        slots=2,
        workdir=tmp_path / name,
        transport=transport,
        metrics_port=9464,
        mqtt=MqttConfig(host="127.0.0.1", port=1884, username="jigd", password_file=secret),
    )
    paths = Paths(options.workdir)
    paths.root.mkdir()
    written = write_config(options, paths)
    assert load_config(paths.config) == written
    assert written.control_socket == paths.socket.resolve()
    assert written.mqtt.enabled
    assert [rig.controller for rig in written.rigs] == [
        str(paths.sim.resolve() / f"rig{rig}" / "ctl") for rig in (1, 2, 3)
    ]


def test_written_config_sets_only_what_the_demo_chooses(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    write_config(DemoOptions(rigs=1, slots=1, workdir=tmp_path), paths)
    text = paths.config.read_text("utf-8")
    assert text.startswith("# Written by `jigd demo`: a station driving simulated rigs.\n")
    data = tomllib.loads(text)
    assert set(data) == {
        "station",
        "catalog_dir",
        "store_path",
        "control_socket",
        "secrets",
        "timeouts",
        "retries",
        "rigs",
    }
    assert data["timeouts"] == {
        "request_s": 1.0,
        "stage_s": 30.0,
        "shutdown_s": 20.0,
    }
    assert data["rigs"][0]["slots"] == [
        {
            "slot": 1,
            "port": str(tmp_path.resolve() / "sim" / "rig1" / "slot1"),
            "framing": "raw",
            "baudrate": 921600,
        }
    ]
    # tests/jigd/e2e_helpers.set_timeouts edits `key = value` lines in place.
    assert text.count("\nshutdown_s = 20.0\n") == 1
