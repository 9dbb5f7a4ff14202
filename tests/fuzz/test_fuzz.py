"""The fuzz campaign in the suite: every target of `targets.py`, briefly and reproducibly.

Each target gets `EXAMPLES` generated inputs, derandomized (the same inputs on every run, so
CI never fails by chance) and with no example database. `python -m bench.fuzz` runs the same
targets with random seeds and far more inputs.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from tests.fuzz.targets import TARGETS, Target

EXAMPLES = 200

CI = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.mark.parametrize("target", TARGETS, ids=lambda t: t.name)
def test_target_raises_only_its_documented_errors(target: Target) -> None:
    with target.session() as check:

        @CI
        @given(target.strategy)
        def run(value: Any) -> None:
            check(value)

        run()
