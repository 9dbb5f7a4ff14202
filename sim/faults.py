"""Faults a simulated hub can have, and the seeded profiles that hand them out.

Every fault is deterministic for a given `Faults.seed`: the same hub with the same faults
corrupts and drops the same responses in the same order of requests. One-shot faults (a hang,
a power loss during upload or swap) fire once per hub; after the power cycle that recovers the
hub, it behaves. Unrecoverable faults (`wrong_unlock_key`, `reject_image`,
`bricked_after_reset`) stay with the hub.
"""

from __future__ import annotations

import enum
import random
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "FaultProfile",
    "Faults",
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
    """The first reset command is the last: the hub never boots again."""
    slow_flash_factor: Annotated[float, Field(ge=1.0)] = 1.0
    """Erase and program times are multiplied by this."""

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
        return self.wrong_unlock_key or self.reject_image or self.bricked_after_reset


class FaultProfile(enum.StrEnum):
    """How many hubs of a pallet get faults: `none`, `light` or `harsh`."""

    NONE = "none"
    LIGHT = "light"
    HARSH = "harsh"


# (probability of a recoverable fault, probability of an unrecoverable one, base rates on
# every hub: (corrupt_rate, drop_response_rate))
_PROFILE_RATES: dict[FaultProfile, tuple[float, float, tuple[float, float]]] = {
    FaultProfile.NONE: (0.0, 0.0, (0.0, 0.0)),
    FaultProfile.LIGHT: (0.05, 0.015, (0.0, 0.0)),
    FaultProfile.HARSH: (0.35, 0.08, (0.002, 0.002)),
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
    hub corrupts and drops 0.2% of its responses.
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
        kind = rng.choice(["bricked_after_reset", "reject_image", "wrong_unlock_key"])
        fields[kind] = True
    elif draw < unrecoverable_p + recoverable_p:
        fields.update(_recoverable(rng, harsh))
        if harsh and rng.random() < 0.3:
            fields.update(_recoverable(rng, harsh))
    return Faults.model_validate(fields)
