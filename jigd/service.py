"""jigd as a systemd service: the status line, its updates, and a test-only loop blocker.

`jigd run` tells systemd (through `jigd.sdnotify`) `READY=1` once the station runs, a `STATUS=`
line such as `12/24 slots busy; batch B000003 open (412/960 done)` whenever a slot starts or ends
work and every few seconds otherwise, `WATCHDOG=1` from the event loop, and `STOPPING=1` when it
drains on SIGTERM. `systemctl status jigd` shows the status line.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Callable, Sequence
from typing import Final

from jigd.events import BatchStatus, GuidResult, SlotStatus
from jigd.model import SlotState
from jigd.sdnotify import Notifier
from jigd.station import Station, StationObserver
from jigd.store import BatchInfo

__all__ = ["TEST_BLOCK_LOOP_ENV", "StatusReporter", "install_test_loop_blocker", "status_line"]

_LOGGER = logging.getLogger(__name__)

STATUS_REFRESH_S: Final = 5.0  # batch counts also change through the control API
STATUS_MIN_INTERVAL_S: Final = 0.5  # at most two status lines a second, however busy the slots

# Test only: SIGUSR2 holds the event loop for this many seconds (tests/jigd/test_sdnotify.py).
TEST_BLOCK_LOOP_ENV: Final = "JIGD_TEST_BLOCK_LOOP_ON_SIGUSR2"


def status_line(
    slots: Sequence[SlotStatus], batches: Sequence[BatchInfo], *, stopping: bool = False
) -> str:
    """`12/24 slots busy; batch B000003 open (412/960 done)`, for `systemctl status`."""
    busy = sum(1 for s in slots if s.state is SlotState.BUSY)
    parts = [f"{busy}/{len(slots)} slots busy"]
    if stopping:
        parts.insert(0, "stopping, finishing swaps and confirms")
    if not batches:
        parts.append("no open batch")
    parts += [
        f"batch {b.batch_id} open ({b.expected - b.pending}/{b.expected} done)" for b in batches
    ]
    return "; ".join(parts)


class StatusReporter:
    """Keeps the service's `STATUS=` line current: on a slot or batch change, and periodically."""

    def __init__(
        self,
        station: Station,
        notifier: Notifier,
        *,
        refresh_s: float = STATUS_REFRESH_S,
        min_interval_s: float = STATUS_MIN_INTERVAL_S,
    ) -> None:
        self._station = station
        self._notifier = notifier
        self._refresh_s = refresh_s
        self._min_interval_s = min_interval_s
        self._changed = asyncio.Event()
        self._states: dict[tuple[int, int], SlotState] = {}
        self.last: str | None = None

    def observer(self) -> StationObserver:
        return StationObserver(on_slot=self._slot, on_result=self._result)

    def poke(self) -> None:
        """Something changed that the status line shows (stopping, a batch imported)."""
        self._changed.set()

    def _slot(self, status: SlotStatus) -> None:
        # Progress changes many times a second; only a change of state changes the line.
        key = (status.rig, status.slot)
        if self._states.get(key) is not status.state:
            self._states[key] = status.state
            self._changed.set()

    def _result(self, result: GuidResult, seconds: float) -> None:
        self._changed.set()

    async def text(self) -> str:
        batches = await self._station.store.list_batches(BatchStatus.OPEN)
        return status_line(self._station.slots(), batches, stopping=self._station.draining)

    async def run(self) -> None:
        """Send the status line whenever it changes, until cancelled."""
        if not self._notifier.enabled:
            return
        while True:
            self._changed.clear()
            text = await self.text()
            if text != self.last:
                self._notifier.status(text)
                self.last = text
            sent = time.monotonic()
            try:
                async with asyncio.timeout(self._refresh_s):
                    await self._changed.wait()
            except TimeoutError:
                continue
            # Coalesce a burst of changes (a rig coming up sets every slot at once).
            await asyncio.sleep(max(0.0, sent + self._min_interval_s - time.monotonic()))


def install_test_loop_blocker(loop: asyncio.AbstractEventLoop) -> Callable[[], None] | None:
    """Test only: with `$JIGD_TEST_BLOCK_LOOP_ON_SIGUSR2=N`, SIGUSR2 holds the loop N seconds.

    That is what a hung callback does to the daemon; the watchdog test uses it to see the
    `WATCHDOG=1` pings stop. Never set this on a station. Returns the uninstaller, or None when
    the variable is not set.
    """
    value = os.environ.get(TEST_BLOCK_LOOP_ENV)
    if not value:
        return None
    try:
        block_s = float(value)
    except ValueError:
        raise ValueError(f"{TEST_BLOCK_LOOP_ENV}={value!r} is not a number of seconds") from None

    def block() -> None:
        _LOGGER.warning("test hook: blocking the event loop for %g s", block_s)
        time.sleep(block_s)  # blocking on the loop is the point of this hook

    _LOGGER.warning("test hook %s=%g is set: SIGUSR2 blocks the loop", TEST_BLOCK_LOOP_ENV, block_s)
    loop.add_signal_handler(signal.SIGUSR2, block)

    def uninstall() -> None:
        loop.remove_signal_handler(signal.SIGUSR2)

    return uninstall
