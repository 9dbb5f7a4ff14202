"""The rig self-test (`jigctl selftest RIG`, and at start with `[selftest] at_start = true`).

Checks, in order: the controller answers (`PING`); then for each slot not handling a hub
(busy slots are skipped and named): its power switch toggles (`POWER n OFF`, `POWER n ON`
acknowledged) and presence follows (the slot reports the same hub present after the toggle);
its port opens (every serial slot, and a USB slot with a hub in it); a hub in the slot answers
echo once it has booted again; and each LED colour is acknowledged (`LED n RED|GREEN|AMBER|
BLINK`), the LED then set back to what the slot shows. Each check is stored with the time
(the last run per rig is in `jigctl status` and the metrics); a slot that fails a check is taken
out of service with the reason `selftest: <part>: <what failed>` (jigd.slot_service). While a
slot is tested it starts no hub.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Final

from drivers.errors import DriverError, RigError
from drivers.hub_link import await_boot
from drivers.registry import HubDriver
from jigd.boot import boot_limits
from jigd.config import SlotConfig, TimeoutConfig
from jigd.model import LedColour
from jigd.rig import RigSupervisor
from jigd.slot import SlotWorker
from jigd.slot_service import SlotServices, led_for
from jigd.store import SelftestCheck, SelftestRun, Store

__all__ = ["CHECKS", "PARTS", "SelftestOutcome", "run_selftest"]

_LOGGER = logging.getLogger(__name__)

CHECKS: Final = ("controller", "power", "led", "port", "echo")
PARTS: Final = {  # how a reason names each checked part
    "controller": "controller",
    "power": "power switch",
    "led": "LED",
    "port": "port",
    "echo": "hub echo",
}
LED_COLOURS: Final = (LedColour.RED, LedColour.GREEN, LedColour.AMBER, LedColour.BLINK)
POWER_OFF_S: Final = 0.2  # how long a slot stays unpowered in the test
SELFTEST_BY: Final = "selftest"  # who disables a slot that fails


@dataclass(frozen=True)
class SelftestOutcome:
    """A self-test as stored, the slots it skipped (busy) and those it disabled."""

    run: SelftestRun
    skipped: tuple[int, ...]
    disabled: tuple[int, ...]


async def run_selftest(
    rig: RigSupervisor,
    *,
    store: Store,
    services: SlotServices,
    driver: HubDriver,
    timeouts: TimeoutConfig,
) -> SelftestOutcome:
    """Test `rig` now, store the checks, and disable each slot that failed one."""
    checks: list[SelftestCheck] = []
    skipped: list[int] = []
    controller = await _check(None, "controller", rig.ping())
    checks.append(controller)
    configs = {s.slot: s for s in rig.config.slots}

    async def test(slot: int, worker: SlotWorker) -> list[SelftestCheck]:
        """One slot, held meanwhile; its LED set back to what it shows."""
        worker.hold(True)
        try:
            found = await _test_slot(rig, configs[slot], driver, timeouts)
        finally:
            worker.hold(services.disabled(rig.rig, slot) is not None)
        colour = led_for(worker, services.disabled(rig.rig, slot) is not None)
        if colour is not None:
            await _check(slot, "led", rig.led(slot, colour))
        return found

    if controller.passed:
        skipped = [slot for slot, worker in rig.workers.items() if worker.handling]
        # The slots at once: each waits for its own hub's boot, the controller's lock keeps
        # their commands one at a time.
        tested = await asyncio.gather(
            *(test(s, w) for s, w in rig.workers.items() if s not in skipped)
        )
        checks += [check for found in tested for check in found]
    run = await store.record_selftest(rig.rig, checks)
    disabled: list[int] = []
    for check in checks:
        if check.passed or check.slot is None or check.slot in disabled:
            continue
        if not rig.up:  # the rig went away during the test: that is no slot's fault
            _LOGGER.warning("rig %d: lost during its self-test; no slot disabled", rig.rig)
            break
        reason = f"selftest: {PARTS[check.check]}: {check.detail}"
        await services.disable(rig.rig, check.slot, reason=reason, by=SELFTEST_BY)
        disabled.append(check.slot)
    _LOGGER.info(
        "rig %d: self-test: %d check(s), %d failed; skipped (busy): %s; disabled: %s",
        rig.rig,
        len(checks),
        run.failed,
        skipped or "none",
        disabled or "none",
    )
    return SelftestOutcome(run, tuple(skipped), tuple(disabled))


async def _check(slot: int | None, name: str, step: Awaitable[None]) -> SelftestCheck:
    """Await `step`: passed, or failed with what the rig said."""
    try:
        await step
    except RigError as exc:
        return SelftestCheck(slot, name, False, str(exc))
    return SelftestCheck(slot, name, True)


async def _test_slot(
    rig: RigSupervisor, config: SlotConfig, driver: HubDriver, timeouts: TimeoutConfig
) -> list[SelftestCheck]:
    slot = config.slot
    checks = [await _power(rig, slot)]
    present = await _present(rig, slot)
    if config.transport == "serial" or present:
        checks += await _port(config, driver, timeouts, present, f"rig{rig.rig}/slot{slot}")
    # The LED last: an operator may take its GREEN or RED for a verdict and pull the hub.
    checks.append(await _led(rig, slot))
    return checks


async def _present(rig: RigSupervisor, slot: int) -> bool:
    presence = await rig.presence()
    return slot <= len(presence) and presence[slot - 1]


async def _led(rig: RigSupervisor, slot: int) -> SelftestCheck:
    """Every colour is acknowledged: else which were not, and the controller's first word."""
    refused: list[str] = []
    first = ""
    for colour in LED_COLOURS:
        check = await _check(slot, "led", rig.led(slot, colour))
        if not check.passed:
            refused.append(colour)
            first = first or check.detail
    if refused:
        return SelftestCheck(slot, "led", False, f"{', '.join(refused)} refused ({first})")
    return SelftestCheck(slot, "led", True)


async def _power(rig: RigSupervisor, slot: int) -> SelftestCheck:
    try:
        before = await _present(rig, slot)
        await rig.power(slot, False)
        await asyncio.sleep(POWER_OFF_S)
        await rig.power(slot, True)
        after = await _present(rig, slot)
    except RigError as exc:
        return SelftestCheck(slot, "power", False, str(exc))
    if before != after:
        return SelftestCheck(slot, "power", False, "presence did not follow")
    return SelftestCheck(slot, "power", True)


async def _port(
    config: SlotConfig, driver: HubDriver, timeouts: TimeoutConfig, present: bool, name: str
) -> list[SelftestCheck]:
    """The port opens; with a hub in the slot, the hub answers echo once booted."""
    slot = config.slot
    try:
        link = await driver(config, name=name)
    except DriverError as exc:
        return [SelftestCheck(slot, "port", False, str(exc))]
    checks = [SelftestCheck(slot, "port", True)]
    if present:
        try:
            async with link:
                await await_boot(link, timeout_s=boot_limits(timeouts, None).after_power_on)
            checks.append(SelftestCheck(slot, "echo", True))
        except DriverError as exc:
            checks.append(SelftestCheck(slot, "echo", False, str(exc)))
    else:
        await link.close()
    return checks
