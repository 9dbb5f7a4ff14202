"""What a rig needs of a hub in one of its slots, whatever runs it.

Two kinds of hub fill slots: the simulated hub (`sim.hub.SimHub`, the protocol written in
Python) and a Zephyr native_sim executable in its own process (`sim.exe_hub.ExeHub`, for
`jigsim serve --hub-exe`). Rigs, the operator and the ground truth handle both through this
protocol.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable
from typing import Protocol

from jigd.model import Guid
from sim.pty_port import Port

__all__ = ["HubState", "HubStateWatch", "SlotHub"]


class HubState(enum.StrEnum):
    """What the hub is doing, as seen from the wire."""

    OFF = "off"  # no power: silent
    BOOTING = "booting"  # reset, bootloader (maybe swapping) and application start: silent
    RUNNING = "running"  # the application answers SMP
    HUNG = "hung"  # the application stopped answering until a power cycle
    BRICKED = "bricked"  # never boots again


class SlotHub(Protocol):
    """A hub a rig can hold: served on its slot's port, powered by the slot's supply."""

    name: str
    guid: Guid
    on_power_lost: Callable[[], None] | None  # the hub's supply browned out by itself

    async def serve(self, port: Port) -> None:
        """Be connected to `port` until cancelled."""
        ...

    def power_on(self) -> None:
        """The slot's supply goes on: the hub boots."""
        ...

    def power_off(self) -> None:
        """The slot's supply goes off: the hub is silent at once."""
        ...

    def truth(self) -> dict[str, object]:
        """The hub's real state, for the ground truth."""
        ...


class HubStateWatch:
    """A hub's power-and-boot state, and a wake-up for whoever waits on it (tests, benches).

    Both kinds of hub inherit it; `_changed()` also wakes waiters for a hub's own counters.
    """

    def __init__(self) -> None:
        self._state = HubState.OFF
        self._activity = asyncio.Event()

    @property
    def state(self) -> HubState:
        return self._state

    def _set_state(self, state: HubState) -> None:
        if state is not self._state:
            self._state = state
            self._changed()

    def _changed(self) -> None:
        """Wake whoever waits in `wait_until`: the state or a counter changed."""
        self._activity.set()
        self._activity = asyncio.Event()

    async def wait_until(self, predicate: Callable[[], bool], *, timeout_s: float) -> None:
        """Wait until `predicate()` holds, checked at every change; TimeoutError after
        `timeout_s`."""
        async with asyncio.timeout(timeout_s):
            while not predicate():
                await self._activity.wait()

    async def wait_for_state(self, *states: HubState, timeout_s: float) -> None:
        """Wait until the hub is in one of `states`; TimeoutError after `timeout_s`."""
        await self.wait_until(lambda: self._state in states, timeout_s=timeout_s)
