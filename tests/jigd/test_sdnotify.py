"""The systemd notification protocol (jigd.sdnotify, jigd.service), alone and from a real daemon.

The daemon test runs `python -m jigd.cli run` as a separate process against the simulator, with
a `NOTIFY_SOCKET` this test owns (an abstract-namespace datagram socket, as systemd's is) and
`WATCHDOG_USEC` set, and checks what systemd would see: READY=1 once the control API answers,
STATUS= lines with busy slots and the open batch, WATCHDOG=1 at half the period, no WATCHDOG=1
while the event loop is held (the test-only SIGUSR2 hook), STOPPING=1 and exit 0 on SIGTERM.
Where the kernel has PR_SET_MDWE, the daemon runs under it: what `MemoryDenyWriteExecute=yes`
in the unit enforces.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import pytest

from jigd.ctl import ControlClient
from jigd.demo import DemoOptions, Paths, prepare, sim_process, wait_for_paths
from jigd.events import BatchStatus, SlotStatus
from jigd.model import SlotState
from jigd.sdnotify import Notifier, watchdog_interval_s
from jigd.service import TEST_BLOCK_LOOP_ENV, status_line
from jigd.store import BatchInfo

WATCHDOG_USEC: Final = 1_000_000  # pings every 0.5 s
BLOCK_S: Final = 3.0

# Sets MemoryDenyWriteExecute the way systemd >= 253 does, prctl(PR_SET_MDWE,
# PR_MDWE_REFUSE_EXEC_GAIN), kept across execve, then runs the daemon.
MDWE_LAUNCHER: Final = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:
    sys.exit("prctl(PR_SET_MDWE): " + os.strerror(ctypes.get_errno()))
os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
"""


@dataclass
class Listener:
    """A notification socket, as systemd holds one: records (monotonic time, message)."""

    address: str
    on_message: dict[str, object] = field(default_factory=dict)
    messages: list[tuple[float, str]] = field(default_factory=list)
    _sock: socket.socket | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _probe: Path | None = None
    probe_seen_at_ready: bool | None = None

    def start(self, probe: Path | None = None) -> None:
        self._probe = probe
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(self.address.replace("@", "\0", 1))
        self._sock.settimeout(0.05)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                data = self._sock.recv(4096)
            except TimeoutError:
                continue
            now = time.monotonic()
            text = data.decode()
            if "READY=1" in text.split("\n") and self.probe_seen_at_ready is None:
                self.probe_seen_at_ready = self._probe is not None and self._probe.exists()
            self.messages.append((now, text))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._sock is not None:
            self._sock.close()

    def with_key(self, key: str) -> list[tuple[float, str]]:
        """(time, value) of every assignment `key=value` received."""
        found = []
        for at, text in list(self.messages):
            for line in text.split("\n"):
                name, _, value = line.partition("=")
                if name == key:
                    found.append((at, value))
        return found

    async def wait_for(self, key: str, pattern: str = "", timeout_s: float = 30.0) -> str:
        async with asyncio.timeout(timeout_s):
            while True:
                for _, value in self.with_key(key):
                    if re.search(pattern, value):
                        return value
                await asyncio.sleep(0.05)


def start_daemon(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            argv, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )


def mdwe_supported() -> bool:
    """Whether this kernel has PR_SET_MDWE (Linux 6.3+), probed in a child process."""
    probe = "import ctypes,sys; sys.exit(ctypes.CDLL(None).prctl(65, 1, 0, 0, 0) != 0)"
    return subprocess.run([sys.executable, "-c", probe], check=False).returncode == 0


# -- the protocol alone ----------------------------------------------------------------------


def test_notify_sends_assignments_to_a_path_socket(tmp_path: Path) -> None:
    address = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(address)
        notifier = Notifier.from_environment({"NOTIFY_SOCKET": address})
        assert notifier.enabled
        assert notifier.ready("0/8 slots busy\nsecond line")
        assert notifier.watchdog()
        notifier.close()
        assert server.recv(4096) == b"READY=1\nSTATUS=0/8 slots busy second line"
        assert server.recv(4096) == b"WATCHDOG=1"


def test_notify_reaches_an_abstract_socket() -> None:
    name = f"jigd-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind("\0" + name)
        notifier = Notifier(f"@{name}")
        assert notifier.stopping("bye")
        notifier.close()
        assert server.recv(4096) == b"STOPPING=1\nSTATUS=bye"


def test_without_a_manager_nothing_is_sent(tmp_path: Path) -> None:
    assert not Notifier.from_environment({}).notify("READY=1")
    assert not Notifier("relative/path").enabled
    gone = Notifier(str(tmp_path / "nobody-listens.sock"))
    assert gone.enabled
    assert not gone.ready()  # ENOENT is logged, never raised
    gone.close()


def test_watchdog_interval_is_for_this_process_only() -> None:
    me = str(os.getpid())
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000"}) == 30.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "500000", "WATCHDOG_PID": me}) == 0.5
    assert watchdog_interval_s({"WATCHDOG_USEC": "500000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "soon"}) is None
    assert watchdog_interval_s({}) is None


async def test_watchdog_loop_pings_at_half_the_period() -> None:
    name = f"jigd-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind("\0" + name)
        server.setblocking(False)
        notifier = Notifier(f"@{name}")
        task = asyncio.create_task(notifier.watchdog_loop(0.2))
        await asyncio.sleep(0.45)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        notifier.close()
        pings = []
        while True:
            try:
                pings.append(server.recv(64))
            except BlockingIOError:
                break
    assert pings == [b"WATCHDOG=1"] * len(pings)
    assert 4 <= len(pings) <= 6  # at 0, 0.1, 0.2, 0.3, 0.4 s


def _slot(slot: int, state: SlotState) -> SlotStatus:
    return SlotStatus(rig=1, slot=slot, state=state)


def _batch(batch_id: str, expected: int, pending: int) -> BatchInfo:
    return BatchInfo(
        batch_id=batch_id,
        booking="WO-1",
        party="P",
        source="m.csv",
        status=BatchStatus.OPEN,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        closed_at=None,
        expected=expected,
        received=expected - pending,
        pending=pending,
    )


def test_status_line_counts_busy_slots_and_open_batches() -> None:
    slots = [_slot(1, SlotState.BUSY), _slot(2, SlotState.DONE), _slot(3, SlotState.BUSY)]
    assert status_line(slots, [_batch("B000003", 960, 548)]) == (
        "2/3 slots busy; batch B000003 open (412/960 done)"
    )
    assert status_line(slots[1:2], []) == "0/1 slots busy; no open batch"
    two = status_line(slots, [_batch("B000001", 2, 0), _batch("B000002", 5, 5)], stopping=True)
    assert two == (
        "stopping, finishing swaps and confirms; 2/3 slots busy; "
        "batch B000001 open (2/2 done); batch B000002 open (0/5 done)"
    )


# -- a real daemon under a notification socket -----------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_daemon_notifies_ready_status_watchdog_and_stopping(tmp_path: Path) -> None:
    options = DemoOptions(
        hubs=12, rigs=1, slots=4, faults="none", seed=21, workdir=tmp_path / "st",
        image_size=96 * 1024, baud=460800, handling_s=0.05, missing=0, extra=0, current=0,
    )  # fmt: skip
    paths = Paths(options.workdir)
    await asyncio.to_thread(prepare, options, paths)
    listener = Listener(f"@jigd-test-{uuid.uuid4().hex}")
    listener.start(probe=paths.socket)
    under_mdwe = mdwe_supported()
    launcher = [sys.executable, "-c", MDWE_LAUNCHER] if under_mdwe else [sys.executable]
    env = {
        **os.environ,
        "NOTIFY_SOCKET": listener.address,
        "WATCHDOG_USEC": str(WATCHDOG_USEC),
        TEST_BLOCK_LOOP_ENV: str(BLOCK_S),
    }
    env.pop("WATCHDOG_PID", None)
    argv = [*launcher, "-m", "jigd.cli", "run", "--config", str(paths.config)]
    daemon = start_daemon(argv, env, paths.root / "jigd.log")
    sim = sim_process(options, paths)
    try:
        ready = await listener.wait_for("READY", "^1$")
        assert ready == "1"
        # READY=1 came after the control API was up (the store recovered, the catalog loaded,
        # the rigs' tasks started), and with the first status line.
        assert listener.probe_seen_at_ready is True
        first_status = listener.with_key("STATUS")[0][1]
        assert first_status == "0/4 slots busy; no open batch"

        client = ControlClient(paths.socket)
        imported = await client.request(
            "POST",
            "/v1/batches",
            {
                "manifest": paths.manifest.read_text(encoding="utf-8"),
                "source": str(paths.manifest),
                "booking": "WO-NOTIFY",
                "party": "DEMO-SUPPLIER",
            },
        )
        batch = imported["batch"]
        await sim.start()
        await wait_for_paths([paths.sim / "rig1" / "ctl"], sim, 30.0)
        busy = await listener.wait_for(
            "STATUS", rf"^[1-4]/4 slots busy; batch {batch} open \(\d+/12 done\)$"
        )
        assert busy

        # Periodic pings, at half of WATCHDOG_USEC, from a loop that is flashing hubs.
        await asyncio.sleep(2.0)
        before = [at for at, _ in listener.with_key("WATCHDOG")]
        assert len(before) >= 6, before
        recent = [b - a for a, b in itertools.pairwise(before[-5:])]
        assert max(recent) < 0.8 * WATCHDOG_USEC / 1e6, recent

        # Hold the loop: the pings stop for as long, then come back.
        blocked_at = time.monotonic()
        daemon.send_signal(signal.SIGUSR2)
        await asyncio.sleep(BLOCK_S + 1.5)
        pings = [at for at, _ in listener.with_key("WATCHDOG")]
        during = [at for at in pings if blocked_at + 0.3 < at < blocked_at + BLOCK_S - 0.1]
        assert during == [], "WATCHDOG=1 arrived while the event loop was blocked"
        gaps = [b - a for a, b in itertools.pairwise(pings) if a >= before[-1]]
        assert max(gaps) >= BLOCK_S - 0.5, gaps
        assert any(at > blocked_at + BLOCK_S for at in pings), "no ping after the loop was free"

        # The batch shows progress in later status lines.
        await listener.wait_for("STATUS", rf"batch {batch} open \([1-9]\d*/12 done\)")

        daemon.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(daemon.wait, 30)
        assert code == 0, (paths.root / "jigd.log").read_text("utf-8")[-3000:]
        await listener.wait_for("STOPPING", "^1$", timeout_s=1.0)
        log_text = (paths.root / "jigd.log").read_text("utf-8")
        assert "drained" in log_text or "still busy" in log_text
        if under_mdwe:
            assert "Traceback" not in log_text
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        await sim.stop()
        listener.stop()
