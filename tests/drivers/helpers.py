"""Small shared test helpers for the drivers tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from drivers.hub_link import LinkOptions, SmpHubLink
from drivers.smp_driver import open_smp_link
from sim.harness import HubHandle

WAIT_S: Final = 2.0
POLL_S: Final = 0.005


async def eventually(predicate: Callable[[], bool], timeout_s: float = WAIT_S) -> None:
    """Wait (bounded) until `predicate()` holds: for counters that have no event to wait on."""
    async with asyncio.timeout(timeout_s):
        while not predicate():  # noqa: ASYNC110 - polls plain counters, there is no event
            await asyncio.sleep(POLL_S)


@dataclass
class HubLinks:
    """Opens `smp` driver links to a harness hub as a slot worker does; closes them all."""

    handle: HubHandle
    framing: str = "raw"
    options: LinkOptions = field(default_factory=LinkOptions)
    name: str = "rig1/slot1"
    opened: list[SmpHubLink] = field(default_factory=list)

    async def open(self) -> SmpHubLink:
        link = await open_smp_link(
            self.handle.slot_spec(self.framing), name=self.name, options=self.options
        )
        self.opened.append(link)
        return link

    async def after_power_cycle(self, link: SmpHubLink) -> SmpHubLink:
        """The link to use once the hub is powered again: on a serial port the same one (the
        pty stays); a USB device left the bus with the power, so that link is closed and a new
        one opened, as the slot worker opens one for its next attempt. The old link learns that
        its device left from its reader thread's next bulk read: wait (bounded) for it."""
        if self.handle.transport == "serial":
            assert not link.client.is_closed
            return link
        await eventually(lambda: link.client.is_closed)  # TimeoutError if it never notices
        await link.close()
        return await self.open()

    async def close(self) -> None:
        for link in self.opened:
            await link.close()
