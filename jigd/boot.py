"""How long a slot waits for its hub to boot, and what it says of a hub that does not.

A hub's *expected boot time* is the time from power-on (or from its reset taking effect) until
it answers `os echo`: `boot_s`, plus `swap_s` after a reset or a power cycle that may swap in a
new image (MCUboot swaps first, and resumes an interrupted swap at the next power-on). Both are
set per Device Model in `[[hub_models]]`, else by `[timeouts]`; before a hub has identified
itself its model is not known and `[timeouts]` applies. A slot waits that long plus
`[timeouts] boot_margin_s`. A hub still silent then is power cycled once and waited for again;
silent still, it is failed (or, before its GUID is known, the slot asks for a person) with what
was seen last and what to do (docs/install.md, "Retries").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from jigd.config import HubModelConfig, TimeoutConfig
from jigd.model import Stage

__all__ = ["NO_BOOT", "WHAT_TO_DO", "BootLimits", "Heard", "boot_limits", "dead_hub_detail"]

NO_BOOT: Final = "no_boot"  # failure code: the hub did not boot, before or after a power cycle
WHAT_TO_DO: Final = (
    "re-seat the hub and check its maintenance cable; if it fails again, set it aside for the "
    "supplier"
)


@dataclass(frozen=True, slots=True)
class BootLimits:
    """A Device Model's expected boot and swap times and the margin allowed on top (seconds)."""

    boot_s: float
    swap_s: float
    margin_s: float

    @property
    def after_power_on(self) -> float:
        """How long to wait for a hub just put in (nothing to swap: it was not flashed here)."""
        return self.boot_s + self.margin_s

    @property
    def after_reset(self) -> float:
        """How long to wait after a reset, or a power cycle of a hub that may have a swap due."""
        return self.boot_s + self.swap_s + self.margin_s

    def explain(self, *, swap: bool) -> str:
        """The limit's parts, for a person: `expected 5 s boot + 15 s swap, 10 s margin`."""
        expected = f"{self.boot_s:g} s boot" + (f" + {self.swap_s:g} s swap" if swap else "")
        return f"expected {expected}, {self.margin_s:g} s margin"


def boot_limits(timeouts: TimeoutConfig, model: HubModelConfig | None) -> BootLimits:
    """The boot limits of a hub of `model` (its `[[hub_models]]`; None: not known or not set)."""
    boot_s = model.boot_s if model is not None and model.boot_s is not None else timeouts.boot_s
    swap_s = model.swap_s if model is not None and model.swap_s is not None else timeouts.swap_s
    return BootLimits(boot_s, swap_s, timeouts.boot_margin_s)


@dataclass(frozen=True, slots=True)
class Heard:
    """When a slot's hub last answered (monotonic seconds) and to which stage."""

    at: float
    stage: Stage


def seen_last(heard: Heard | None, now: float) -> str:
    """`last answer 41 s ago, to stage reset`, or that the hub never answered."""
    if heard is None:
        return "it never answered since it was put in"
    return f"last answer {now - heard.at:.0f} s ago, to stage {heard.stage}"


def dead_hub_detail(first: str, again_s: float, heard: Heard | None, now: float) -> str:
    """The fault of a hub silent after its one power cycle: `first` (what failed before it),
    the second wait of `again_s`, what was seen last, and what to do."""
    return (
        f"{first}; power cycled, no answer to echo within {again_s:g} s either; "
        f"{seen_last(heard, now)}. What to do: {WHAT_TO_DO}"
    )
