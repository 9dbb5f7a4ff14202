"""Zephyr's UART MCUmgr receiver, as a hub with console framing runs it.

Zephyr's `drivers/console/uart_mcumgr.c` collects received bytes into lines, one line per
buffer of `CONFIG_UART_MCUMGR_RX_BUF_SIZE` (128) bytes taken from a pool of
`CONFIG_UART_MCUMGR_RX_BUF_COUNT` (default 2). A buffer is taken when a line's first byte
arrives (`uart_mcumgr_rx_byte`); if none is free the whole line is ignored up to its `\\n`, and a
line that outgrows its buffer is dropped the same way. The ISR hands each complete line to the
SMP transport (`smp_uart.c`: `smp_uart_rx_frag` queues it, a work item decodes it and frees the
buffer).

When a buffer comes free is modelled as Zephyr's native_sim peers behave: the UART is polled
once per 1 ms tick, reading up to a per-tick budget of bytes (everything available when
unpaced), and the lines completed in a tick are processed, freeing their buffers, right after
that tick. So one line at a time is fine at any paced rate, while a burst of more lines than
buffers read in one tick loses lines. This module is hand-written: it is the hub's hardware and
driver, which no library models.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final

__all__ = ["LINE_BUFFER_SIZE", "TICK_S", "LineBuffers", "TickPacer"]

LINE_BUFFER_SIZE: Final = 128  # CONFIG_UART_MCUMGR_RX_BUF_SIZE: bytes of one line, its \n included
TICK_S: Final = 0.001  # the peers' kernel tick (CONFIG_SYS_CLOCK_TICKS_PER_SEC=1000)
_LF: Final = 0x0A


@dataclass
class LineBuffers:
    """The line buffers of `uart_mcumgr.c`: bytes in, complete lines out, lines dropped counted.

    `feed(data, tick)` takes the bytes the RX read in one tick and returns the lines completed in
    it; their buffers stay busy until the tick is over. `clear()` forgets the partial line and
    the busy buffers (RAM lost at reset or power off), keeping the counters.
    """

    count: int
    dropped_busy: int = 0  # lines that started while every buffer was busy
    dropped_long: int = 0  # lines longer than LINE_BUFFER_SIZE
    _current: bytearray | None = None  # the line being received, in its buffer
    _ignoring: bool = False  # dropping bytes up to the next \n
    _completed: list[int] = field(default_factory=list)  # ticks of lines not yet processed

    @property
    def dropped(self) -> int:
        return self.dropped_busy + self.dropped_long

    def clear(self) -> None:
        self._current = None
        self._ignoring = False
        self._completed.clear()

    def _free(self) -> int:
        return self.count - len(self._completed) - (self._current is not None)

    def feed(self, data: bytes, tick: int) -> list[bytes]:
        """Lines completed by `data`, the bytes read in `tick` (ticks never go back)."""
        # Lines completed in earlier ticks have been processed: their buffers are free.
        self._completed = [t for t in self._completed if t >= tick]
        lines: list[bytes] = []
        pos = 0
        while pos < len(data):
            newline = data.find(_LF, pos)
            end = newline + 1 if newline >= 0 else len(data)
            if not self._ignoring and self._current is None:
                if self._free() > 0:
                    self._current = bytearray()
                else:
                    self._ignoring = True
                    self.dropped_busy += 1
            if not self._ignoring and self._current is not None:
                if len(self._current) + end - pos > LINE_BUFFER_SIZE:
                    self._current = None  # freed at once, as uart_mcumgr_rx_byte does
                    self._ignoring = True
                    self.dropped_long += 1
                else:
                    self._current += data[pos:end]
            if newline >= 0:
                if self._ignoring:
                    self._ignoring = False
                elif self._current is not None:
                    lines.append(bytes(self._current))
                    self._completed.append(tick)
                    self._current = None
            pos = end
        return lines


@dataclass
class TickPacer:
    """Which 1 ms tick the RX reads each received byte in.

    `per_tick` bytes at most per tick (fractions carry over, so the average rate is exact), or
    every byte available at once when `per_tick` is 0. Bytes that arrive while earlier ones are
    still being read queue behind them; bytes that arrive on an idle line are read from the
    tick after their arrival.
    """

    per_tick: float
    _cursor: float = 0.0  # in ticks: where the next byte would be read

    @property
    def end_tick(self) -> float:
        """When the bytes taken so far will all have been read (in ticks)."""
        return self._cursor

    def split(self, data: bytes, arrival_tick: int) -> Iterator[tuple[int, bytes]]:
        """`data`, arriving in `arrival_tick`, cut into (tick, bytes read in that tick)."""
        if not data:
            return
        if self.per_tick <= 0:
            self._cursor = float(arrival_tick)
            yield arrival_tick, data
            return
        start = max(self._cursor, float(arrival_tick))
        self._cursor = start + len(data) / self.per_tick
        offset = 0
        tick = math.floor(start)
        while offset < len(data):
            # Bytes k with floor(start + k / per_tick) == tick.
            upto = min(len(data), math.ceil((tick + 1 - start) * self.per_tick - 1e-9))
            if upto > offset:
                yield tick, data[offset:upto]
                offset = upto
            tick += 1
