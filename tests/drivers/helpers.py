"""Small shared test helpers for the drivers tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Final

WAIT_S: Final = 2.0
POLL_S: Final = 0.005


async def eventually(predicate: Callable[[], bool], timeout_s: float = WAIT_S) -> None:
    """Wait (bounded) until `predicate()` holds: for counters that have no event to wait on."""
    async with asyncio.timeout(timeout_s):
        while not predicate():  # noqa: ASYNC110 - polls plain counters, there is no event
            await asyncio.sleep(POLL_S)
