"""The event-loop lag monitor: it sees a blocked loop, forgets old lag, stops with its owner."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from jigd.config import StationConfig
from jigd.ctl import ControlClient
from jigd.daemon import run_daemon
from jigd.looplag import LoopLagMonitor
from jigd.secrets import MasterKeys
from jigd.station import Station

INTERVAL_S = 0.005
WAIT_S = 5.0


class _Wakeups:
    """Counts the monitor's samples, so a test waits for them instead of sleeping."""

    def __init__(self) -> None:
        self.lags: list[float] = []
        self._changed = asyncio.Event()

    def __call__(self, lag_s: float) -> None:
        self.lags.append(lag_s)
        self._changed.set()

    async def until(self, count: int) -> None:
        async with asyncio.timeout(WAIT_S):
            while len(self.lags) < count:
                self._changed.clear()
                await self._changed.wait()


async def test_a_blocked_loop_shows_as_lag() -> None:
    wakeups = _Wakeups()
    monitor = LoopLagMonitor(interval_s=INTERVAL_S, window_s=60.0, on_sample=wakeups)
    assert monitor.summary().as_json() == {"p50": 0.0, "p99": 0.0, "max": 0.0}
    async with asyncio.TaskGroup() as tasks:
        task = tasks.create_task(monitor.run(), name="loop-lag")
        await wakeups.until(5)
        before = monitor.summary()
        time.sleep(0.05)  # noqa: ASYNC251 - blocking the loop on purpose is the test
        await wakeups.until(len(wakeups.lags) + 3)
        task.cancel()
    after = monitor.summary()
    assert before.max_ms < 40.0
    assert after.max_ms >= 40.0
    assert max(wakeups.lags) * 1000.0 == after.max_ms
    assert after.p50_ms < 40.0  # one late wake-up among several on-time ones
    assert after.as_json()["max"] == round(after.max_ms, 2)


async def test_the_window_forgets_old_lag() -> None:
    window_s = 0.05
    wakeups = _Wakeups()
    monitor = LoopLagMonitor(interval_s=INTERVAL_S, window_s=window_s, on_sample=wakeups)
    async with asyncio.TaskGroup() as tasks:
        task = tasks.create_task(monitor.run())
        await wakeups.until(3)
        time.sleep(0.03)  # noqa: ASYNC251 - a late wake-up that must age out
        await wakeups.until(len(wakeups.lags) + 1)
        seen = monitor.summary().max_ms
        # Each sample takes at least one interval: this many more cover the whole window.
        await wakeups.until(len(wakeups.lags) + round(window_s / INTERVAL_S) + 1)
        task.cancel()
    assert seen >= 20.0
    assert monitor.summary().max_ms < 20.0
    assert monitor.summary().samples <= window_s / INTERVAL_S + 1


async def test_it_stops_with_its_owner() -> None:
    wakeups = _Wakeups()
    monitor = LoopLagMonitor(interval_s=INTERVAL_S, on_sample=wakeups)
    started: list[asyncio.Task[None]] = []

    async def failing_sibling() -> None:
        await wakeups.until(2)
        raise RuntimeError("a sibling task fails")

    async def owner() -> None:
        async with asyncio.TaskGroup() as tasks:
            started.append(tasks.create_task(monitor.run(), name="loop-lag"))
            tasks.create_task(failing_sibling())

    with pytest.raises(ExceptionGroup) as caught:
        await owner()
    assert caught.group_contains(RuntimeError)
    assert started[0].cancelled()
    count = len(wakeups.lags)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(INTERVAL_S * 4):
            await wakeups.until(count + 1)  # nothing measures any more


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="interval"):
        LoopLagMonitor(interval_s=0.0)
    with pytest.raises(ValueError, match="window"):
        LoopLagMonitor(interval_s=1.0, window_s=0.5)


async def test_the_station_runs_it_and_the_status_reports_it(tmp_path: Path) -> None:
    config = StationConfig(
        station="test",
        catalog_dir=tmp_path / "catalog",
        store_path=tmp_path / "state" / "jigd.sqlite3",
        control_socket=tmp_path / "run" / "control.sock",
    )
    (tmp_path / "catalog").mkdir()
    ready: asyncio.Future[Station] = asyncio.get_running_loop().create_future()
    daemon = asyncio.create_task(
        run_daemon(
            config,
            master_keys=MasterKeys({}, tmp_path / "keys.toml"),
            on_ready=ready.set_result,
            handle_signals=False,
        )
    )
    try:
        async with asyncio.timeout(WAIT_S):
            await ready
        assert "loop-lag" in {task.get_name() for task in asyncio.all_tasks()}
        status = await ControlClient(config.control_socket).request("GET", "/v1/status")
    finally:
        daemon.cancel()
        await asyncio.gather(daemon, return_exceptions=True)
    lag = status["loop_lag_ms"]
    assert set(lag) == {"p50", "p99", "max"}
    assert 0.0 <= lag["p50"] <= lag["p99"] <= lag["max"]
    # Stopped with the station (the autouse fixture also fails the test on a leaked task).
    assert "loop-lag" not in {t.get_name() for t in asyncio.all_tasks() if not t.done()}
