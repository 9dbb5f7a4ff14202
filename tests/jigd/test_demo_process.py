"""The demo's child processes run under asyncio: stopping one never blocks the event loop, and
SIGTERM is followed by SIGKILL when the child does not exit in time."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from pathlib import Path

from jigd.demo import Process, wait_for_paths

# Each child touches the file named by its argument once it is ready for signals.
STUBBORN = (
    "import pathlib, signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "pathlib.Path(sys.argv[1]).touch(); time.sleep(60)"
)
OBEDIENT = "import pathlib, sys, time; pathlib.Path(sys.argv[1]).touch(); time.sleep(60)"


async def _ticks(stop: asyncio.Event, interval_s: float = 0.02) -> float:
    """The longest gap between wake-ups of a task that sleeps `interval_s` at a time."""
    worst = 0.0
    last = time.monotonic()
    while not stop.is_set():
        await asyncio.sleep(interval_s)
        now = time.monotonic()
        worst = max(worst, now - last)
        last = now
    return worst


async def _started(name: str, code: str, tmp_path: Path) -> Process:
    ready = tmp_path / f"{name}.ready"
    process = Process(name, [sys.executable, "-c", code, str(ready)], tmp_path / f"{name}.log")
    await process.start()
    await wait_for_paths([ready], process, 10.0)
    return process


async def test_a_child_that_ignores_sigterm_is_killed_without_blocking_the_loop(
    tmp_path: Path,
) -> None:
    process = await _started("stubborn", STUBBORN, tmp_path)
    assert process.running
    done = asyncio.Event()
    ticker = asyncio.create_task(_ticks(done))
    started = time.monotonic()
    code = await process.stop(timeout_s=1.0)
    elapsed = time.monotonic() - started
    done.set()
    worst_gap = await ticker
    assert code == -signal.SIGKILL
    assert 1.0 <= elapsed < 5.0
    assert worst_gap < 0.5  # the loop went on while the demo waited for the child
    assert not process.running


async def test_a_child_that_obeys_sigterm_exits_with_it(tmp_path: Path) -> None:
    assert await Process("idle", ["true"], tmp_path / "idle.log").stop() is None  # not started
    process = await _started("obedient", OBEDIENT, tmp_path)
    assert await process.stop() == -signal.SIGTERM
    assert await process.wait(1.0) == -signal.SIGTERM
    await process.kill()  # already gone: nothing to do
