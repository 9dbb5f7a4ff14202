"""The timing model of a simulated hub, per Device Model, and the physical bound of a flash.

A hub's serial link moves `baud / 10` bytes per second in each direction (8N1: ten bit times per
byte); its USB link (`UsbLink`) is a full-speed bus, 19 bulk packets of 64 bytes per 1 ms frame
shared by both directions. Its flash erases a sector in `sector_erase_s` and programs a page in
`page_program_s`, and a reset (after the delay between its answer and its effect), an image swap
and a boot each take a fixed time. Benchmarks
compare a flash against `physical_bound`, the time no client can beat on that hub.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from drivers.framing import framing_for, upload_frame_sizes
from drivers.usb_bulk import FULL_SPEED_MAX_PACKET, packet_count

__all__ = [
    "BITS_PER_BYTE",
    "USB_FULL_SPEED",
    "Bound",
    "Timing",
    "UsbLink",
    "flash_time_s",
    "physical_bound",
]

BITS_PER_BYTE: Final = 10  # 8N1: start bit, 8 data bits, stop bit


@dataclass(frozen=True, slots=True)
class UsbLink:
    """The bus time of a USB link carrying bulk transfers.

    The default is USB 2.0 full speed (12 Mbit/s) with 64-byte bulk packets: at most 19 such
    transactions fit in a 1 ms frame (USB 2.0 section 5.8.4, table 5-9), 1,216,000 payload bytes
    per second, shared by both directions (the bus is half duplex). Every packet takes a
    transaction slot whatever its length, so a short packet or a ZLP costs as much bus time as
    a full one. Each slot is modelled as having its bus to itself, as behind a multi-TT hub.
    """

    max_packet: int = FULL_SPEED_MAX_PACKET
    packets_per_frame: int = 19
    frame_s: float = 0.001

    @property
    def packet_s(self) -> float:
        """Bus time of one bulk transaction."""
        return self.frame_s / self.packets_per_frame

    @property
    def bytes_per_s(self) -> float:
        """Payload rate with every packet full."""
        return self.max_packet * self.packets_per_frame / self.frame_s

    def transfer_s(self, size: int) -> float:
        """Bus time of one transfer of `size` bytes, its short packet or ZLP included."""
        return packet_count(size, self.max_packet) * self.packet_s


USB_FULL_SPEED: Final = UsbLink()
TRANSPORTS: Final = ("serial", "usb")


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
    reset_delay_s: float = Field(
        default=0.25,
        ge=0,
        description="os reset answered to the reset taking effect; the hub keeps answering as "
        "the old firmware meanwhile (Zephyr's CONFIG_MCUMGR_GRP_OS_RESET_MS)",
    )
    mcumgr_params: bool = Field(
        default=True,
        description="os mcumgr_params (0/6) is answered; False: ENOTSUP, as Zephyr 3.4 without "
        "CONFIG_MCUMGR_GRP_OS_MCUMGR_PARAMS",
    )
    rx_buf_count: int = Field(
        default=2,
        ge=1,
        description="console framing: 128-byte line buffers (CONFIG_UART_MCUMGR_RX_BUF_COUNT)",
    )
    rx_bytes_per_tick: float | None = Field(
        default=None,
        ge=0,
        description="console framing: bytes the UART reads per 1 ms tick; None: baud/10/1000; "
        "0: unpaced, everything available at once (a fast adapter)",
    )
    upload_state: Literal["ram", "flash"] = Field(
        default="ram",
        description="where the unfinished upload's offset, sha and length are kept: 'ram' "
        "(Zephyr 3.4: lost at reset and power loss) or 'flash' (resumable after them)",
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
    so that a client's framing overhead can be told from its idle time. On a USB link `baud` is
    None, `framing` is "usb" and `framed_wire_s` counts bus transactions (short packets and ZLPs
    take a whole one).
    """

    image_size: int
    framing: str
    baud: int | None
    wire_s: float
    flash_s: float
    fixed_s: float
    total_s: float
    framed_wire_s: float
    transport: str = "serial"
    bytes_per_s: float = 0.0  # payload rate of the link

    def as_dict(self) -> dict[str, object]:
        return {
            "image_size": self.image_size,
            "transport": self.transport,
            "framing": self.framing,
            "baud": self.baud,
            "bytes_per_s": self.bytes_per_s,
            "wire_s": self.wire_s,
            "flash_s": self.flash_s,
            "fixed_s": self.fixed_s,
            "total_s": self.total_s,
            "framed_wire_s": self.framed_wire_s,
        }


def physical_bound(
    image_size: int,
    timing: Timing,
    framing_name: str = "raw",
    *,
    transport: str = "serial",
    usb: UsbLink = USB_FULL_SPEED,
) -> Bound:
    """The time no client can beat flashing an image of `image_size` bytes on such a hub.

    `total_s = max(wire_s, flash_s) + fixed_s` where

    - `wire_s`: the image's payload bytes only, so framing and protocol overhead count against
      the client: `image_size * 10 / baud` on a serial link, `image_size / usb.bytes_per_s` on
      a USB link (every packet full: 1,216,000 bytes/s at full speed);
    - `flash_s` = erase of every sector plus program of every page the image covers (a
      pipelining client overlaps it with the wire; a stop-and-wait client adds it);
    - `fixed_s = reset_delay_s + reset_s + swap_s + boot_s`: the delay before the answered
      reset takes effect, the reset, the bootloader's swap, and the boot.

    `transport` is "serial" (with `framing_name` "raw" or "console") or "usb" (raw SMP frames
    in bulk transfers; `framing_name` is ignored).
    """
    if image_size < 0:
        raise ValueError(f"image size {image_size} is negative")
    if transport not in TRANSPORTS:
        raise ValueError(f"unknown transport {transport!r}; use 'serial' or 'usb'")
    flash_s = flash_time_s(image_size, timing)
    fixed_s = timing.reset_delay_s + timing.reset_s + timing.swap_s + timing.boot_s
    frames = upload_frame_sizes(image_size, timing.buf_size)
    if transport == "usb":
        wire_s = image_size / usb.bytes_per_s
        framed_wire_s = sum(usb.transfer_s(size) for size in frames)
        framing_name, baud, rate = "usb", None, usb.bytes_per_s
    else:
        framing = framing_for(framing_name)
        wire_s = image_size * BITS_PER_BYTE / timing.baud
        framed = sum(framing.wire_size(size) for size in frames)
        framed_wire_s = framed * BITS_PER_BYTE / timing.baud
        baud, rate = timing.baud, timing.bytes_per_s
    return Bound(
        image_size=image_size,
        framing=framing_name,
        baud=baud,
        wire_s=wire_s,
        flash_s=flash_s,
        fixed_s=fixed_s,
        total_s=max(wire_s, flash_s) + fixed_s,
        framed_wire_s=framed_wire_s,
        transport=transport,
        bytes_per_s=rate,
    )
