"""The slot yield watch's statistics (jigd.slot_yield): exact binomial tails, the minimum count,
one alert per suspect slot until it recovers, and few false alarms on healthy rigs."""

from __future__ import annotations

import math
import random
from dataclasses import replace
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path

import pytest

from jigd.config import SlotYieldConfig
from jigd.events import GuidResult
from jigd.manifest import parse_manifest
from jigd.model import DeviceModel, FirmwareVersion, Guid, Outcome, Stage
from jigd.slot_yield import SlotYieldWatch, binomial_tail
from jigd.store.sqlite import SqliteStore

MODEL = DeviceModel(0x1086, 0x57310102)
OTHER_MODEL = DeviceModel(0x1086, 0x57310201)
WHEN = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
SHA = "ab" * 32


def _result(
    rig: int, slot: int, *, failed: bool, attempts: int = 1, model: DeviceModel = MODEL
) -> GuidResult:
    common = {
        "batch_id": "B000001",
        "guid": Guid(0x00DB_0000_0000_0001),
        "rig": rig,
        "slot": slot,
        "attempts": attempts,
        "started": WHEN,
        "finished": WHEN,
        "model": model,
    }
    if failed:
        return GuidResult(
            outcome=Outcome.FAILED,
            failure_stage=Stage.UPLOAD,
            failure_code="link_timeout",
            **common,  # type: ignore[arg-type]
        )
    return GuidResult(
        outcome=Outcome.REFLASHED,
        from_version=FirmwareVersion(0x04000006),
        to_version=FirmwareVersion(0x04000007),
        image_sha256=SHA,
        **common,  # type: ignore[arg-type]
    )


def _watch(slots: int = 8, **config: float) -> SlotYieldWatch:
    return SlotYieldWatch(SlotYieldConfig.model_validate(config), {1: list(range(1, slots + 1))})


def _direct_tail(k: int, n: int, p: float) -> float:
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))


@pytest.mark.parametrize(
    ("k", "n", "p", "expected"),
    [
        (0, 10, 0.3, 1.0),
        (1, 1, 0.5, 0.5),
        (3, 3, 0.5, 0.125),
        (2, 10, 0.1, 1 - 0.9**10 - 10 * 0.1 * 0.9**9),  # 0.2639...
        (11, 10, 0.5, 0.0),
        (1, 10, 0.0, 0.0),
        (10, 10, 1.0, 1.0),
    ],
)
def test_binomial_tail_known_values(k: int, n: int, p: float, expected: float) -> None:
    assert binomial_tail(k, n, p) == pytest.approx(expected, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize(("k", "n", "p"), [(4, 20, 0.03), (7, 50, 0.05), (40, 400, 0.08)])
def test_binomial_tail_agrees_with_the_direct_sum(k: int, n: int, p: float) -> None:
    assert binomial_tail(k, n, p) == pytest.approx(_direct_tail(k, n, p), rel=1e-9)


def test_binomial_tail_stays_finite_where_the_direct_sum_overflows() -> None:
    assert 0.0 <= binomial_tail(900, 1000, 0.01) < 1e-300
    p = Fraction(1, 1000)  # exact: one minus the terms below k
    exact = 1 - sum(math.comb(5000, i) * p**i * (1 - p) ** (5000 - i) for i in range(5))
    assert binomial_tail(5, 5000, 0.001) == pytest.approx(float(exact), rel=1e-9)


def test_p_value_uses_the_rest_of_the_rig() -> None:
    watch = _watch(slots=2, min_hubs=100)  # never judged: only the p-value is looked at
    for _ in range(48):
        watch.add(_result(1, 2, failed=False))
    for failed in (True, True, False, False, False, False):
        watch.add(_result(1, 1, failed=failed))
    # The rest of the rig: 0 failures of 48, smoothed to 1/50.
    assert watch.p_value(1, 1) == pytest.approx(_direct_tail(2, 6, 1 / 50), rel=1e-12)
    # Slot 2 against slot 1's 2 of 6: (2 + 1) / (6 + 2).
    assert watch.p_value(1, 2) == pytest.approx(1.0)
    assert watch.suspect(1, 1) is None


def test_no_verdict_under_the_minimum_count() -> None:
    watch = _watch(min_hubs=5)
    for slot in range(2, 9):
        for _ in range(20):
            assert watch.add(_result(1, slot, failed=False)) is None
    changes = [watch.add(_result(1, 1, failed=True)) for _ in range(4)]
    assert changes == [None] * 4  # 4 of 4 failed, but 4 hubs are not enough to judge
    assert watch.suspect(1, 1) is None
    change = watch.add(_result(1, 1, failed=True))
    assert change is not None
    assert change.reason is not None
    assert (change.rig, change.slot) == (1, 1)
    assert "5 of its last 5 hubs failed (upload:link_timeout x5)" in change.reason
    assert watch.suspect(1, 1) == change.reason


def test_alerted_once_until_it_recovers() -> None:
    watch = _watch(window_hubs=10, min_hubs=5)
    for slot in range(2, 9):
        for _ in range(10):
            watch.add(_result(1, slot, failed=False))
    changes = [watch.add(_result(1, 1, failed=True)) for _ in range(8)]
    raised = [c for c in changes if c is not None]
    assert len(raised) == 1
    assert raised[0].reason is not None
    # Fixed: good hubs push the failures out of the window, and the slot recovers, once.
    changes = [watch.add(_result(1, 1, failed=False)) for _ in range(10)]
    recovered = [c for c in changes if c is not None]
    assert len(recovered) == 1
    assert recovered[0].reason is None
    assert watch.suspect(1, 1) is None
    # Worn again: a new alert.
    changes = [watch.add(_result(1, 1, failed=True)) for _ in range(8)]
    assert sum(1 for c in changes if c is not None and c.reason is not None) == 1


def test_a_rig_failing_everywhere_alike_has_no_suspect() -> None:
    watch = _watch(min_hubs=5)
    changes = [watch.add(_result(1, slot, failed=True)) for _ in range(10) for slot in range(1, 9)]
    assert changes == [None] * 80


def test_counts_per_model_and_cause() -> None:
    watch = _watch()
    watch.add(_result(1, 3, failed=False))
    watch.add(_result(1, 3, failed=False, attempts=2, model=OTHER_MODEL))
    watch.add(_result(1, 3, failed=True))
    everything = watch.counts(1, 3)
    assert (everything.hubs, everything.first_pass, everything.failed) == (3, 1, 1)
    assert everything.failures == {"upload:link_timeout": 1}
    other = watch.counts(1, 3, OTHER_MODEL)
    assert (other.hubs, other.first_pass, other.failed) == (1, 0, 0)
    assert watch.add(_result(9, 1, failed=True)) is None  # a slot that is not configured


def _false_alarm_bound(rigs: int, alpha: float, tail: float = 1e-4) -> int:
    """The most false alarms `rigs` healthy rigs may raise if each does so with probability at
    most `alpha`: exceeded with probability below `tail`."""
    bound = 0
    while binomial_tail(bound + 1, rigs, alpha) >= tail:
        bound += 1
    return bound


@pytest.mark.parametrize("rate", [0.02, 0.1, 0.3])
def test_healthy_rigs_rarely_raise_a_suspect(rate: float) -> None:
    """200 rigs of 8 slots whose hubs all fail at the same rate, each judged after every hub
    while each slot finishes a window of hubs: at confidence 0.99 a rig raises a false alarm
    over that stretch with probability at most about 0.01, so the count of rigs that do stays
    within the binomial bound."""
    confidence, rigs, window = 0.99, 200, 50
    alarms = 0
    for seed in range(rigs):
        draw = random.Random(f"healthy rig {rate} {seed}")
        watch = _watch(window_hubs=window, confidence=confidence, min_hubs=5)
        changes = [
            watch.add(_result(1, slot, failed=draw.random() < rate))
            for _ in range(window)
            for slot in range(1, 9)
        ]
        alarms += any(c is not None and c.reason is not None for c in changes)
    assert alarms <= _false_alarm_bound(rigs, 1 - confidence)


async def test_rebuilt_from_the_open_batches_results(tmp_path: Path) -> None:
    """At start the watch counts what the store holds: a slot that failed its hubs is suspect
    again, in the order the results finished."""
    guids = [Guid(0x00DB_0000_0000_0100 + n) for n in range(40)]
    manifest = "guid\n" + "".join(f"{g}\n" for g in guids)
    async with await SqliteStore.open(tmp_path / "jigd.sqlite3") as store:
        batch = await store.import_batch(
            parse_manifest(manifest.encode(), "m.csv"), "WO-1", "SUPPLIER", "m.csv"
        )
        for n, guid in enumerate(guids):
            failed = n % 8 == 0  # slot 1 gets every eighth hub, and fails them all
            slot = 1 if failed else 2 + n % 7
            await store.begin_attempt(batch, guid, 1, slot, model=MODEL)
            result = _result(1, slot, failed=failed)
            await store.record_result(replace(result, batch_id=batch, guid=guid))
        watch = _watch()
        (found,) = await watch.rebuild(store)
    assert (found.rig, found.slot) == (1, 1)
    assert watch.suspect(1, 1) == found.reason
    assert watch.counts(1, 1).failed == 5
    assert watch.counts(1, 2).hubs == 5
