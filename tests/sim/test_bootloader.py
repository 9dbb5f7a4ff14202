"""MCUboot's boot step on native_sim flash images built here (no executable needed).

The trailer bytes the application writes are checked against what jig_hub.exe (Zephyr's own
img_mgmt and bootutil) was seen to write into its flash file: `EXE_*` below.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from jigd.model import DeviceModel, FirmwareVersion
from sim import bootloader as bl
from sim.harness import image_key_of
from sim.image_check import ImageKey
from sim.images import ManufacturerKeys, make_manufacturer_keys, make_signed_image

MODEL = DeviceModel(0x1086, 0x57310102)
OLD = FirmwareVersion(0x03000007)
NEW = FirmwareVersion(0x04000007)
MAGIC = bl.BOOT_MAGIC.hex()
# The last 64 bytes of a slot, as jig_hub.exe left them (Zephyr 3.4 img_mgmt, write block 1):
# slot 1 after `image state write {hash, confirm: false}`: swap_info 0x02 at -40, magic.
EXE_TEST_MARK = bytes.fromhex("ff" * 24 + "02" + "ff" * 23 + MAGIC)
# slot 1 after `image state write {hash, confirm: true}`: swap_info 0x03, image_ok 0x01 at -24.
EXE_PERM_MARK = bytes.fromhex("ff" * 24 + "03" + "ff" * 15 + "01" + "ff" * 7 + MAGIC)
TAIL = 64


@pytest.fixture(scope="module")
def keys() -> ManufacturerKeys:
    return make_manufacturer_keys(MODEL.manufacturer, 5)


@pytest.fixture(scope="module")
def key(keys: ManufacturerKeys) -> ImageKey:
    return image_key_of(keys)


def image(keys: ManufacturerKeys | None, version: FirmwareVersion, size: int = 20 * 1024) -> bytes:
    return make_signed_image(keys, MODEL, version, size, 5)


def flash_with(primary: bytes) -> bytearray:
    """An erased flash with `primary` confirmed in slot 0, as jigsim prepares a hub."""
    flash = bytearray(b"\xff" * bl.FLASH_SIZE)
    bl.write_confirmed_image(flash, primary)
    return flash


def upload(flash: bytearray, secondary: bytes, *, permanent: bool = False) -> None:
    """What the application does: the upload, then the image state write."""
    bl.write_slot_image(flash, bl.SLOT1, secondary)
    bl.set_pending(flash, permanent=permanent)


def slot(flash: bytearray, part: bl.Partition) -> bytes:
    return bytes(flash[part.offset : part.end])


def tail(flash: bytearray, part: bl.Partition) -> bytes:
    return bytes(flash[part.end - TAIL : part.end])


def image_in(flash: bytearray, part: bl.Partition) -> bytes | None:
    found = bl.read_slot_image(flash, part)
    return found.data if found is not None else None


def primary_tail(swap: bl.SwapType, swap_size: int, *, image_ok: bool) -> bytes:
    """The primary trailer MCUboot leaves after a swap: swap size at -48, swap info at -40,
    copy_done at -32, image_ok at -24, magic."""
    return (
        b"\xff" * 16
        + swap_size.to_bytes(4, "little")
        + b"\xff" * 4
        + bytes([swap])
        + b"\xff" * 7
        + b"\x01"
        + b"\xff" * 7
        + (b"\x01" if image_ok else b"\xff")
        + b"\xff" * 7
        + bl.BOOT_MAGIC
    )


def test_the_application_marks_and_confirms_as_jig_hub_exe_does(keys: ManufacturerKeys) -> None:
    flash = flash_with(image(keys, OLD))
    upload(flash, image(keys, NEW))
    assert tail(flash, bl.SLOT1) == EXE_TEST_MARK
    flash = flash_with(image(keys, OLD))
    upload(flash, image(keys, NEW), permanent=True)
    assert tail(flash, bl.SLOT1) == EXE_PERM_MARK
    # A confirmed primary image (imgtool --pad --confirm, as flash_init.bin): magic, image_ok.
    assert tail(flash, bl.SLOT0) == bytes.fromhex("ff" * 40 + "01" + "ff" * 7 + MAGIC)


def test_no_pending_image_boots_the_primary_and_changes_nothing(
    keys: ManufacturerKeys, key: ImageKey
) -> None:
    flash = flash_with(image(keys, OLD))
    before = bytes(flash)
    result = bl.boot(flash, key)
    assert result == bl.BootResult(swap=bl.SwapType.NONE, rejected=None, bootable=True)
    assert bytes(flash) == before


def test_test_swap_then_revert_when_not_confirmed(keys: ManufacturerKeys, key: ImageKey) -> None:
    old, new = image(keys, OLD, 16 * 1024), image(keys, NEW)
    flash = flash_with(old)
    upload(flash, new)
    assert bl.boot(flash, key).swap is bl.SwapType.TEST
    assert image_in(flash, bl.SLOT0) == new
    assert image_in(flash, bl.SLOT1) == old
    # The new image runs on test: magic, copy_done, no image_ok; the old one's trailer is gone.
    assert tail(flash, bl.SLOT0) == primary_tail(bl.SwapType.TEST, len(new), image_ok=False)
    assert tail(flash, bl.SLOT1) == b"\xff" * TAIL
    status = bl.SLOT0.offset + bl.SLOT0.size - bl.TRAILER_SIZE
    assert flash[status : status + 4] == b"\x01\x02\x03\xff"  # one swap step, states 1-3
    assert not bl.image_is_confirmed(flash)
    # The scratch keeps the last step's copy of the secondary slot, as MCUboot leaves it.
    scratch = slot(flash, bl.SCRATCH)
    assert scratch[: len(new)] == new
    assert scratch[5 * bl.SECTOR_SIZE :] == b"\xff" * (bl.SCRATCH.size - 5 * bl.SECTOR_SIZE)

    # Reset without a confirm: the old image comes back, confirmed (image_ok set by MCUboot).
    assert bl.boot(flash, key).swap is bl.SwapType.REVERT
    assert image_in(flash, bl.SLOT0) == old
    assert image_in(flash, bl.SLOT1) == new
    assert tail(flash, bl.SLOT0) == primary_tail(bl.SwapType.REVERT, len(new), image_ok=True)
    assert bl.image_is_confirmed(flash)
    before = bytes(flash)
    assert bl.boot(flash, key).swap is bl.SwapType.NONE  # the reverted image stays
    assert bytes(flash) == before


def test_a_confirmed_image_stays(keys: ManufacturerKeys, key: ImageKey) -> None:
    old, new = image(keys, OLD), image(keys, NEW)
    flash = flash_with(old)
    upload(flash, new)
    bl.boot(flash, key)
    bl.set_confirmed(flash)  # the application confirms itself
    assert tail(flash, bl.SLOT0) == primary_tail(bl.SwapType.TEST, len(new), image_ok=True)
    assert bl.image_is_confirmed(flash)
    before = bytes(flash)
    for _ in range(2):
        assert bl.boot(flash, key) == bl.BootResult(bl.SwapType.NONE, None, bootable=True)
    assert bytes(flash) == before
    assert image_in(flash, bl.SLOT0) == new


def test_permanent_swap_needs_no_confirm(keys: ManufacturerKeys, key: ImageKey) -> None:
    old, new = image(keys, OLD), image(keys, NEW, 24 * 1024)
    flash = flash_with(old)
    upload(flash, new, permanent=True)
    assert bl.boot(flash, key).swap is bl.SwapType.PERM
    assert image_in(flash, bl.SLOT0) == new
    assert tail(flash, bl.SLOT0) == primary_tail(bl.SwapType.PERM, len(new), image_ok=True)
    assert bl.image_is_confirmed(flash)
    assert bl.boot(flash, key).swap is bl.SwapType.NONE
    assert image_in(flash, bl.SLOT0) == new


def _tampered(keys: ManufacturerKeys) -> bytes:
    data = bytearray(image(keys, NEW))
    data[0x400] ^= 0x01  # one payload bit: the SHA256 TLV no longer matches
    return bytes(data)


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda keys: image(make_manufacturer_keys(0x1086, 77), NEW), "not signed by"),
        (lambda keys: image(None, NEW), "not signed by"),
        (_tampered, "hash does not match"),
    ],
    ids=["wrong-key", "unsigned", "tampered"],
)
def test_a_bad_secondary_image_is_erased_and_not_swapped(
    make: object, reason: str, keys: ManufacturerKeys, key: ImageKey
) -> None:
    assert callable(make)
    old = image(keys, OLD)
    flash = flash_with(old)
    upload(flash, make(keys))
    primary_before = slot(flash, bl.SLOT0)
    result = bl.boot(flash, key)
    assert result.swap is bl.SwapType.NONE
    assert result.rejected is not None
    assert reason in result.rejected
    assert result.bootable
    assert slot(flash, bl.SLOT1) == b"\xff" * bl.SLOT1.size  # the whole slot erased
    assert slot(flash, bl.SLOT0) == primary_before
    assert image_in(flash, bl.SLOT0) == old


def test_a_hub_of_another_manufacturer_refuses_the_image(keys: ManufacturerKeys) -> None:
    """The image is good, but this hub holds another manufacturer's key."""
    other = image_key_of(make_manufacturer_keys(0x10AB, 5))
    flash = flash_with(image(keys, OLD))
    upload(flash, image(keys, NEW))
    result = bl.boot(flash, other)
    assert result.swap is bl.SwapType.NONE
    assert result.rejected is not None
    assert not result.bootable  # its own primary image does not verify either
    assert result.problem is not None
    assert slot(flash, bl.SLOT1) == b"\xff" * bl.SLOT1.size


def test_a_marked_slot_without_an_image_only_loses_its_trailer(
    keys: ManufacturerKeys, key: ImageKey
) -> None:
    flash = flash_with(image(keys, OLD))
    bl.set_pending(flash, permanent=False)  # trailer written, no image uploaded
    assert bl.boot(flash, key).swap is bl.SwapType.NONE
    assert slot(flash, bl.SLOT1) == b"\xff" * bl.SLOT1.size


def test_an_empty_primary_slot_does_not_boot(key: ImageKey) -> None:
    flash = bytearray(b"\xff" * bl.FLASH_SIZE)
    result = bl.boot(flash, key)
    assert not result.bootable
    assert result.problem == "the primary slot holds no image"


def test_images_over_the_scratch_size_swap_in_several_steps(
    keys: ManufacturerKeys, key: ImageKey
) -> None:
    """200 KiB images: two steps through the 120 KiB scratch, status bytes for each."""
    old, new = image(keys, OLD, 180 * 1024), image(keys, NEW, 200 * 1024)
    flash = flash_with(old)
    upload(flash, new)
    assert bl.boot(flash, key).swap is bl.SwapType.TEST
    assert image_in(flash, bl.SLOT0) == new
    assert image_in(flash, bl.SLOT1) == old
    status = bl.SLOT0.offset + bl.SLOT0.size - bl.TRAILER_SIZE
    assert flash[status : status + 7] == b"\x01\x02\x03\x01\x02\x03\xff"
    # The last step copied the secondary slot's first 20 sectors (200 KiB = 50 = 30 + 20).
    assert slot(flash, bl.SCRATCH)[: 20 * bl.SECTOR_SIZE] == new[: 20 * bl.SECTOR_SIZE]
    assert bl.boot(flash, key).swap is bl.SwapType.REVERT
    assert image_in(flash, bl.SLOT0) == old


def test_images_that_reach_the_trailer_sector_swap_through_the_scratch_trailer(
    keys: ManufacturerKeys, key: ImageKey
) -> None:
    """The largest images (105 sectors: steps of 30, 30, 30 and 15 sectors): the first step
    holds the trailer sector and keeps its status in the scratch's trailer meanwhile."""
    old, new = image(keys, OLD, bl.MAX_IMAGE_SIZE - 1024), image(keys, NEW, bl.MAX_IMAGE_SIZE)
    flash = flash_with(old)
    upload(flash, new)
    assert bl.boot(flash, key).swap is bl.SwapType.TEST
    assert image_in(flash, bl.SLOT0) == new
    assert image_in(flash, bl.SLOT1) == old
    assert tail(flash, bl.SLOT0) == primary_tail(bl.SwapType.TEST, len(new), image_ok=False)
    assert tail(flash, bl.SLOT1) == b"\xff" * TAIL
    status = bl.SLOT0.offset + bl.SLOT0.size - bl.TRAILER_SIZE
    assert flash[status : status + 13] == b"\x01\x02\x03" * 4 + b"\xff"
    # What the last step (sectors 0-14) copied stays in the scratch; the rest is erased.
    scratch = slot(flash, bl.SCRATCH)
    assert scratch[: 15 * bl.SECTOR_SIZE] == new[: 15 * bl.SECTOR_SIZE]
    assert scratch[15 * bl.SECTOR_SIZE :] == b"\xff" * (bl.SCRATCH.size - 15 * bl.SECTOR_SIZE)
    with pytest.raises(ValueError, match="does not fit"):
        bl.write_confirmed_image(flash, image(keys, NEW, bl.MAX_IMAGE_SIZE + 1))


def test_boot_file_rewrites_the_file_only_when_the_boot_changed_it(
    tmp_path: Path, keys: ManufacturerKeys, key: ImageKey
) -> None:
    path = tmp_path / "hub.bin"
    flash = flash_with(image(keys, OLD))
    bl.write_flash_atomically(path, flash)
    inode = path.stat().st_ino
    assert bl.boot_file(path, key).swap is bl.SwapType.NONE
    assert path.stat().st_ino == inode  # untouched
    upload(flash, image(keys, NEW))
    bl.write_flash_atomically(path, flash)
    assert bl.boot_file(path, key).swap is bl.SwapType.TEST
    after = bl.read_flash(path)
    assert (
        hashlib.sha256(image_in(after, bl.SLOT0) or b"").digest()
        == hashlib.sha256(image(keys, NEW)).digest()
    )
    (tmp_path / "short.bin").write_bytes(b"\xff" * 1024)
    with pytest.raises(bl.FlashError, match="native_sim flash"):
        bl.read_flash(tmp_path / "short.bin")
