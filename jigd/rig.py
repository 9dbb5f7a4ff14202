"""One rig: its controller board connection, kept up with capped backoff, and its slot workers.

The supervisor opens the rig controller, reads which slots hold a hub, and forwards insert and
remove events to the slot workers. When the controller stops answering (port gone, no reply to
the health check) the rig is marked down, every slot's work is interrupted (resumable), and the
supervisor reconnects with capped exponential backoff and jitter. Other rigs are never affected.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from typing import Final

from drivers.errors import RigClosed, RigCommandFailed, RigError
from drivers.rig_controller import RigController, RigEvent, RigEventKind
from jigd.backoff import Backoff
from jigd.config import RigConfig
from jigd.model import LedColour
from jigd.slot import SlotDeps, SlotWorker

__all__ = ["RigSupervisor"]

_LOGGER = logging.getLogger(__name__)

HEALTH_INTERVAL_S: Final = 1.0  # PING period while the rig is up
BACKOFF_FIRST_S: Final = 0.2
RIG_COMMAND_TIMEOUT_S: Final = 1.0


class RigSupervisor:
    """Owns one rig's controller connection and its slot workers' view of the rig."""

    def __init__(
        self,
        config: RigConfig,
        deps: SlotDeps,
        *,
        backoff_max_s: float,
        on_rig_state: Callable[[int, bool], None] = lambda rig, up: None,
        rng: random.Random | None = None,
    ) -> None:
        self._config = config
        self._backoff = Backoff(BACKOFF_FIRST_S, backoff_max_s, rng)
        self._on_rig_state = on_rig_state
        self._controller: RigController | None = None
        self._lost = asyncio.Event()
        self._up = False
        self._served = False  # the current connection answered a health check
        self.disabled: set[int] = set()  # slots out of service: their LED shows it (RED)
        self._led_tasks: set[asyncio.Task[None]] = set()
        # Events that came while the presence bitmap was read (None: not reading it).
        self._held: list[RigEvent] | None = None
        self.workers = {s.slot: SlotWorker(self, s, deps) for s in config.slots}

    @property
    def rig(self) -> int:
        return self._config.rig

    @property
    def config(self) -> RigConfig:
        return self._config

    @property
    def up(self) -> bool:
        return self._up

    # -- RigPort, for the slot workers -------------------------------------------------------

    async def power(self, slot: int, on: bool) -> None:
        await self._require().power(slot, on)

    async def led(self, slot: int, colour: LedColour) -> None:
        await self._require().led(slot, colour)

    # -- for the self-test (jigd.selftest) ---------------------------------------------------

    async def ping(self) -> None:
        await self._require().ping()

    async def presence(self) -> tuple[bool, ...]:
        return await self._require().presence()

    def _require(self) -> RigController:
        controller = self._controller
        if controller is None or controller.is_closed:
            raise RigClosed(f"rig{self.rig}", "the rig controller is not connected")
        return controller

    # -- the supervising task ------------------------------------------------------------------

    async def run(self) -> None:
        """Keep the controller connected for ever; mark the rig down while it is not.

        The waits between reconnections grow while they fail, and start afresh once a
        connection has served (answered a health check): a rig that comes back is not made to
        wait longer each time it goes away again."""
        retry = 0
        while True:
            self._served = False
            try:
                await self._connect_and_serve()
            except RigError as exc:
                _LOGGER.warning("rig %d: %s", self.rig, exc)
            if self._served:
                retry = 0  # it was up: start backing off afresh
            self._mark_down()
            wait = self._backoff.delay(retry)
            _LOGGER.info("rig %d: reconnecting in %.2f s", self.rig, wait)
            await asyncio.sleep(wait)
            retry += 1

    async def _connect_and_serve(self) -> None:
        self._lost.clear()
        # A hub put in or pulled while the bitmap is read is told by an event that may be
        # handled before the bitmap's answer is (both can come in one read): events are held
        # until the bitmap is applied, then applied over it in order, so none is undone.
        self._held = []
        controller = await RigController.open(
            self._config.controller,
            self._config.controller_baudrate,
            name=f"rig{self.rig}",
            timeout_s=RIG_COMMAND_TIMEOUT_S,
            on_event=self._event,
            on_lost=lambda error: self._lost.set(),
        )
        self._controller = controller
        try:
            presence = await controller.presence()
            self._up = True
            self._on_rig_state(self.rig, True)
            _LOGGER.info("rig %d: up, presence %s", self.rig, _bits(presence))
            for slot, worker in self.workers.items():
                worker.rig_up(slot <= len(presence) and presence[slot - 1])
            held, self._held = self._held or [], None
            for event in held:
                self._apply(event)
            for slot in self.workers:
                present = slot <= len(presence) and presence[slot - 1]
                if slot in self.disabled or not present:
                    await self._idle_led(controller, slot)
            while not self._lost.is_set():
                try:
                    async with asyncio.timeout(HEALTH_INTERVAL_S):
                        await self._lost.wait()
                except TimeoutError:
                    await controller.ping()
                    self._served = True
            raise RigClosed(f"rig{self.rig}", "controller connection lost")
        finally:
            self._held = None
            self._controller = None
            await controller.close()

    async def _idle_led(self, controller: RigController, slot: int) -> None:
        """A slot with no hub to show: OFF, or RED while out of service. A controller that
        refuses (a dead LED answers ERR) is logged, not taken for a lost rig."""
        colour = LedColour.RED if slot in self.disabled else LedColour.OFF
        try:
            await controller.led(slot, colour)
        except RigCommandFailed as exc:
            _LOGGER.warning("rig %d slot %d: LED %s not set: %s", self.rig, slot, colour, exc)

    def _event(self, event: RigEvent) -> None:
        if self._held is not None:
            self._held.append(event)
            return
        self._apply(event)

    def _apply(self, event: RigEvent) -> None:
        worker = self.workers.get(event.slot)
        if worker is None:
            _LOGGER.warning("rig %d: event for unconfigured slot %d", self.rig, event.slot)
            return
        worker.presence(event.kind is RigEventKind.INSERT)
        if event.kind is RigEventKind.REMOVE and event.slot in self.disabled:
            task = asyncio.get_running_loop().create_task(self._show_disabled(event.slot))
            self._led_tasks.add(task)
            task.add_done_callback(self._led_tasks.discard)

    async def _show_disabled(self, slot: int) -> None:
        """A hub taken out of a slot out of service: its LED shows RED again."""
        try:
            await self.led(slot, LedColour.RED)
        except RigError as exc:
            _LOGGER.warning("rig %d slot %d: LED RED not set: %s", self.rig, slot, exc)

    def _mark_down(self) -> None:
        if self._up:
            _LOGGER.error("rig %d: down", self.rig)
            self._on_rig_state(self.rig, False)
        self._up = False
        for worker in self.workers.values():
            worker.rig_down()


def _bits(presence: tuple[bool, ...]) -> str:
    return "".join("1" if p else "0" for p in presence)
