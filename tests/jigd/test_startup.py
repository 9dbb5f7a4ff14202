"""Start-up (jigd.startup, jigd.daemon, jigd.control): one daemon per station, a control socket
that is never taken from or removed under another process, and every start-up failure of
`jigd run` one line and exit 2 (systemd's `RestartPreventExitStatus=2`), never a traceback.

The single-instance test runs two real `jigd run` processes on one config while the first
flashes hubs on the simulator.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest

from jigd.config import StationConfig
from jigd.control import serve_control
from jigd.demo import DemoOptions, DemoRun, Paths
from jigd.demo.workdir import STATION
from jigd.startup import StartupError, StationLockedError, lock_path, station_lock
from jigd.station import Station, slot_drivers
from jigd.store.sqlite import SqliteStore
from tests.jigd.e2e_helpers import demo, wait_for_slot

SECOND_DAEMON_S: Final = 30.0  # a second daemon refused at start exits long before this


# -- the station's lock --------------------------------------------------------------------------


def test_the_lock_is_next_to_the_store_and_names_its_holder(tmp_path: Path) -> None:
    store = tmp_path / "state" / "jigd.sqlite3"
    path = lock_path(f"sqlite://{store}", tmp_path / "control.sock")
    assert path == tmp_path / "state" / "jigd.sqlite3.lock"
    held = rf"another jigd \(pid {os.getpid()}\) is running on this store"
    with station_lock(path):
        assert path.read_text("ascii") == f"{os.getpid()}\n"
        with pytest.raises(StationLockedError, match=held), station_lock(path):
            pass  # pragma: no cover - never entered
    with station_lock(path):  # released at the end of the first
        pass


# -- the control socket ------------------------------------------------------------------------


def _http_status(path: Path) -> str:
    """The status line an HTTP/1.0 request for an unknown page gets on the socket `path`."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.connect(str(path))
        client.sendall(b"GET /no-such-page HTTP/1.0\r\n\r\n")
        answer = b""
        while chunk := client.recv(4096):
            answer += chunk
    return answer.decode("latin-1").split("\r\n", 1)[0]


@pytest.fixture
def station(tmp_path: Path) -> Station:
    """A station that is not running: enough for serving (its handlers are never called)."""
    return Station(StationConfig(station="t", control_socket=tmp_path / "run" / "c.sock"))


@pytest.fixture
def listening(tmp_path: Path) -> Iterator[Path]:
    """Another process's control socket: bound and listening at the daemon's path."""
    path = tmp_path / "run" / "c.sock"
    path.parent.mkdir()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as other:
        other.bind(str(path))
        other.listen()
        yield path


async def test_a_socket_another_process_serves_on_is_not_taken(
    station: Station, listening: Path
) -> None:
    before = await asyncio.to_thread(lambda: listening.stat().st_ino)
    with pytest.raises(StartupError, match=r"control_socket .*: another process is serving on it"):
        async with serve_control(station, listening):
            pass  # pragma: no cover - never entered
    assert await asyncio.to_thread(lambda: listening.stat().st_ino) == before


async def test_the_socket_is_removed_at_the_end_only_if_it_is_still_ours(
    station: Station, tmp_path: Path
) -> None:
    path = tmp_path / "run" / "c.sock"
    async with serve_control(station, path):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as other:
            other.bind(str(tmp_path / "run" / "theirs.sock"))
            (tmp_path / "run" / "theirs.sock").replace(path)  # another socket now stands there
            theirs = path.stat().st_ino
    assert path.stat().st_ino == theirs
    path.unlink()
    async with serve_control(station, path):
        assert path.exists()
    assert not path.exists()  # ours: removed


async def test_a_stale_socket_is_replaced_and_a_file_is_never_removed(
    station: Station, tmp_path: Path
) -> None:
    path = tmp_path / "run" / "c.sock"
    path.parent.mkdir()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as gone:
        gone.bind(str(path))  # a daemon that died: the file stays, nobody listens
    async with serve_control(station, path):
        status = await asyncio.to_thread(_http_status, path)  # the stale one refused; this answers
        assert status == "HTTP/1.0 404 Not Found"
    path.write_text("precious", encoding="utf-8")
    with pytest.raises(StartupError, match=r"control_socket .*: exists and is not a socket"):
        async with serve_control(station, path):
            pass  # pragma: no cover - never entered
    assert path.read_text("utf-8") == "precious"


# -- `jigd run`: every start-up failure is one line and exit 2 ---------------------------------


def _station(tmp_path: Path, extra: str = "") -> Path:
    """A station config with no rigs: an empty catalog, no master keys."""
    (tmp_path / "catalog").mkdir(exist_ok=True)
    keys = tmp_path / "keys.toml"
    keys.write_text("", encoding="utf-8")
    keys.chmod(0o600)
    config = tmp_path / "station.toml"
    config.write_text(
        'station = "t"\ncatalog_dir = "catalog"\nstore_path = "state/jigd.sqlite3"\n'
        f'metrics_host = "127.0.0.1"\n{extra}\n[secrets]\nmaster_keys_file = "keys.toml"\n',
        encoding="utf-8",
    )
    return config


def _jigd_run(config: Path) -> tuple[int, list[str], str]:
    """Exit code, the `error:` lines and the whole stderr of `jigd run --config`."""
    done = subprocess.run(
        [sys.executable, "-m", "jigd.cli", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=SECOND_DAEMON_S,
        check=False,
    )
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    return done.returncode, errors, done.stderr


def test_jigd_run_with_the_metrics_port_in_use_exits_2_before_touching_the_store(
    tmp_path: Path,
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = _station(tmp_path, f'control_socket = "run/c.sock"\nmetrics_port = {port}')
        code, errors, stderr = _jigd_run(config)
    assert code == 2, stderr
    assert "Traceback" not in stderr
    assert errors == [
        f"error: metrics_host/metrics_port: cannot listen on 127.0.0.1:{port}: "
        "Address already in use"
    ], stderr
    assert not (tmp_path / "state" / "jigd.sqlite3").exists()  # no rig, no store was touched


@pytest.mark.parametrize(
    ("socket_path", "expected"),
    [
        pytest.param(
            "/run/" + "s" * 110 + "/c.sock",
            "error: {config}: control_socket: /run/{s}/c.sock is 122 bytes long; a Unix socket's "
            "path is at most 107 bytes",
            id="path-too-long",
        ),
        pytest.param(
            "state",
            "error: control_socket {tmp}/state: exists and is not a socket; not replacing it",
            id="a-directory",
        ),
    ],
)  # fmt: skip
def test_jigd_run_with_an_unusable_control_socket_exits_2_in_one_line(
    tmp_path: Path, socket_path: str, expected: str
) -> None:
    (tmp_path / "state").mkdir()
    config = _station(tmp_path, f'control_socket = "{socket_path}"')
    code, errors, stderr = _jigd_run(config)
    assert code == 2, stderr
    assert "Traceback" not in stderr
    assert errors == [expected.format(config=config, tmp=tmp_path, s="s" * 110)], stderr


# -- one daemon per station, end to end ----------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_a_second_daemon_on_the_same_config_exits_2_and_leaves_the_first_alone(
    tmp_path: Path,
) -> None:
    """While the first daemon flashes hubs, a second `jigd run` on its config exits 2 naming
    the first's pid; the first still answers on its socket, its hubs go on to their results
    (none marked interrupted), and the socket is still there after the second has gone."""
    workdir = tmp_path / "demo"
    seen: dict[str, object] = {}

    async def second_daemon(run: DemoRun) -> None:
        busy = await wait_for_slot(
            run, lambda s: s["state"] == "busy" and s["stage"] == "upload" and s["progress"] > 5
        )
        first = run.daemon.proc
        assert first is not None
        second = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "jigd.cli", "run", "--config", str(run.paths.config),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            async with asyncio.timeout(SECOND_DAEMON_S):
                _, err = await second.communicate()
        finally:
            if second.returncode is None:  # it took over: stop it, the test has failed
                second.terminate()
                await second.wait()
        seen["code"] = second.returncode
        seen["stderr"] = err.decode()
        seen["socket_after"] = run.paths.socket.exists()
        status = await run.client.request("GET", "/v1/status")  # the first still answers
        seen["first_alive"] = first.returncode is None and status["station"] == "demo"
        seen["first_pid"] = first.pid
        seen["busy_guid"] = busy["guid"]

    options = DemoOptions(
        hubs=8, rigs=1, slots=4, faults="none", seed=5, workdir=workdir,
        image_size=96 * 1024, handling_s=0.05, missing=0, extra=0, current=0,
    )  # fmt: skip
    code, lines = await demo(options, during=second_daemon)
    stderr = str(seen.get("stderr", ""))
    assert seen.get("code") == 2, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    assert f"another jigd (pid {seen['first_pid']}) is running on this store" in errors[0]
    assert "Traceback" not in stderr
    assert seen["socket_after"] is True
    assert seen["first_alive"] is True
    assert code == 0, "\n".join(lines[-40:])  # the books balance: every hub has its result
    async with await SqliteStore.open(Paths(workdir).store, station=STATION) as store:
        events = await store.journal()
    assert [e for e in events if e.kind == "interrupted"] == []
    results = {str(e.guid): e.data.get("outcome") for e in events if e.kind == "result"}
    assert results[str(seen["busy_guid"])] == "reflashed"
    assert "interrupted by a restart" not in (workdir / "jigd.log").read_text("utf-8")


# -- each slot's driver is the one its `driver` key names ---------------------------------------


FAKE_DRIVER: Final = """
async def open_link(params, /, *, name=None, options=None):
    return ("fake", params.port, name)
"""


def test_a_slot_gets_the_installed_driver_its_config_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A driver package declares its `jigd.drivers` entry point (a real distribution on
    sys.path); the config takes its name and the slot's link is opened by it, not by smp."""
    (tmp_path / "fake_jig_driver.py").write_text(FAKE_DRIVER, encoding="utf-8")
    info = tmp_path / "fake_jig_driver-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-jig-driver\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[jigd.drivers]\nfake = fake_jig_driver:open_link\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    slots = [{"slot": 1, "port": "/dev/a", "driver": "fake"}, {"slot": 2, "port": "/dev/b"}]
    config = StationConfig.model_validate(
        {"station": "t", "rigs": [{"rig": 1, "controller": "/dev/c", "slots": slots}]}
    )
    opened: object = asyncio.run(
        slot_drivers(config)(config.rigs[0].slots[0], name="rig1/slot1")
    )  # the fake driver returns what it was given instead of a HubLink
    assert opened == ("fake", "/dev/a", "rig1/slot1")
    slots[1]["driver"] = "acme"
    with pytest.raises(ValueError, match=r"unknown driver 'acme'; installed: fake, smp"):
        StationConfig.model_validate(
            {"station": "t", "rigs": [{"rig": 1, "controller": "/dev/c", "slots": slots}]}
        )
