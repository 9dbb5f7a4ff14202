"""The reconnect backoff shared by the rig supervisor and the MQTT publisher."""

from __future__ import annotations

import random

import pytest

from jigd.backoff import Backoff


def rig_delays(first_s: float, max_s: float, rng: random.Random, count: int) -> list[float]:
    """The rig supervisor's former loop, verbatim: a delay doubled after each wait."""
    delays = []
    delay = first_s
    for _ in range(count):
        delays.append(min(delay, max_s) * (0.5 + rng.random() / 2))
        delay = min(delay * 2, max_s)
    return delays


def publisher_delay(failures: int, first_s: float, max_s: float, rng: random.Random) -> float:
    """The MQTT publisher's former `_backoff`, verbatim."""
    ceiling = min(max_s, first_s * 2.0 ** min(failures, 30))
    return ceiling * (0.5 + rng.random() / 2)


@pytest.mark.parametrize("max_s", [0.1, 0.2, 2.0, 30.0, 1e6])
def test_the_rig_supervisor_keeps_its_delays(max_s: float) -> None:
    backoff = Backoff(0.2, max_s, random.Random(7))
    expected = rig_delays(0.2, max_s, random.Random(7), 40)
    assert [backoff.delay(retry) for retry in range(40)] == expected


@pytest.mark.parametrize("max_s", [0.2, 0.5, 30.0, 1e12])
def test_the_publisher_keeps_its_delays(max_s: float) -> None:
    backoff = Backoff(0.5, max_s, random.Random(11))
    reference = random.Random(11)
    retries = [1, 2, 0, 3, 4, 5, 0, 1, 31, 40, 2000]
    expected = [publisher_delay(n, 0.5, max_s, reference) for n in retries]
    assert [backoff.delay(n) for n in retries] == expected


def test_delays_are_jittered_between_half_and_all_of_the_capped_ceiling() -> None:
    backoff = Backoff(0.5, 4.0)
    for retry, ceiling in [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (4, 4.0), (100, 4.0)]:
        delays = [backoff.delay(retry) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays), (retry, min(delays), max(delays))
        assert len(set(delays)) > 1  # jittered, not one value
