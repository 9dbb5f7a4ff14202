"""What a simulated hub keeps in flash, and what programming it costs.

`HubFlash` is everything that survives power loss: the two image slots, the settings the image
group and the bootloader write (pending swap, confirmed, unlocked) and, on a model with
`upload_state="flash"`, the unfinished upload. The SMP server (`sim.hub.smp_server`) and the
boot step (`sim.hub.boot`) both work on one `HubFlash`; `SimHub` owns it.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from sim.image_check import FlashImage
from sim.timing import Timing

__all__ = ["DURABLE_FIELDS", "HubFlash", "SwapKind", "UploadRecord"]

# The fields of HubFlash a resumed simulator keeps (`sim.state`); `upload` is not among them.
DURABLE_FIELDS: Final = frozenset(
    {
        "primary",
        "primary_confirmed",
        "secondary",
        "pending",
        "revert_on_boot",
        "swap",
        "swap_steps_done",
        "unlocked",
        "bricked",
    }
)


class SwapKind(enum.StrEnum):
    TEST = "test"  # swap in the secondary image; revert at the next boot unless confirmed
    PERMANENT = "permanent"  # swap in the secondary image for good
    REVERT = "revert"  # swap back the image that was running before a test


@dataclass
class UploadRecord:
    """An upload into the secondary slot: its announced sha256 and length, and progress.

    The bytes programmed are in flash; the rest is the upload's state, which Zephyr 3.4 keeps in
    RAM (`g_img_mgmt_state`): a hub whose model has `upload_state="ram"` forgets the record at
    every reset and power loss, so the next upload starts over from offset 0.
    """

    sha: bytes | None
    length: int
    data: bytearray = field(default_factory=bytearray)
    erased_sectors: set[int] = field(default_factory=set)

    @property
    def offset(self) -> int:
        """The next offset the hub expects: the bytes programmed so far."""
        return len(self.data)

    @property
    def complete(self) -> bool:
        return self.offset >= self.length

    def program_time_s(self, size: int, timing: Timing) -> float:
        """Erase time of the sectors the next `size` bytes touch for the first time plus the
        program time of their pages."""
        offset = self.offset
        if size <= 0:
            return 0.0
        last = offset + size - 1
        sectors = set(range(offset // timing.sector_size, last // timing.sector_size + 1))
        new_sectors = len(sectors - self.erased_sectors)
        pages = last // timing.page_size - offset // timing.page_size + 1
        return new_sectors * timing.sector_erase_s + pages * timing.page_program_s

    def programmed(self, data: bytes, timing: Timing) -> None:
        """`data` is now in flash at the record's offset (its sectors erased)."""
        if data:
            last = self.offset + len(data) - 1
            self.erased_sectors.update(
                range(self.offset // timing.sector_size, last // timing.sector_size + 1)
            )
        self.data += data


@dataclass
class HubFlash:
    """Everything a hub keeps across power loss: slots, settings and (on a model that keeps it
    in flash) the unfinished upload."""

    primary: FlashImage
    primary_confirmed: bool = True
    secondary: FlashImage | None = None
    upload: UploadRecord | None = None  # lost at reset and power loss when upload_state="ram"
    pending: SwapKind | None = None  # TEST or PERMANENT, set by image state write
    revert_on_boot: bool = False  # the active image runs on test: revert it at the next boot
    swap: SwapKind | None = None  # a swap in progress (resumed at power-on)
    swap_steps_done: int = 0
    unlocked: bool = False
    bricked: bool = False
    # Called after each assignment to one of DURABLE_FIELDS (`jigsim serve` saves the hub).
    on_change: Callable[[], None] | None = field(default=None, compare=False, repr=False)

    def __setattr__(self, name: str, value: object) -> None:
        object.__setattr__(self, name, value)
        if name in DURABLE_FIELDS:
            hook = self.__dict__.get("on_change")
            if hook is not None:
                hook()
