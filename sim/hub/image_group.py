"""The image group (1) of the simulated hub's SMP server: image state and upload.

Image state read lists the slots of a `HubFlash` by their MCUboot hash; state write marks the
secondary image for a test or permanent swap, or confirms the active one
(`img_mgmt_state_write`, `img_mgmt_set_next_boot_slot`); upload writes an image into the
secondary slot in chunks, taking the flash's erase and program time, and resumes by `sha`
(`img_mgmt_upload`, `img_mgmt_upload_inspect`). docs/simulator.md lists what Zephyr 3.4 does
that this follows.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import struct
from collections.abc import Callable
from typing import Final

from smp import error as smperr
from smp import image_management as smpimg

from drivers.framing import SmpHeaderFields
from sim.bootloader import IMAGE_MAGIC as _IMAGE_MAGIC_WORD
from sim.faults import FaultInjector, PowerLostError
from sim.hub.flash import HubFlash, SwapKind, UploadRecord
from sim.hub.smp_answers import error, group_error, parse, reply
from sim.image_check import FlashImage, inspect_image, zephyr_version
from sim.timing import Timing

__all__ = ["IMAGE_HASH_SIZE", "IMAGE_HEADER_SIZE", "IMAGE_MAGIC", "ImageGroup"]

_LOGGER = logging.getLogger(__name__)

_MGMT_ERR = smperr.MGMT_ERR
_IMG_ERR = smpimg.IMG_MGMT_ERR
IMAGE_HEADER_SIZE: Final = 32  # MCUboot's struct image_header
IMAGE_MAGIC: Final = struct.pack("<I", _IMAGE_MAGIC_WORD)  # its ih_magic, little-endian
IMAGE_HASH_SIZE: Final = 32  # IMAGE_HASH_LEN: a SHA256 TLV


class ImageGroup:
    """The image group's handlers over `flash`.

    `faults` may slow programming or cut the power during an upload (`PowerLostError` leaves
    `upload`). With `image_check` a completed upload is checked against its announced `sha`, as
    Zephyr built with CONFIG_IMG_ENABLE_IMAGE_CHECK: `match: true` in the last answer, or
    INVALID_HASH; without it (Zephyr 3.4's default, and `SimHub`'s) the last answer is `{off}`
    alone. `on_change` is called after every chunk programmed (`chunks_written`).
    """

    def __init__(
        self,
        flash: HubFlash,
        *,
        timing: Timing,
        faults: FaultInjector,
        image_check: bool,
        name: str,
        on_change: Callable[[], None] | None,
    ) -> None:
        self.flash = flash
        self.timing = timing
        self.faults = faults
        self.image_check = image_check
        self.chunks_written = 0
        self._name = name
        self._on_change = on_change

    @staticmethod
    def _image_state(
        image: FlashImage | None, slot: int, **flags: bool
    ) -> smpimg.ImageState | None:
        """A slot's entry: its version and MCUboot hash (the SHA256 TLV), as img_mgmt reads
        them from the image header and TLVs; None (not listed) without a hash TLV."""
        if image is None or image.tlv_hash is None:
            return None
        return smpimg.ImageState(
            slot=slot,
            version=zephyr_version(image.version),
            hash=image.tlv_hash,
            bootable=True,
            **flags,
        )

    def _image_states(self) -> list[smpimg.ImageState]:
        flash = self.flash
        states = [
            self._image_state(
                flash.primary,
                0,
                pending=False,
                confirmed=flash.primary_confirmed,
                active=True,
                permanent=False,
            ),
            self._image_state(
                flash.secondary,
                1,
                pending=flash.pending is not None,
                confirmed=flash.revert_on_boot,  # the fallback of an image on test
                active=False,
                permanent=flash.pending is SwapKind.PERMANENT,
            ),
        ]
        return [state for state in states if state is not None]

    async def state_read(self, frame: bytes, fields: SmpHeaderFields) -> bytes:
        """img_mgmt_state_read: both slots that hold an image with a hash TLV."""
        request = parse(smpimg.ImageStatesReadRequest, frame)
        return reply(
            request, smpimg.ImageStatesReadResponse, images=self._image_states(), splitStatus=0
        )

    def _slot_of(self, digest: bytes) -> int | None:
        """The slot whose image's SHA256 TLV is `digest` (slot 0 first), as
        img_mgmt_find_by_hash; None when no slot holds it."""
        for slot, image in enumerate((self.flash.primary, self.flash.secondary)):
            if image is not None and image.tlv_hash == digest:
                return slot
        return None

    def _next_boot(self) -> tuple[int, str]:
        """img_mgmt_get_next_boot_slot: the slot the next boot runs, and how ("normal",
        "test" or "revert")."""
        flash = self.flash
        if flash.revert_on_boot:
            return 1, "revert"
        if flash.pending is SwapKind.TEST:
            return 1, "test"
        if flash.pending is SwapKind.PERMANENT:
            return 1, "normal"
        return 0, "normal"

    def _set_next_boot_refusal(self, slot: int, confirm: bool) -> int | None:
        """img_mgmt_set_next_boot_slot's checks (slot 0 is the active one): the image error
        code, 0 when there is nothing to do, None when the write goes ahead."""
        if not confirm and slot == 0:
            return int(_IMG_ERR.IMAGE_SETTING_TEST_TO_ACTIVE_DENIED)
        next_slot, kind = self._next_boot()
        if slot == next_slot and confirm == (kind != "test"):
            return 0  # already so: test the slot on test, confirm the slot that boots next
        already_pending = (
            kind == "test"
            or (kind == "normal" and next_slot != 0)  # a permanent swap is already due
            or (kind == "revert" and not confirm)
        )
        return int(_IMG_ERR.IMAGE_ALREADY_PENDING) if already_pending else None

    async def state_write(self, frame: bytes, fields: SmpHeaderFields) -> bytes:
        """img_mgmt_state_write: the slot named by its image's SHA256 TLV (no hash with
        confirm: the active slot) is marked for test or permanent swap, or confirmed."""
        request = parse(smpimg.ImageStatesWriteRequest, frame)
        flash = self.flash
        confirm = bool(request.confirm)
        slot: int | None
        if not request.hash:
            if not confirm:
                return group_error(fields, _IMG_ERR.INVALID_HASH)  # test needs a hash
            slot = 0
        elif len(request.hash) != IMAGE_HASH_SIZE:
            return group_error(fields, _IMG_ERR.INVALID_HASH)
        elif (slot := self._slot_of(request.hash)) is None:
            # The image's sha256 is not its hash: only the SHA256 TLV names an image.
            return group_error(fields, _IMG_ERR.HASH_NOT_FOUND)
        if slot == 1 and not confirm and self.faults.refuses_mark_test:
            _LOGGER.info("%s: image state write for a test failed (injected)", self._name)
            return group_error(fields, _IMG_ERR.FLASH_WRITE_FAILED)
        refusal = self._set_next_boot_refusal(slot, confirm)
        if refusal:
            return group_error(fields, refusal)
        if refusal is None:
            if slot == 0:
                flash.primary_confirmed = True
                flash.revert_on_boot = False
            else:
                flash.pending = SwapKind.PERMANENT if confirm else SwapKind.TEST
        _LOGGER.debug("%s: image state written: pending %s", self._name, flash.pending)
        return reply(
            request, smpimg.ImageStatesWriteResponse, images=self._image_states(), splitStatus=0
        )

    async def upload(self, frame: bytes, fields: SmpHeaderFields) -> bytes:
        """img_mgmt_upload: offset 0 starts (or resumes) an upload into the secondary slot,
        the next chunks continue it; the last answer is `{off}` alone, as Zephyr 3.4 built
        without CONFIG_IMG_ENABLE_IMAGE_CHECK answers."""
        request = parse(smpimg.ImageUploadWriteRequest, frame)
        flash = self.flash
        if request.off == 0:
            early = self._upload_start(request, fields)
            if early is not None:
                return early
        record = flash.upload
        if record is None or request.off != record.offset:
            expected = 0 if record is None else record.offset
            return reply(request, smpimg.ImageUploadWriteResponse, off=expected)
        if record.offset + len(request.data) > record.length:
            return self._upload_refused(fields, _IMG_ERR.INVALID_IMAGE_DATA_OVERRUN)
        await self._program(record, request.data)
        if not record.complete:
            return reply(request, smpimg.ImageUploadWriteResponse, off=record.offset)
        checked: dict[str, bool] = {}
        if self.image_check:
            if record.sha is not None and hashlib.sha256(record.data).digest() != record.sha:
                return self._upload_refused(fields, _IMG_ERR.INVALID_HASH)
            checked["match"] = True
        # As Zephyr 3.4 (no CONFIG_IMG_ENABLE_IMAGE_CHECK): the announced sha only names the
        # upload for resume; a damaged image is the bootloader's to refuse.
        image = await asyncio.to_thread(inspect_image, bytes(record.data))
        flash.secondary = image
        _LOGGER.info("%s: upload of %s complete", self._name, image.version)
        return reply(request, smpimg.ImageUploadWriteResponse, off=record.offset, **checked)

    def _upload_refused(self, fields: SmpHeaderFields, rc: int) -> bytes:
        """An upload request refused by img_mgmt_upload_inspect: Zephyr forgets the upload
        in progress (img_mgmt_reset_upload) and answers the image error."""
        self.flash.upload = None
        return group_error(fields, rc)

    def _upload_start(
        self, request: smpimg.ImageUploadWriteRequest, fields: SmpHeaderFields
    ) -> bytes | None:
        """Offset 0, checked in img_mgmt_upload_inspect's order: the answer to a refused
        request, or to a resumed upload (the same `sha` as the upload in progress: its offset,
        nothing written); None when a new upload starts (write the chunk)."""
        flash = self.flash
        if request.image not in (None, 0):
            return error(fields, _MGMT_ERR.EINVAL, reason="only image 0")
        refusal = self._header_refusal(request)
        if refusal is not None:
            return self._upload_refused(fields, refusal)
        sha = request.sha or None
        record = flash.upload
        if sha is not None and record is not None and not record.complete and record.sha == sha:
            _LOGGER.info("%s: upload resumes at %d", self._name, record.offset)
            return reply(request, smpimg.ImageUploadWriteResponse, off=record.offset)
        refusal = self._slot_refusal(request)
        if refusal is not None:
            return self._upload_refused(fields, refusal)
        flash.upload = UploadRecord(sha=sha, length=request.len or 0)
        flash.secondary = None
        return None

    @staticmethod
    def _header_refusal(request: smpimg.ImageUploadWriteRequest) -> int | None:
        """What Zephyr refuses in a first chunk itself: too short to hold the MCUboot image
        header, no `len`, not MCUboot's magic, a `sha` over 32 bytes."""
        if len(request.data) < IMAGE_HEADER_SIZE:
            return int(_IMG_ERR.INVALID_IMAGE_HEADER)
        if request.len is None:
            return int(_IMG_ERR.INVALID_LENGTH)
        if request.data[: len(IMAGE_MAGIC)] != IMAGE_MAGIC:
            return int(_IMG_ERR.INVALID_IMAGE_HEADER_MAGIC)
        if request.sha is not None and len(request.sha) > IMAGE_HASH_SIZE:
            return int(_IMG_ERR.INVALID_HASH)
        return None

    def _slot_refusal(self, request: smpimg.ImageUploadWriteRequest) -> int | None:
        """Why a new upload has no slot: the secondary slot is in use, or too small."""
        flash = self.flash
        if flash.revert_on_boot or flash.pending is not None:
            # The secondary slot holds the fallback of the image on test, or the image the
            # next boot swaps in: img_mgmt_slot_in_use, so no slot to upload to.
            return int(_IMG_ERR.NO_FREE_SLOT)
        if (request.len or 0) > self.timing.slot_size:
            return int(_IMG_ERR.INVALID_IMAGE_TOO_LARGE)
        return None

    async def _program(self, record: UploadRecord, data: bytes) -> None:
        """Erase and program `data` at the record's offset, taking the flash's time."""
        cost_s = record.program_time_s(len(data), self.timing) * self.faults.flash_time_factor
        if self.faults.loses_power_in_upload(record.offset + len(data), record.length):
            await asyncio.sleep(cost_s / 2)
            raise PowerLostError(f"upload at offset {record.offset}")
        await asyncio.sleep(cost_s)
        # Programmed: from here on the bytes are in flash.
        record.programmed(data, self.timing)
        self.chunks_written += 1
        if self._on_change is not None:
            self._on_change()
