"""The shared event records: a GuidResult must fit its outcome."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from jigd.events import InvalidResultError
from jigd.model import Outcome, Stage
from tests.jigd.store.books import T0, guid, result


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"outcome": Outcome.NOT_RECEIVED}, "closing the batch"),
        ({"slot": 9}, "slot 9"),
        ({"attempts": 0}, "attempts 0"),
        ({"started": datetime(2025, 3, 1)}, "no timezone"),
        ({"finished": T0 - timedelta(seconds=1)}, "before started"),
        ({"image_sha256": "AB" * 32}, "lower-case hex"),
        ({"failure_code": "x", "failure_stage": Stage.UPLOAD}, "only a failed result"),
        ({"to_version": None}, "needs from and to"),
    ],
)
def test_result_fields_must_fit_the_outcome(changes: dict[str, object], message: str) -> None:
    good = result("B000001", 1, Outcome.REFLASHED)
    with pytest.raises(InvalidResultError, match=message) as caught:
        replace(good, **changes)  # type: ignore[arg-type]  # values of several field types
    assert str(guid(1)) in str(caught.value)
    with pytest.raises(InvalidResultError, match="failure stage and code"):
        replace(result("B000001", 1, Outcome.FAILED), failure_code=None)
