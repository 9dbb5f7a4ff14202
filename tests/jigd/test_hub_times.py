"""The expected time of a hub in its slot: the median of recent reflashed hubs of its model."""

from __future__ import annotations

from jigd.model import DeviceModel
from jigd.station import TIMES_KEPT, HubTimes

A = DeviceModel(0x1086, 0x57310102)
B = DeviceModel(0x1086, 0x57310201)


def test_unknown_until_a_hub_of_the_model_is_done() -> None:
    times = HubTimes()
    assert times.expected_s(A) is None
    times.add(A, 40.0)
    assert times.expected_s(A) == 40.0
    assert times.expected_s(B) is None


def test_the_median_of_the_recent_ones() -> None:
    times = HubTimes()
    for seconds in (30.0, 31.0, 300.0):  # one slow hub does not move it far
        times.add(A, seconds)
    assert times.expected_s(A) == 31.0
    for _ in range(TIMES_KEPT):
        times.add(A, 50.0)
    assert times.expected_s(A) == 50.0  # the old ones are forgotten
