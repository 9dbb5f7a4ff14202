"""Capped exponential backoff with jitter, for the loops that reconnect (rig controllers, broker).

The n-th consecutive retry (n = 0, 1, ...) waits a random time between half and all of
`min(max_s, first_s * 2**n)`, so that many stations or rigs that lost the same thing at the same
moment do not all come back at the same instant. The doubling stops after 30 steps (over six
years for the rig's 0.2 s), far beyond any cap; the cap keeps the delays bounded anyway.
"""

from __future__ import annotations

import random
from typing import Final

__all__ = ["Backoff"]

MAX_DOUBLINGS: Final = 30


class Backoff:
    """The delays of one reconnecting loop; `rng` is injectable (tests pass a seeded one)."""

    def __init__(self, first_s: float, max_s: float, rng: random.Random | None = None) -> None:
        self.first_s = first_s
        self.max_s = max_s
        # Jitter only spreads reconnections; it needs no secure randomness.
        self._rng = rng if rng is not None else random.Random()  # noqa: S311

    def delay(self, retry: int) -> float:
        """Seconds to wait before a retry that follows `retry` others in a row (0: the first)."""
        ceiling = min(self.max_s, self.first_s * 2.0 ** min(retry, MAX_DOUBLINGS))
        return ceiling * (0.5 + self._rng.random() / 2)
