"""The timing model of a simulated hub, per Device Model, and the physical bound of a flash.

A hub's link moves `baud / 10` bytes per second in each direction (8N1: ten bit times per byte),
its flash erases a sector in `sector_erase_s` and programs a page in `page_program_s`, and a
reset, an image swap and a boot each take a fixed time. Benchmarks compare a flash against
`physical_bound`, the time no client can beat on that hub.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

from pydantic import BaseModel, ConfigDict, Field
from smp import image_management as smpimg

from drivers.framing import framing_for

__all__ = [
    "BITS_PER_BYTE",
    "Bound",
    "Timing",
    "flash_time_s",
    "physical_bound",
]

BITS_PER_BYTE: Final = 10  # 8N1: start bit, 8 data bits, stop bit


class Timing(BaseModel):
    """How fast one Device Model's hubs talk, write flash, swap and boot.

    The defaults are a 921600 baud UART and a NOR flash fast enough that, for raw framing, the
    wire and not the flash bounds an upload (a 4 KiB sector takes 44 ms on the wire and
    18 ms to erase and program).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    baud: int = Field(
        default=921_600, gt=0, description="link speed; bytes move at baud/10 per second"
    )
    buf_size: int = Field(
        default=2048, ge=64, description="largest SMP frame the hub receives (bytes)"
    )
    buf_count: int = Field(default=4, ge=1, description="receive buffers: requests in flight")
    slot_size: int = Field(default=1 << 20, gt=0, description="image slot capacity (bytes)")
    sector_size: int = Field(default=4096, gt=0, description="flash erase unit (bytes)")
    sector_erase_s: float = Field(default=0.010, ge=0, description="time to erase one sector")
    page_size: int = Field(default=256, gt=0, description="flash program unit (bytes)")
    page_program_s: float = Field(default=0.0005, ge=0, description="time to program one page")
    swap_s: float = Field(default=1.5, ge=0, description="bootloader time to swap the image slots")
    boot_s: float = Field(
        default=0.5, ge=0, description="bootloader start to application answering"
    )
    reset_s: float = Field(
        default=0.1, ge=0, description="reset command answered to bootloader start"
    )

    @property
    def bytes_per_s(self) -> float:
        return self.baud / BITS_PER_BYTE


def flash_time_s(image_size: int, timing: Timing) -> float:
    """Erase and program time of `image_size` bytes written from offset 0."""
    sectors = math.ceil(image_size / timing.sector_size)
    pages = math.ceil(image_size / timing.page_size)
    return sectors * timing.sector_erase_s + pages * timing.page_program_s


@dataclass(frozen=True, slots=True)
class Bound:
    """The physical lower bound of flashing one image, and its parts (seconds).

    `total_s = max(wire_s, flash_s) + fixed_s`. `framed_wire_s` is not part of the bound: it is
    what the upload requests of `framing` occupy on the wire when each fills `buf_size`, shown
    so that a client's framing overhead can be told from its idle time.
    """

    image_size: int
    framing: str
    baud: int
    wire_s: float
    flash_s: float
    fixed_s: float
    total_s: float
    framed_wire_s: float

    def as_dict(self) -> dict[str, object]:
        return {
            "image_size": self.image_size,
            "framing": self.framing,
            "baud": self.baud,
            "wire_s": self.wire_s,
            "flash_s": self.flash_s,
            "fixed_s": self.fixed_s,
            "total_s": self.total_s,
            "framed_wire_s": self.framed_wire_s,
        }


def _framed_upload_bytes(image_size: int, timing: Timing, framing_name: str) -> int:
    """Wire bytes of the upload requests when each request frame is `buf_size` bytes."""
    framing = framing_for(framing_name)
    # Overhead of a request frame with an empty data field and a worst-case (4-byte) offset; a
    # data field of n bytes adds n plus a 3-byte CBOR length for n < 65536.
    empty = len(bytes(smpimg.ImageUploadWriteRequest(off=0xFFFF_FFFF, data=b"")))
    per_frame = max(1, timing.buf_size - empty - 3)
    full, rest = divmod(image_size, per_frame)
    total = full * framing.wire_size(timing.buf_size)
    if rest:
        total += framing.wire_size(empty + 3 + rest)
    return total


def physical_bound(image_size: int, timing: Timing, framing_name: str = "raw") -> Bound:
    """The time no client can beat flashing an image of `image_size` bytes on such a hub.

    `total_s = max(wire_s, flash_s) + fixed_s` where

    - `wire_s = image_size * 10 / baud`: the image's payload bytes only, so framing and
      protocol overhead count against the client;
    - `flash_s` = erase of every sector plus program of every page the image covers (a
      pipelining client overlaps it with the wire; a stop-and-wait client adds it);
    - `fixed_s = reset_s + swap_s + boot_s`: reset, the bootloader's swap, and the boot.
    """
    if image_size < 0:
        raise ValueError(f"image size {image_size} is negative")
    wire_s = image_size * BITS_PER_BYTE / timing.baud
    flash_s = flash_time_s(image_size, timing)
    fixed_s = timing.reset_s + timing.swap_s + timing.boot_s
    framed = _framed_upload_bytes(image_size, timing, framing_name)
    return Bound(
        image_size=image_size,
        framing=framing_name,
        baud=timing.baud,
        wire_s=wire_s,
        flash_s=flash_s,
        fixed_s=fixed_s,
        total_s=max(wire_s, flash_s) + fixed_s,
        framed_wire_s=framed * BITS_PER_BYTE / timing.baud,
    )
