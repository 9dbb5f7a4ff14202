"""The bootloader of a simulated hub: MCUboot's decisions on a `HubFlash`, taking their time.

At every power-on and reset, before the application starts (`SimHub`), `Bootloader.boot()`
resumes a swap that a power loss interrupted, reverts an image that ran on test without being
confirmed, or checks a pending image and swaps it in. The checks are MCUboot's with the
manufacturer's image key (`sim.image_check.signature_problem`, shared with `sim.bootloader`),
plus no downgrade. A swap takes `timing.swap_s` in `SWAP_STEPS` steps; an injected power loss
(`sim.faults.FaultInjector`) can strike half-way, and the next boot resumes it.

This is the boot step of the Python hub, whose flash is slots of whole images. A Zephyr
native_sim hub (`sim.exe_hub`) has a real flash file with MCUboot's image trailers: its boot step
is `sim.bootloader`, which reads and writes those trailers as MCUboot does.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final

from sim.faults import FaultInjector, PowerLostError
from sim.hub.flash import HubFlash, SwapKind
from sim.image_check import FlashImage, ImageKey, signature_problem
from sim.timing import Timing

__all__ = ["SWAP_STEPS", "Bootloader"]

_LOGGER = logging.getLogger(__name__)

SWAP_STEPS: Final = 10  # the swap proceeds (and is resumed) in this many steps


class Bootloader:
    """MCUboot-like: check and swap a pending image, or revert an unconfirmed one."""

    def __init__(
        self,
        flash: HubFlash,
        *,
        image_key: ImageKey,
        timing: Timing,
        faults: FaultInjector,
        name: str,
    ) -> None:
        self.flash = flash
        self._image_key = image_key
        self._timing = timing
        self._faults = faults
        self._name = name
        self.images_rejected = 0
        self.swaps = 0

    async def boot(self) -> bool:
        """Run the boot step; False when the hub does not boot (bricked). PowerLostError when
        an injected power loss strikes during a swap."""
        flash = self.flash
        if self._faults.faults.never_boots:
            flash.bricked = True
        if flash.bricked:
            return False
        if flash.swap is None:
            if flash.revert_on_boot:
                # The image on test was not confirmed: it goes back, whatever else was asked.
                _LOGGER.info("%s: image was not confirmed: reverting", self._name)
                flash.swap, flash.swap_steps_done, flash.pending = SwapKind.REVERT, 0, None
            elif flash.pending is not None and flash.secondary is not None:
                problem = await self._pending_image_problem(flash.secondary)
                if problem is not None:
                    _LOGGER.info("%s: bootloader rejects the new image: %s", self._name, problem)
                    self.images_rejected += 1
                    flash.secondary = None
                    flash.pending = None
                else:
                    flash.swap, flash.swap_steps_done, flash.pending = flash.pending, 0, None
        if flash.swap is not None:
            await self._swap()
        return True

    async def _pending_image_problem(self, image: FlashImage) -> str | None:
        if self._faults.faults.reject_image:
            return "rejected (injected fault)"
        problem = await asyncio.to_thread(signature_problem, image.data, self._image_key)
        if problem is not None:
            return problem
        active = self.flash.primary.version
        if image.version is None:
            return "image version does not fit a Firmware Version"
        if active is not None and image.version < active:
            return f"downgrade from {active} to {image.version}"
        return None

    async def _swap(self) -> None:
        flash = self.flash
        step_s = self._timing.swap_s / SWAP_STEPS
        while flash.swap_steps_done < SWAP_STEPS:
            if self._faults.loses_power_in_swap(flash.swap_steps_done, SWAP_STEPS):
                raise PowerLostError("swap")
            await asyncio.sleep(step_s)
            flash.swap_steps_done += 1
        kind = flash.swap
        flash.swap, flash.swap_steps_done = None, 0
        if flash.secondary is None:  # nothing to swap in: keep the active image
            return
        flash.primary, flash.secondary = flash.secondary, flash.primary
        flash.primary_confirmed = kind is not SwapKind.TEST
        flash.revert_on_boot = kind is SwapKind.TEST
        flash.upload = None
        self.swaps += 1
        _LOGGER.info("%s: swap (%s) done: %s active", self._name, kind, flash.primary.version)
