"""A worn slot: a contact (pogo pin, cable) that gets worse with every hub put in it.

The fault belongs to the slot, not to the hubs: a healthy hub flashed in a worn slot sees a bad
link, and is fine in any other slot. Each hub put in the slot raises the chance that a frame the
hub sends is lost on its way to the host by `per_hub`, up to `max_rate`: garbled by the contact,
it is one the host's decoder throws away (over raw framing, which has no checksum, a garbled
frame could pass for another hub's answer, so the loss is what is simulated). The first hub
flashes, the next ones need retries, and after a few hubs the slot fails hub after hub, as a
worn pin does. The first `SPARED_FRAMES` frames after a hub is put in are never lost (a fresh
insertion seats the pin): the hub is identified and its failure recorded, where a slot that lost
the identification too would leave its hub blinking for a person (whom the simulated operator
does not play). The draws come from a generator seeded per slot: the same seed gives the same
losses for the same frames.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Final

from sim.pty_port import READ_CHUNK, Port

__all__ = ["SPARED_FRAMES", "WEAR_MAX_RATE", "WEAR_PER_HUB", "Wear", "WornPort"]

WEAR_PER_HUB: Final = 0.3  # per-frame loss chance added by each hub put in the slot
WEAR_MAX_RATE: Final = 0.9
SPARED_FRAMES: Final = 20  # frames after an insertion that always arrive: boot polls, identity


@dataclass
class Wear:
    """How worn one slot is: how many hubs have been put in it."""

    seed: int
    per_hub: float = WEAR_PER_HUB
    max_rate: float = WEAR_MAX_RATE
    hubs: int = 0
    _spared: int = 0
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(f"jigsim worn slot {self.seed}")  # noqa: S311 - not crypto

    def inserted(self) -> None:
        """One more hub in the slot: it wears on."""
        self.hubs += 1
        self._spared = SPARED_FRAMES

    @property
    def frame_error_rate(self) -> float:
        """The chance that a frame sent now is lost: none for the first hub."""
        return min(self.max_rate, self.per_hub * (self.hubs - 1)) if self.hubs else 0.0

    def loses_frame(self) -> bool:
        """Whether the frame about to be sent is lost (never one of the first after insertion)."""
        if self._spared > 0:
            self._spared -= 1
            return False
        return self._rng.random() < self.frame_error_rate


class WornPort:
    """A slot's port seen through its worn contact: each frame the hub sends is lost with the
    wear's chance (decided at its first byte, so a frame is lost whole)."""

    def __init__(self, port: Port, wear: Wear) -> None:
        self._port = port
        self._wear = wear
        self._frame_started = False
        self._losing = False

    @property
    def path(self) -> str:
        return self._port.path

    async def read(self, max_bytes: int = READ_CHUNK) -> bytes:
        return await self._port.read(max_bytes)

    async def write(self, data: bytes) -> None:
        if data and not self._frame_started:
            self._frame_started = True
            self._losing = self._wear.loses_frame()
        if not self._losing:
            await self._port.write(data)

    def frame_end(self) -> None:
        self._frame_started = self._losing = False
        self._port.frame_end()
