"""Zephyr's UART line buffers (sim.uart_rx) and the tick pacing of the console receiver."""

from __future__ import annotations

import pytest

from sim.uart_rx import LINE_BUFFER_SIZE, LineBuffers, TickPacer


def _line(n: int, fill: bytes = b"A") -> bytes:
    """A line of `n` bytes, its \\n included."""
    return fill * (n - 1) + b"\n"


def test_lines_completed_in_a_tick_keep_their_buffers_until_it_is_over() -> None:
    buffers = LineBuffers(count=2)
    a, b, c = _line(10, b"a"), _line(10, b"b"), _line(10, b"c")
    assert buffers.feed(a + b + c, tick=1) == [a, b]  # c started with both buffers busy
    assert (buffers.dropped_busy, buffers.dropped_long) == (1, 0)
    assert buffers.feed(c, tick=1) == []  # still the same tick: still busy
    assert buffers.feed(c + a + b, tick=2) == [c, a]
    assert buffers.dropped == 3


def test_one_line_per_tick_never_drops() -> None:
    buffers = LineBuffers(count=2)
    lines = [_line(LINE_BUFFER_SIZE, bytes([65 + i])) for i in range(20)]
    got = [line for tick, line in enumerate(lines) for line in buffers.feed(line, tick)]
    assert got == lines
    assert buffers.dropped == 0


def test_a_partial_line_holds_its_buffer_across_ticks() -> None:
    buffers = LineBuffers(count=2)
    assert buffers.feed(b"abc", tick=1) == []  # a buffer taken, line not complete
    assert buffers.feed(_line(5, b"x"), tick=1) == [b"abcxxxx\n"]
    # The completed line is busy until tick 2; one buffer is left for the next line.
    assert buffers.feed(b"de", tick=1) == []
    assert buffers.feed(b"f\n" + _line(3), tick=1) == [b"def\n"]
    assert buffers.dropped_busy == 1


def test_a_line_longer_than_its_buffer_is_dropped_whole() -> None:
    buffers = LineBuffers(count=2)
    fits, too_long = _line(LINE_BUFFER_SIZE), _line(LINE_BUFFER_SIZE + 1, b"B")
    assert buffers.feed(too_long[:100], tick=1) == []
    assert buffers.feed(too_long[100:] + fits, tick=1) == [fits]
    assert (buffers.dropped_busy, buffers.dropped_long) == (0, 1)


def test_clear_forgets_ram_but_keeps_counters() -> None:
    buffers = LineBuffers(count=1)
    buffers.feed(_line(4) + _line(4) + b"half", tick=1)  # the second line and "half" dropped
    buffers.clear()  # a reset: the busy buffer is free again, even within the tick
    assert buffers.feed(_line(4, b"z"), tick=1) == [b"zzz\n"]
    assert buffers.dropped_busy == 2


def test_paced_bytes_spread_over_ticks_with_fractions_carried() -> None:
    pacer = TickPacer(per_tick=2.5)
    assert list(pacer.split(b"abcdefg", arrival_tick=10)) == [
        (10, b"abc"),
        (11, b"de"),
        (12, b"fg"),
    ]
    assert pacer.end_tick == pytest.approx(12.8)
    # More bytes before those are read queue behind them; later ones start afresh.
    assert list(pacer.split(b"hij", arrival_tick=11)) == [(12, b"h"), (13, b"ij")]
    assert list(pacer.split(b"k", arrival_tick=40)) == [(40, b"k")]


def test_unpaced_reads_everything_in_the_arrival_tick() -> None:
    pacer = TickPacer(per_tick=0)
    data = bytes(5000)
    assert list(pacer.split(data, arrival_tick=7)) == [(7, data)]
    assert pacer.end_tick == 7
