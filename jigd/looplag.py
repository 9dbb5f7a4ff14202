"""How late the event loop runs what is due: the daemon's own health figure.

Every slot of every rig shares one event loop, so anything that holds it (a slow callback, a
blocking call) delays every slot at once. `LoopLagMonitor` sleeps a fixed interval, again and
again, and records how much later than asked it woke up; the control API reports the 50th and
99th percentile and the maximum over the last minute.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

__all__ = ["LAG_INTERVAL_S", "LAG_WINDOW_S", "LagSummary", "LoopLagMonitor"]

LAG_INTERVAL_S: Final = 0.010  # how often the monitor asks to be woken
LAG_WINDOW_S: Final = 60.0  # how far back the percentiles look


@dataclass(frozen=True, slots=True)
class LagSummary:
    """Loop lag over the window, in milliseconds (all 0.0 before the first sample)."""

    p50_ms: float
    p99_ms: float
    max_ms: float
    samples: int

    def as_json(self) -> dict[str, float]:
        return {
            "p50": round(self.p50_ms, 2),
            "p99": round(self.p99_ms, 2),
            "max": round(self.max_ms, 2),
        }


def _percentile(ordered: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending, non-empty list."""
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


class LoopLagMonitor:
    """Measures event-loop lag while `run()` runs; owned by the station's TaskGroup."""

    def __init__(
        self,
        interval_s: float = LAG_INTERVAL_S,
        window_s: float = LAG_WINDOW_S,
        *,
        on_sample: Callable[[float], None] = lambda lag_s: None,
    ) -> None:
        if interval_s <= 0 or window_s < interval_s:
            raise ValueError(f"bad loop-lag interval {interval_s} s or window {window_s} s")
        self._interval_s = interval_s
        self._window_s = window_s
        self._on_sample = on_sample  # each lag in seconds, as measured (a histogram may want it)
        # (loop time of the wake-up, lag in seconds). Each sample takes at least one interval,
        # so the window never holds more than this many.
        self._samples: deque[tuple[float, float]] = deque(
            maxlen=math.ceil(window_s / interval_s) + 1
        )

    async def run(self) -> None:
        """Sleep, measure, repeat, until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + self._interval_s
            await asyncio.sleep(self._interval_s)
            now = loop.time()
            lag_s = max(0.0, now - due)
            self._samples.append((now, lag_s))
            self._forget_before(now - self._window_s)
            self._on_sample(lag_s)

    def summary(self) -> LagSummary:
        """p50, p99 and max of the lag over the window."""
        if not self._samples:
            return LagSummary(0.0, 0.0, 0.0, 0)
        ordered = sorted(lag for _, lag in self._samples)
        return LagSummary(
            p50_ms=_percentile(ordered, 0.50) * 1000.0,
            p99_ms=_percentile(ordered, 0.99) * 1000.0,
            max_ms=ordered[-1] * 1000.0,
            samples=len(ordered),
        )

    def _forget_before(self, cutoff: float) -> None:
        samples = self._samples
        while samples and samples[0][0] < cutoff:
            samples.popleft()
