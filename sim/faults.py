"""Faults a simulated hub can have, the seeded profiles that hand them out, and the decisions
of when they strike (`FaultInjector`).

Every fault is deterministic for a given `Faults.seed`: the same hub with the same faults
corrupts and drops the same responses in the same order of requests. One-shot faults (a hang,
a power loss during upload or swap) fire once per hub; after the power cycle that recovers the
hub, it behaves. Unrecoverable faults (`wrong_unlock_key`, `reject_image`,
`bricked_after_reset`, `never_boots`, `refuse_mark_test`) stay with the hub.
"""

from __future__ import annotations

import enum
import hashlib
import random
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "FaultInjector",
    "FaultProfile",
    "Faults",
    "PowerLostError",
    "assign_faults",
]

_Rate = Annotated[float, Field(ge=0.0, le=1.0)]


class Faults(BaseModel):
    """The faults of one hub; the default is a healthy hub."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = 0
    corrupt_rate: _Rate = 0.0
    """Probability that a transmitted response has one byte flipped."""
    drop_response_rate: _Rate = 0.0
    """Probability that a response is never transmitted."""
    hang_after_requests: Annotated[int, Field(ge=0)] | None = None
    """After this many requests the hub stops answering until it is power cycled (once)."""
    power_loss_during_upload_at: Annotated[float, Field(gt=0.0, lt=1.0)] | None = None
    """At this fraction of an upload the hub's supply browns out (once); it stays off until
    its slot is powered on again."""
    power_loss_during_swap: bool = False
    """Half-way through the first swap the supply browns out; the next power-on resumes it."""
    wrong_unlock_key: bool = False
    """The hub's device key is not derived from its manufacturer's master key."""
    reject_image: bool = False
    """The bootloader rejects every new image and boots the old one."""
    bricked_after_reset: bool = False
    """The first reset command is the last: the hub never boots again (dead after activation)."""
    never_boots: bool = False
    """The hub never answers at all: its bootloader finds nothing to boot from the first
    power-on (dead on arrival). Never dealt by a profile: a slot can only ask a person about
    such a hub (it has no GUID to record), and the simulated operator leaves blinking slots
    alone; put it in a pallet file for `jigsim serve --pallet`."""
    refuse_mark_test: bool = False
    """Every image state write that marks an image for test fails (FLASH_WRITE_FAILED), as on a
    hub whose trailer sector cannot be written. Never handed out by a profile."""
    slow_flash_factor: Annotated[float, Field(ge=1.0)] = 1.0
    """Erase and program times are multiplied by this."""
    upload_error_reason: str | None = None
    """A hostile hub: it answers every image upload with MGMT_ERR EUNKNOWN and this text as
    the error's `rsn` (forged log lines, terminal escapes, formulas: whatever a test needs).
    Never dealt by a profile."""

    def names(self) -> list[str]:
        """Names of the faults that are set (empty for a healthy hub)."""
        healthy = Faults()
        return [
            name
            for name in type(self).model_fields
            if name != "seed" and getattr(self, name) != getattr(healthy, name)
        ]

    @property
    def unrecoverable(self) -> bool:
        """A hub with such a fault cannot be reflashed, whatever the station does."""
        return (
            self.wrong_unlock_key
            or self.reject_image
            or self.bricked_after_reset
            or self.never_boots
            or self.upload_error_reason is not None
            or self.refuse_mark_test
        )


class FaultProfile(enum.StrEnum):
    """How many hubs of a pallet get faults: `none`, `light`, `harsh`, or `dead` (dead hubs
    only: about one in eight never boots after its activation, the others are healthy)."""

    NONE = "none"
    LIGHT = "light"
    HARSH = "harsh"
    DEAD = "dead"


# (probability of a recoverable fault, probability of an unrecoverable one, base rates on
# every hub: (corrupt_rate, drop_response_rate))
_PROFILE_RATES: dict[FaultProfile, tuple[float, float, tuple[float, float]]] = {
    FaultProfile.NONE: (0.0, 0.0, (0.0, 0.0)),
    FaultProfile.LIGHT: (0.05, 0.015, (0.0, 0.0)),
    FaultProfile.HARSH: (0.35, 0.08, (0.002, 0.002)),
    FaultProfile.DEAD: (0.0, 0.125, (0.0, 0.0)),
}


def _recoverable(rng: random.Random, harsh: bool) -> dict[str, object]:
    kind = rng.choice(
        ["corrupt", "drop", "hang", "upload_power_loss", "swap_power_loss", "slow_flash"]
    )
    scale = 3.0 if harsh else 1.0
    if kind == "corrupt":
        return {"corrupt_rate": round(0.01 * scale, 4)}
    if kind == "drop":
        return {"drop_response_rate": round(0.01 * scale, 4)}
    if kind == "hang":
        return {"hang_after_requests": rng.randint(5, 60)}
    if kind == "upload_power_loss":
        return {"power_loss_during_upload_at": round(rng.uniform(0.1, 0.9), 3)}
    if kind == "swap_power_loss":
        return {"power_loss_during_swap": True}
    return {"slow_flash_factor": round(rng.uniform(2.0, 4.0 * scale), 2)}


def assign_faults(profile: FaultProfile | str, seed: int, key: str) -> Faults:
    """The faults `profile` gives the hub named `key` (its GUID) on a pallet made with `seed`.

    The same profile, seed and key always give the same faults. `light`: about 5% of hubs get
    one recoverable fault and about 1.5% an unrecoverable one (bricked, rejected image, wrong
    unlock key). `harsh`: about 35% recoverable (some with two), 8% unrecoverable, and every
    hub corrupts and drops 0.2% of its responses. `dead`: about 12.5% `bricked_after_reset`,
    nothing else.
    """
    profile = FaultProfile(profile)
    # A string seed is hashed with SHA-512 by `random`, so it is stable across runs.
    rng = random.Random(f"jigsim faults {profile} {seed} {key}")  # noqa: S311 - not crypto
    hub_seed = rng.getrandbits(32)
    recoverable_p, unrecoverable_p, (corrupt, drop) = _PROFILE_RATES[profile]
    fields: dict[str, object] = {"seed": hub_seed}
    if corrupt:
        fields["corrupt_rate"] = corrupt
    if drop:
        fields["drop_response_rate"] = drop
    draw = rng.random()
    harsh = profile is FaultProfile.HARSH
    if draw < unrecoverable_p:
        kinds = ["bricked_after_reset", "reject_image", "wrong_unlock_key"]
        fields[kinds[0] if profile is FaultProfile.DEAD else rng.choice(kinds)] = True
    elif draw < unrecoverable_p + recoverable_p:
        fields.update(_recoverable(rng, harsh))
        if harsh and rng.random() < 0.3:
            fields.update(_recoverable(rng, harsh))
    return Faults.model_validate(fields)


class PowerLostError(Exception):
    """The hub's own supply failed (an injected fault): it goes off until powered on again."""


class FaultInjector:
    """When one hub's faults strike: the decisions, drawn from a generator seeded per hub.

    Every draw comes from `random.Random(faults.seed)` in the order the hub asks (one per
    response sent, two more for a corrupted one), so the same hub answering the same requests
    fails the same way. One-shot faults (hang, power loss during upload or swap) fire once per
    hub, whatever power cycles follow.
    """

    def __init__(self, faults: Faults) -> None:
        self.faults = faults
        self._rng = random.Random(faults.seed)  # noqa: S311 - fault injection, not crypto
        self._fired: set[str] = set()  # one-shot faults that already happened

    @property
    def fired(self) -> set[str]:
        """The one-shot faults that already happened (kept in a resumed simulator's state)."""
        return self._fired

    def _once(self, name: str) -> bool:
        """True the first time `name` fires, False ever after."""
        if name in self._fired:
            return False
        self._fired.add(name)
        return True

    def drops_response(self) -> bool:
        """Whether the response about to be sent is dropped instead."""
        rate = self.faults.drop_response_rate
        return bool(rate) and self._rng.random() < rate

    def corrupted(self, wire: bytes) -> tuple[bytes, int | None]:
        """`wire` (a response's bytes) with one byte flipped and where, or unchanged and None."""
        rate = self.faults.corrupt_rate
        if not rate or self._rng.random() >= rate:
            return wire, None
        at = self._rng.randrange(len(wire))
        flipped = wire[at] ^ self._rng.randrange(1, 256)
        return wire[:at] + bytes([flipped]) + wire[at + 1 :], at

    def hangs_now(self, requests_handled: int) -> bool:
        """Whether the hub hangs after its `requests_handled`-th request (once)."""
        hang_after = self.faults.hang_after_requests
        return hang_after is not None and requests_handled >= hang_after and self._once("hang")

    def loses_power_in_upload(self, programmed_to: int, length: int) -> bool:
        """Whether the supply browns out while the upload's bytes up to `programmed_to` (of
        `length`) are programmed (once)."""
        loss_at = self.faults.power_loss_during_upload_at
        return loss_at is not None and programmed_to >= loss_at * length and self._once("upload")

    def loses_power_in_swap(self, steps_done: int, steps: int) -> bool:
        """Whether the supply browns out before the next step of a swap (half-way, once)."""
        return (
            self.faults.power_loss_during_swap and steps_done >= steps // 2 and self._once("swap")
        )

    @property
    def refuses_mark_test(self) -> bool:
        """Whether an image state write for a test fails."""
        return self.faults.refuse_mark_test

    @property
    def flash_time_factor(self) -> float:
        """Erase and program times are multiplied by this."""
        return self.faults.slow_flash_factor

    def unlock_master_key(self, master_key: bytes) -> bytes:
        """The master key the hub's device key is derived from: another one with
        `wrong_unlock_key`."""
        if self.faults.wrong_unlock_key:
            return hashlib.sha256(b"jigsim wrong unlock key" + master_key).digest()
        return master_key
