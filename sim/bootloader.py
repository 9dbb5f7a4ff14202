"""MCUboot's boot step, swap using scratch, on the flash file of a Zephyr native_sim hub.

The Zephyr reference hubs (`jig_hub.exe`, built for native_sim_64) have no bootloader: their
application marks an image for test or confirms it by writing MCUboot's image trailer
(bootutil_public.c, linked into img_mgmt), and an `os reset` just ends the process. This module
is the bootloader that runs between two starts of such a process. It reads the same trailers and
leaves the flash as MCUboot (Zephyr's default configuration: swap using scratch,
`BOOT_MAX_IMG_SECTORS` 128, `MCUBOOT_VALIDATE_PRIMARY_SLOT`) would after a complete boot:

- the swap type comes from both slots' trailers, by `boot_swap_type_multi`'s table: test,
  permanent, revert or none;
- before a test or permanent swap (and a revert) the secondary image is validated: hash and
  signature with the manufacturer's image key (imgtool's `Image.verify`, as
  `sim.image_check` does); an invalid image is erased (the whole slot, 0xFF) and nothing is
  swapped; a slot whose header is erased only loses its trailer;
- the swap exchanges the sectors that hold either image in steps of at most the scratch size,
  through the scratch area, writing the trailers, status bytes and scratch contents that
  MCUboot's `swap_scratch.c` writes; afterwards the primary trailer has magic, swap info, swap
  size and copy_done, plus image_ok for a permanent swap or a revert; the secondary trailer
  sector is erased;
- the primary image is validated last; a hub whose primary image is not valid does not boot.

What is not modelled: a swap is done in one go in memory and written back in one rename, so a
power loss in the middle of a swap cannot happen here (MCUboot resumes one from its status
bytes); encrypted images, downgrade prevention and hardware rollback counters (off in Zephyr's
default MCUboot) are not done.

Flash layout (the native_sim_64 devicetree the peers are built with): 2 MiB, 4 KiB erase
sectors, write block 1; slot0 at 0x00C000 and slot1 at 0x075000, 0x69000 bytes each, scratch at
0x0DE000 (0x1E000), storage at 0x0FC000 (0x4000).

Image trailer at the end of each slot (bootutil_priv.h, `BOOT_MAX_ALIGN` 8; offsets from the
end of the slot): magic (16 bytes) at -16, image_ok at -24, copy_done at -32, swap_info at -40
(`image << 4 | swap type`), swap_size (4 bytes, little-endian) at -48, and the swap status area
(3 bytes per swap step, 128 steps) from -432. A flag is set when it reads 0x01.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from sim.files import write_atomically
from sim.image_check import FlashImage, ImageKey, inspect_image, signature_problem

__all__ = [
    "BOOT_MAGIC",
    "FLASH_SIZE",
    "MAX_IMAGE_SIZE",
    "SCRATCH",
    "SECTOR_SIZE",
    "SLOT0",
    "SLOT1",
    "STORAGE",
    "TRAILER_SIZE",
    "BootResult",
    "Flag",
    "FlashError",
    "Magic",
    "Partition",
    "SlotTrailer",
    "SwapType",
    "boot",
    "boot_file",
    "image_is_confirmed",
    "read_flash",
    "read_slot_image",
    "read_trailer",
    "set_confirmed",
    "set_pending",
    "swap_type_of",
    "write_confirmed_image",
    "write_flash_atomically",
    "write_slot_image",
]

_LOGGER = logging.getLogger(__name__)

ERASED: Final = 0xFF
FLASH_SIZE: Final = 0x200000
SECTOR_SIZE: Final = 0x1000  # erase unit
WRITE_SIZE: Final = 1  # flash write block: MCUboot's BOOT_WRITE_SZ


@dataclass(frozen=True, slots=True)
class Partition:
    """A fixed partition of the native_sim flash."""

    name: str
    offset: int
    size: int

    @property
    def end(self) -> int:
        return self.offset + self.size


SLOT0: Final = Partition("slot0_partition", 0x00C000, 0x69000)
SLOT1: Final = Partition("slot1_partition", 0x075000, 0x69000)
SCRATCH: Final = Partition("scratch_partition", 0x0DE000, 0x1E000)
STORAGE: Final = Partition("storage_partition", 0x0FC000, 0x04000)

# boot_img_magic: the words f395c277 7fefd260 0f505235 8079b62c, little-endian.
BOOT_MAGIC: Final = bytes.fromhex("77c295f360d2ef7f3552500f2cb67980")
BOOT_MAX_ALIGN: Final = 8
MAGIC_SIZE: Final = 16
FLAG_SET: Final = 0x01
MAX_IMG_SECTORS: Final = 128  # Zephyr's CONFIG_BOOT_MAX_IMG_SECTORS default
STATUS_STATE_COUNT: Final = 3  # swap-using-scratch writes 3 status bytes per step
_TRAILER_INFO_SIZE: Final = 4 * BOOT_MAX_ALIGN + MAGIC_SIZE  # swap size/info, copy done, ok
TRAILER_SIZE: Final = MAX_IMG_SECTORS * STATUS_STATE_COUNT * WRITE_SIZE + _TRAILER_INFO_SIZE
SCRATCH_TRAILER_SIZE: Final = STATUS_STATE_COUNT * WRITE_SIZE + _TRAILER_INFO_SIZE
MAX_IMAGE_SIZE: Final = SLOT0.size - TRAILER_SIZE  # the largest image that leaves its trailer

# MCUboot image header (bootutil/image.h) and TLV area markers.
IMAGE_MAGIC: Final = 0x96F3B83D
TLV_INFO_MAGIC: Final = 0x6907
TLV_PROT_INFO_MAGIC: Final = 0x6908
IMAGE_F_NON_BOOTABLE: Final = 0x00000010
_HEADER: Final = struct.Struct("<IIHHII")  # magic, load_addr, hdr_size, protect_tlv_size, ...
_TLV_INFO: Final = struct.Struct("<HH")  # it_magic, it_tlv_tot
_SWAP_SIZE: Final = struct.Struct("<I")


class FlashError(ValueError):
    """A flash file that is not a native_sim flash of the expected size, or cannot be written."""


class SwapType(enum.IntEnum):
    """BOOT_SWAP_TYPE_*: what the bootloader does with the image pair."""

    NONE = 1
    TEST = 2
    PERM = 3
    REVERT = 4
    FAIL = 5


class Magic(enum.Enum):
    GOOD = "good"
    BAD = "bad"
    UNSET = "unset"


class Flag(enum.Enum):
    SET = "set"
    BAD = "bad"
    UNSET = "unset"


@dataclass(frozen=True, slots=True)
class SlotTrailer:
    """One slot's trailer as `boot_read_swap_state` reads it, plus the swap size."""

    magic: Magic
    swap_type: SwapType  # from swap_info; NONE when erased or out of range
    image_num: int
    copy_done: Flag
    image_ok: Flag
    swap_size: int | None  # None when erased


@dataclass(frozen=True, slots=True)
class BootResult:
    """What one boot step did."""

    swap: SwapType  # the swap performed; NONE when nothing was swapped
    rejected: str | None  # why the secondary image was erased, if it was
    bootable: bool  # the primary image is valid: the application starts
    problem: str | None = None  # why the primary image does not boot


# ---- offsets -----------------------------------------------------------------------------------


def _magic_off(size: int) -> int:
    return size - MAGIC_SIZE


def _image_ok_off(size: int) -> int:
    return (_magic_off(size) - BOOT_MAX_ALIGN) & ~(BOOT_MAX_ALIGN - 1)


def _copy_done_off(size: int) -> int:
    return _image_ok_off(size) - BOOT_MAX_ALIGN


def _swap_info_off(size: int) -> int:
    return _copy_done_off(size) - BOOT_MAX_ALIGN


def _swap_size_off(size: int) -> int:
    return _swap_info_off(size) - BOOT_MAX_ALIGN


def _status_off(part: Partition) -> int:
    """Start of the swap status bytes (`boot_status_off`); the scratch keeps one step's worth."""
    trailer = SCRATCH_TRAILER_SIZE if part is SCRATCH else TRAILER_SIZE
    return part.size - trailer


def _first_trailer_sector(part: Partition) -> int:
    return (part.size - TRAILER_SIZE) // SECTOR_SIZE


# ---- raw flash access --------------------------------------------------------------------------


def _view(flash: bytearray, part: Partition) -> memoryview:
    return memoryview(flash)[part.offset : part.end]


def _erase(flash: bytearray, part: Partition, off: int, size: int) -> None:
    if off % SECTOR_SIZE or size % SECTOR_SIZE or off < 0 or off + size > part.size:
        raise ValueError(f"{part.name}: erase of {size:#x} at {off:#x} is not whole sectors")
    start = part.offset + off
    flash[start : start + size] = bytes([ERASED]) * size


def _program(flash: bytearray, part: Partition, off: int, data: bytes | memoryview) -> None:
    """Program `data` at `off`: NOR flash only clears bits, so the result is old AND new."""
    if off < 0 or off + len(data) > part.size:
        raise ValueError(f"{part.name}: write of {len(data)} bytes at {off:#x} is outside")
    start = part.offset + off
    old = int.from_bytes(flash[start : start + len(data)], "big")
    new = int.from_bytes(data, "big")
    flash[start : start + len(data)] = (old & new).to_bytes(len(data), "big")


def _erase_trailer_sectors(flash: bytearray, part: Partition) -> None:
    """`swap_erase_trailer_sectors`: every sector that holds part of the trailer."""
    first = _first_trailer_sector(part) * SECTOR_SIZE
    _erase(flash, part, first, part.size - first)


# ---- trailers ----------------------------------------------------------------------------------


def _flag(value: int) -> Flag:
    if value == ERASED:
        return Flag.UNSET
    return Flag.SET if value == FLAG_SET else Flag.BAD


def read_trailer(flash: bytearray | bytes, part: Partition) -> SlotTrailer:
    """The trailer of `part`, read as MCUboot's `boot_read_swap_state` reads it."""
    slot = memoryview(flash)[part.offset : part.end]
    size = part.size
    magic_bytes = bytes(slot[_magic_off(size) :])
    if magic_bytes == bytes([ERASED]) * MAGIC_SIZE:
        magic = Magic.UNSET
    else:
        magic = Magic.GOOD if magic_bytes == BOOT_MAGIC else Magic.BAD
    swap_info = slot[_swap_info_off(size)]
    swap_type, image_num = SwapType.NONE, 0
    # An erased swap_info, or a type beyond REVERT, reads as NONE (0 cannot be written by
    # MCUboot; it is read as NONE here too).
    if swap_info != ERASED and SwapType.TEST <= swap_info & 0x0F <= SwapType.REVERT:
        swap_type, image_num = SwapType(swap_info & 0x0F), swap_info >> 4
    raw_size = bytes(slot[_swap_size_off(size) : _swap_size_off(size) + _SWAP_SIZE.size])
    swap_size = None if raw_size == b"\xff" * 4 else int(_SWAP_SIZE.unpack(raw_size)[0])
    return SlotTrailer(
        magic=magic,
        swap_type=swap_type,
        image_num=image_num,
        copy_done=_flag(slot[_copy_done_off(size)]),
        image_ok=_flag(slot[_image_ok_off(size)]),
        swap_size=swap_size,
    )


def swap_type_of(primary: SlotTrailer, secondary: SlotTrailer) -> SwapType:
    """`boot_swap_type_multi`: the first matching row of MCUboot's swap table, else NONE."""
    if secondary.magic is Magic.GOOD and secondary.image_ok is Flag.UNSET:
        return SwapType.TEST
    if secondary.magic is Magic.GOOD and secondary.image_ok is Flag.SET:
        return SwapType.PERM
    if (
        primary.magic is Magic.GOOD
        and secondary.magic is Magic.UNSET
        and primary.image_ok is Flag.UNSET
        and primary.copy_done is Flag.SET
    ):
        return SwapType.REVERT
    return SwapType.NONE


def image_is_confirmed(flash: bytearray | bytes) -> bool:
    """The primary image stays at the next boot: its trailer does not call for a revert."""
    primary = read_trailer(flash, SLOT0)
    return not (
        primary.magic is Magic.GOOD
        and primary.image_ok is Flag.UNSET
        and primary.copy_done is Flag.SET
    )


def _write_flag(flash: bytearray, part: Partition, off: int) -> None:
    _program(flash, part, off, bytes([FLAG_SET]))


def _write_magic(flash: bytearray, part: Partition) -> None:
    _program(flash, part, _magic_off(part.size), BOOT_MAGIC)


def _write_image_ok(flash: bytearray, part: Partition) -> None:
    _write_flag(flash, part, _image_ok_off(part.size))


def _status_init(flash: bytearray, part: Partition, swap: SwapType, swap_size: int) -> None:
    """`swap_status_init`: swap info, image_ok copied from the secondary, swap size, magic."""
    if swap is not SwapType.NONE:
        _program(flash, part, _swap_info_off(part.size), bytes([swap]))  # image 0
    if read_trailer(flash, SLOT1).image_ok is Flag.SET:
        _write_image_ok(flash, part)
    _program(flash, part, _swap_size_off(part.size), _SWAP_SIZE.pack(swap_size))
    _write_magic(flash, part)


def _write_status(flash: bytearray, part: Partition, step: int, state: int) -> None:
    """`boot_write_status`: byte `state` (1-3) of swap step `step` in `part`'s status area."""
    off = _status_off(part) + (step * STATUS_STATE_COUNT + state - 1) * WRITE_SIZE
    _program(flash, part, off, bytes([state]))


# ---- images ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Header:
    magic: int
    hdr_size: int
    protect_tlv_size: int
    img_size: int
    flags: int


def _header(slot: memoryview) -> _Header:
    magic, _load, hdr_size, protect, img_size, flags = _HEADER.unpack_from(slot)
    return _Header(magic, hdr_size, protect, img_size, flags)


def _header_erased(slot: memoryview) -> bool:
    return bytes(slot[:4]) == b"\xff" * 4


def _header_valid(header: _Header, part: Partition) -> bool:
    """`boot_is_header_valid`: MCUboot's magic, and header plus body inside the slot."""
    return header.magic == IMAGE_MAGIC and header.hdr_size + header.img_size < part.size


def _image_size(slot: memoryview, header: _Header) -> int | None:
    """`boot_read_image_size`: header, body, protected and unprotected TLVs; None if the TLV
    area is not where the header says."""
    off = header.hdr_size + header.img_size
    if off + _TLV_INFO.size > len(slot):
        return None
    magic, total = (int(v) for v in _TLV_INFO.unpack_from(slot, off))
    protect = header.protect_tlv_size
    if magic == TLV_PROT_INFO_MAGIC:
        if protect != total or off + total + _TLV_INFO.size > len(slot):
            return None
        magic, total = (int(v) for v in _TLV_INFO.unpack_from(slot, off + protect))
    elif protect != 0:
        return None
    if magic != TLV_INFO_MAGIC or off + protect + total > len(slot):
        return None
    return off + protect + total


def read_slot_image(flash: bytearray | bytes, part: Partition) -> FlashImage | None:
    """The MCUboot image in `part` (version, TLV hash, sha256 of its bytes), or None when the
    slot holds no image with a valid header and TLV area."""
    slot = memoryview(flash)[part.offset : part.end]
    header = _header(slot)
    if not _header_valid(header, part):
        return None
    size = _image_size(slot, header)
    if size is None:
        return None
    return inspect_image(bytes(slot[:size]))


def _validation_problem(flash: bytearray, part: Partition, key: ImageKey) -> str | None:
    """Why `boot_image_check` refuses the image in `part` (its header is not erased)."""
    slot = _view(flash, part)
    header = _header(slot)
    if not _header_valid(header, part):
        return "no valid MCUboot image header"
    size = _image_size(slot, header)
    if size is None:
        return "no TLV area where the header says"
    return signature_problem(bytes(slot[:size]), key)


# ---- the boot step -----------------------------------------------------------------------------


def _validated_swap_type(flash: bytearray, key: ImageKey) -> tuple[SwapType, str | None]:
    """`boot_validated_swap_type`: the table's swap type, NONE if the secondary image does not
    validate (the slot is then erased, or only its trailer when the header is erased)."""
    swap = swap_type_of(read_trailer(flash, SLOT0), read_trailer(flash, SLOT1))
    if swap not in (SwapType.TEST, SwapType.PERM, SwapType.REVERT):
        return swap, None
    slot = _view(flash, SLOT1)
    if _header_erased(slot) or _header(slot).flags & IMAGE_F_NON_BOOTABLE:
        _erase_trailer_sectors(flash, SLOT1)
        return SwapType.NONE, None
    problem = _validation_problem(flash, SLOT1, key)
    if problem is not None:
        _erase(flash, SLOT1, 0, SLOT1.size)
        return SwapType.NONE, problem
    return swap, None


def _copy_size(flash: bytearray) -> int:
    """The larger of the two images' sizes (a slot without an image counts 0)."""
    sizes = [0]
    for part in (SLOT0, SLOT1):
        slot = _view(flash, part)
        header = _header(slot)
        if header.magic == IMAGE_MAGIC:
            sizes.append(_image_size(slot, header) or 0)
    return max(sizes)


def _swap_steps(copy_size: int) -> Iterator[tuple[int, int]]:
    """(first sector, sector count) of each step, from the end of the images backwards, each at
    most the scratch size (`find_last_sector_idx`, `boot_copy_sz`)."""
    last = -(-copy_size // SECTOR_SIZE) - 1
    per_step = SCRATCH.size // SECTOR_SIZE
    while last >= 0:
        first = max(last - per_step + 1, 0)
        yield first, last - first + 1
        last = first - 1


def _swap_step(
    flash: bytearray, *, step: int, first: int, sectors: int, swap: SwapType, swap_size: int
) -> None:
    """`boot_swap_sectors`: secondary -> scratch, primary -> secondary, scratch -> primary,
    with the status bytes and trailers written where MCUboot writes them."""
    img_off, size = first * SECTOR_SIZE, sectors * SECTOR_SIZE
    trailer_sector_off = _first_trailer_sector(SLOT0) * SECTOR_SIZE
    copy = size
    if img_off + size > trailer_sector_off:  # this step holds the trailer: copy short of it
        copy = min(SLOT0.size - img_off - TRAILER_SIZE, _status_off(SCRATCH))
    use_scratch = step == 0 and copy != size
    status_part = SCRATCH if use_scratch else SLOT0

    # State 0: secondary -> scratch.
    _erase(flash, SCRATCH, 0, SCRATCH.size)
    if step == 0:
        _status_init(flash, SCRATCH, swap, swap_size)
        if not use_scratch:
            _erase_trailer_sectors(flash, SLOT0)
            _status_init(flash, SLOT0, swap, swap_size)
            _erase(flash, SCRATCH, 0, SCRATCH.size)
    _program(flash, SCRATCH, 0, _view(flash, SLOT1)[img_off : img_off + copy].tobytes())
    _write_status(flash, status_part, step, 1)

    # State 1: primary -> secondary.
    erase = size
    if step == 0:
        _erase_trailer_sectors(flash, SLOT1)
        if use_scratch:
            erase = trailer_sector_off - img_off
    if erase > 0:
        _erase(flash, SLOT1, img_off, erase)
    _program(flash, SLOT1, img_off, _view(flash, SLOT0)[img_off : img_off + copy].tobytes())
    _write_status(flash, status_part, step, 2)

    # State 2: scratch -> primary.
    erase = size
    if use_scratch:
        _erase_trailer_sectors(flash, SLOT0)
        erase = trailer_sector_off - img_off
    if erase > 0:
        _erase(flash, SLOT0, img_off, erase)
    _program(flash, SLOT0, img_off, _view(flash, SCRATCH)[:copy].tobytes())
    if use_scratch:
        status = _view(flash, SCRATCH)[_status_off(SCRATCH) :][: STATUS_STATE_COUNT - 1]
        _program(flash, SLOT0, img_off + copy, status.tobytes())
        scratch = read_trailer(flash, SCRATCH)
        if scratch.image_ok is Flag.SET:
            _write_image_ok(flash, SLOT0)
        if scratch.swap_type is not SwapType.NONE:
            _program(flash, SLOT0, _swap_info_off(SLOT0.size), bytes([scratch.swap_type]))
        _program(flash, SLOT0, _swap_size_off(SLOT0.size), _SWAP_SIZE.pack(swap_size))
        _write_magic(flash, SLOT0)
    _write_status(flash, SLOT0, step, 3)
    if use_scratch:
        _erase(flash, SCRATCH, 0, SCRATCH.size)


def _perform_update(flash: bytearray, swap: SwapType) -> None:
    """`boot_perform_update`: swap the images, then image_ok (permanent swap, revert) and
    copy_done in the primary trailer."""
    swap_size = _copy_size(flash)
    for step, (first, sectors) in enumerate(_swap_steps(swap_size)):
        _swap_step(flash, step=step, first=first, sectors=sectors, swap=swap, swap_size=swap_size)
    if swap in (SwapType.PERM, SwapType.REVERT) and (
        read_trailer(flash, SLOT0).image_ok is Flag.UNSET
    ):
        _write_image_ok(flash, SLOT0)
    _write_flag(flash, SLOT0, _copy_done_off(SLOT0.size))


def boot(flash: bytearray, key: ImageKey) -> BootResult:
    """Run the boot step on a whole flash image in memory (changed in place).

    `key` is the manufacturer's image verification key (an imgtool public key).
    """
    if len(flash) != FLASH_SIZE:
        raise FlashError(f"a native_sim flash has {FLASH_SIZE} bytes, not {len(flash)}")
    swap, rejected = _validated_swap_type(flash, key)
    if swap in (SwapType.TEST, SwapType.PERM, SwapType.REVERT):
        _perform_update(flash, swap)
    primary = _view(flash, SLOT0)
    if _header_erased(primary):
        problem: str | None = "the primary slot holds no image"
    else:
        problem = _validation_problem(flash, SLOT0, key)
    return BootResult(swap=swap, rejected=rejected, bootable=problem is None, problem=problem)


# ---- flash files -------------------------------------------------------------------------------


def read_flash(path: Path) -> bytearray:
    """A native_sim flash file's bytes; FlashError if it is not one."""
    try:
        data = bytearray(path.read_bytes())
    except OSError as exc:
        raise FlashError(f"{path}: cannot read it: {exc.strerror}") from exc
    if len(data) != FLASH_SIZE:
        raise FlashError(f"{path}: {len(data)} bytes; a native_sim flash file has {FLASH_SIZE}")
    return data


def write_flash_atomically(path: Path, flash: bytearray | bytes) -> None:
    """Replace `path` by `flash` through a temporary file renamed over it."""
    try:
        write_atomically(path, bytes(flash))
    except OSError as exc:
        raise FlashError(f"{path}: cannot write it: {exc.strerror}") from exc


def boot_file(path: Path, key: ImageKey) -> BootResult:
    """Run the boot step on a flash file; it is rewritten (atomically) only if it changed.

    Blocking (disk, imgtool): call it in a worker thread from the event loop.
    """
    flash = read_flash(path)
    before = hashlib.sha256(flash).digest()
    result = boot(flash, key)
    if hashlib.sha256(flash).digest() != before:
        write_flash_atomically(path, flash)
    _LOGGER.debug(
        "%s: boot step: swap %s, rejected %s, bootable %s",
        path,
        result.swap.name,
        result.rejected,
        result.bootable,
    )
    return result


def write_confirmed_image(flash: bytearray, image: bytes) -> None:
    """Put `image` in slot 0 as a confirmed image, as `imgtool sign --pad --confirm` would
    leave it: the slot erased, the image at its start, trailer magic and image_ok set."""
    if len(image) > MAX_IMAGE_SIZE:
        raise ValueError(
            f"an image of {len(image)} bytes does not fit slot 0 ({MAX_IMAGE_SIZE} bytes at most "
            "beside MCUboot's trailer)"
        )
    _erase(flash, SLOT0, 0, SLOT0.size)
    _program(flash, SLOT0, 0, image)
    _write_image_ok(flash, SLOT0)
    _write_magic(flash, SLOT0)


# ---- the application's side (img_mgmt), for tests and tools -------------------------------------


def write_slot_image(flash: bytearray, part: Partition, image: bytes) -> None:
    """Erase `part` and program `image` at its start, as a completed upload leaves a slot."""
    if len(image) > MAX_IMAGE_SIZE:
        raise ValueError(f"an image of {len(image)} bytes does not fit {part.name}")
    _erase(flash, part, 0, part.size)
    _program(flash, part, 0, image)


def set_pending(flash: bytearray, *, permanent: bool) -> None:
    """Mark the secondary image for a test (or permanent) swap as the application does
    (`boot_set_next` on the secondary slot): magic, image_ok when permanent, swap info. A slot
    already marked is left alone; a corrupt trailer gets the slot erased (FlashError)."""
    trailer = read_trailer(flash, SLOT1)
    if trailer.magic is Magic.GOOD:
        return
    if trailer.magic is Magic.BAD:
        _erase(flash, SLOT1, 0, SLOT1.size)
        raise FlashError("the secondary slot's trailer is corrupt: the slot was erased")
    _write_magic(flash, SLOT1)
    if permanent:
        _write_image_ok(flash, SLOT1)
    swap = SwapType.PERM if permanent else SwapType.TEST
    _program(flash, SLOT1, _swap_info_off(SLOT1.size), bytes([swap]))


def set_confirmed(flash: bytearray) -> None:
    """Confirm the running (primary) image as the application does (`boot_set_next` on the
    active slot): image_ok, when the trailer has magic and image_ok is not set yet."""
    trailer = read_trailer(flash, SLOT0)
    if trailer.magic is Magic.GOOD and trailer.image_ok is Flag.UNSET:
        _write_image_ok(flash, SLOT0)
