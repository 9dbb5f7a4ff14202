"""The simulated hub's SMP server and bootloader, driven with raw frames over its real pty."""

from __future__ import annotations

import hashlib
import struct
import time
from pathlib import Path

import cbor2
import pytest
from smp import image_management as smpimg
from smp import os_management as smpos

from drivers import jig_group
from jigd.model import FirmwareVersion
from sim.harness import HubSpec, running_hub
from sim.hub import HubState
from sim.images import make_manufacturer_keys, make_signed_image
from sim.timing import Timing
from tests.sim.helpers import (
    FAST,
    MGMT_EACCESSDENIED,
    MGMT_EINVAL,
    MGMT_ENOTSUP,
    image_hash,
    reset,
    state,
    unlock,
    upload,
)
from tests.sim.wire import Wire, body

NEW = FirmwareVersion.parse("04000007")
IMG_HASH_NOT_FOUND = 8
IMG_INVALID_HASH = 24
IMG_TOO_LARGE = 30


async def test_locked_hub_answers_echo_params_state_and_identity(tmp_path: Path) -> None:
    async with running_hub(tmp_path, timing=FAST) as handle:
        with Wire(handle.path) as wire:
            assert body(await wire.request(smpos.EchoWriteRequest(d="hello"))) == {"r": "hello"}
            assert body(await wire.request(smpos.MCUMgrParametersReadRequest())) == {
                "buf_size": 2048,
                "buf_count": 4,
            }
            images = await state(wire)
            truth = handle.hub.truth()
            assert images == [
                {
                    "slot": 0,
                    "version": "1.0.0",
                    "hash": bytes.fromhex(str(truth["active_image_hash"])),
                    "bootable": True,
                    "pending": False,
                    "confirmed": True,
                    "active": True,
                    "permanent": False,
                }
            ]
            identity = jig_group.IdentityReadResponse.loads(
                await wire.request(jig_group.IdentityReadRequest())
            )
            assert identity.guid == handle.spec.guid.to_bytes()
            assert (identity.manufacturer, identity.model) == (0x1086, 0x57310102)
            assert identity.firmware_version == 0x01000000
            assert identity.locked is True


async def test_responses_carry_the_request_sequence(tmp_path: Path) -> None:
    async with running_hub(tmp_path, timing=FAST) as handle:
        with Wire(handle.path) as wire:
            request = smpos.EchoWriteRequest(d="x", sequence=200)
            frame = await wire.request(request)
            assert frame[6] == 200
            assert frame[0] & 0b111 == 3  # WRITE_RSP


@pytest.mark.parametrize(
    "request_",
    [
        smpimg.ImageUploadWriteRequest(off=0, data=b"x", len=1, sha=bytes(32), image=0),
        smpimg.ImageStatesWriteRequest(hash=bytes(32), confirm=False),
        smpos.ResetWriteRequest(),
    ],
    ids=["upload", "state-write", "reset"],
)
async def test_locked_hub_refuses_with_access_denied(
    tmp_path: Path, request_: smpimg.ImageUploadWriteRequest
) -> None:
    async with running_hub(tmp_path, timing=FAST) as handle:
        with Wire(handle.path) as wire:
            assert body(await wire.request(request_))["rc"] == MGMT_EACCESSDENIED
            assert handle.hub.state is HubState.RUNNING  # the reset did not happen


async def test_unlock_with_the_right_mac_then_lock_again(tmp_path: Path) -> None:
    async with running_hub(tmp_path, timing=FAST) as handle:
        with Wire(handle.path) as wire:
            assert await unlock(wire, handle) == {}
            assert handle.hub.truth()["locked"] is False
            assert body(await wire.request(smpos.ResetWriteRequest())) == {}
            await handle.hub.wait_for_state(HubState.RUNNING, timeout_s=5.0)
            # Unlocked is a setting: it survives reset and power loss.
            handle.hub.power_off()
            handle.hub.power_on()
            await handle.hub.wait_for_state(HubState.RUNNING, timeout_s=5.0)
            identity = body(await wire.request(jig_group.IdentityReadRequest()))
            assert identity["locked"] is False
            assert body(await wire.request(jig_group.LockWriteRequest())) == {}
            assert body(await wire.request(smpos.ResetWriteRequest()))["rc"] == (MGMT_EACCESSDENIED)


async def test_wrong_mac_is_bad_mac_and_a_nonce_is_good_once(tmp_path: Path) -> None:
    async with running_hub(tmp_path, timing=FAST) as handle:
        with Wire(handle.path) as wire:
            await wire.request(jig_group.UnlockChallengeRequest())
            wrong = body(await wire.request(jig_group.UnlockWriteRequest(mac=bytes(32))))
            assert wrong == {"err": {"group": 64, "rc": jig_group.JigMgmtErr.BAD_MAC}}
            again = body(await wire.request(jig_group.UnlockWriteRequest(mac=bytes(32))))
            assert again == {"err": {"group": 64, "rc": jig_group.JigMgmtErr.NO_CHALLENGE}}
            assert handle.hub.truth()["locked"] is True


async def test_a_master_key_of_another_seed_does_not_unlock(tmp_path: Path) -> None:
    async with running_hub(tmp_path, timing=FAST) as handle:
        with Wire(handle.path) as wire:
            nonce = body(await wire.request(jig_group.UnlockChallengeRequest()))["nonce"]
            other = make_manufacturer_keys(0x1086, 99).master_key
            guid = handle.spec.guid.to_bytes()
            mac = jig_group.unlock_mac(jig_group.device_key(other, guid), nonce, guid)
            answer = body(await wire.request(jig_group.UnlockWriteRequest(mac=mac)))
            assert answer["err"]["rc"] == jig_group.JigMgmtErr.BAD_MAC


async def test_unknown_commands_are_not_supported(tmp_path: Path) -> None:
    async with running_hub(tmp_path, timing=FAST) as handle:
        with Wire(handle.path) as wire:
            payload = cbor2.dumps({})
            for group, command, op in [(0, 99, 0), (64, 9, 0), (99, 0, 2), (0, 0, 0)]:
                head = struct.pack("!BBHHBB", 0x08 | op, 0, len(payload), group, 7, command)
                frame = await wire.request(head + payload)
                assert body(frame) == {"rc": MGMT_ENOTSUP} or body(frame)["rc"] == MGMT_ENOTSUP
                assert struct.unpack("!BBHHBB", frame[:8])[3:] == (group, 7, command)


async def test_malformed_requests_are_einval_and_the_hub_keeps_going(tmp_path: Path) -> None:
    async with running_hub(tmp_path, timing=FAST, spec=HubSpec(locked=False)) as handle:
        with Wire(handle.path) as wire:
            for group, command, op, payload in [
                (0, 0, 2, {"d": 5}),  # echo with a number
                (1, 1, 2, {"data": b"x"}),  # upload without off
                (64, 1, 2, {"mac": 5}),
                (1, 0, 2, {"confirm": False, "extra": 1}),
            ]:
                encoded = cbor2.dumps(payload)
                head = struct.pack("!BBHHBB", 0x08 | op, 0, len(encoded), group, 1, command)
                assert body(await wire.request(head + encoded))["rc"] == MGMT_EINVAL
            assert body(await wire.request(smpos.EchoWriteRequest(d="ok"))) == {"r": "ok"}


async def test_upload_test_reset_boots_the_new_image_and_confirm_keeps_it(tmp_path: Path) -> None:
    async with running_hub(tmp_path, timing=FAST) as handle:
        image = handle.make_image(NEW, 16 * 1024)
        sha = hashlib.sha256(image).digest()
        digest = image_hash(image)
        with Wire(handle.path) as wire:
            await unlock(wire, handle)
            assert await upload(wire, image) == {"off": len(image)}  # no `match` in Zephyr 3.4
            images = await state(wire)
            assert images[1]["hash"] == digest
            assert images[1]["version"] == "4.0.0.7"
            assert images[1]["pending"] is False
            written = body(
                await wire.request(smpimg.ImageStatesWriteRequest(hash=digest, confirm=False))
            )
            assert written["images"][1]["pending"] is True
            assert handle.hub.truth()["pending"] is True
            await reset(wire, handle)
            truth = handle.hub.truth()
            assert truth["active_version"] == "04000007"
            assert truth["active_sha256"] == sha.hex()
            assert truth["confirmed"] is False
            identity = body(await wire.request(jig_group.IdentityReadRequest()))
            assert identity["firmware_version"] == 0x04000007
            images = await state(wire)
            assert (images[0]["hash"], images[0]["confirmed"], images[0]["active"]) == (
                digest,
                False,
                True,
            )
            assert images[1]["confirmed"] is True  # the old image is the fallback
            confirmed = body(await wire.request(smpimg.ImageStatesWriteRequest(confirm=True)))
            assert confirmed["images"][0]["confirmed"] is True
            await reset(wire, handle)
            assert handle.hub.truth()["active_sha256"] == sha.hex()
            assert handle.hub.truth()["confirmed"] is True
            assert handle.hub.swaps == 1


async def test_an_unconfirmed_image_reverts_at_the_next_reset(tmp_path: Path) -> None:
    async with running_hub(tmp_path, timing=FAST) as handle:
        old_sha = handle.hub.truth()["active_sha256"]
        image = handle.make_image(NEW)
        sha = hashlib.sha256(image).digest()
        with Wire(handle.path) as wire:
            await unlock(wire, handle)
            await upload(wire, image)
            await wire.request(
                smpimg.ImageStatesWriteRequest(hash=image_hash(image), confirm=False)
            )
            await reset(wire, handle)
            assert handle.hub.truth()["active_sha256"] == sha.hex()
            # While on test, the secondary slot holds the fallback: no upload over it.
            refused = body(await wire.request(_first_chunk(image)))
            assert refused["err"] == {"group": 1, "rc": smpimg.IMG_MGMT_ERR.NO_FREE_SLOT}
            await reset(wire, handle)
            truth = handle.hub.truth()
            assert truth["active_sha256"] == old_sha
            assert truth["confirmed"] is True
            assert truth["secondary_sha256"] == sha.hex()
            assert handle.hub.swaps == 2


async def test_the_bootloader_rejects_an_image_with_a_bad_signature(tmp_path: Path) -> None:
    async with running_hub(tmp_path, timing=FAST) as handle:
        old = handle.hub.truth()
        foreign = make_signed_image(
            make_manufacturer_keys(0x1086, 1234), handle.spec.model, NEW, 8192, 0
        )
        with Wire(handle.path) as wire:
            await unlock(wire, handle)
            assert await upload(wire, foreign) == {"off": len(foreign)}
            await wire.request(
                smpimg.ImageStatesWriteRequest(hash=image_hash(foreign), confirm=False)
            )
            await reset(wire, handle)
            truth = handle.hub.truth()
            assert truth["active_sha256"] == old["active_sha256"]
            assert truth["active_version"] == "01000000"
            assert truth["pending"] is False
            assert handle.hub.images_rejected == 1
            assert len(await state(wire)) == 1  # the rejected image was erased


async def test_the_bootloader_refuses_a_downgrade(tmp_path: Path) -> None:
    spec = HubSpec(firmware_version=FirmwareVersion.parse("04000007"))
    async with running_hub(tmp_path, timing=FAST, spec=spec) as handle:
        older = handle.make_image(FirmwareVersion.parse("03000000"))
        with Wire(handle.path) as wire:
            await unlock(wire, handle)
            await upload(wire, older)
            await wire.request(smpimg.ImageStatesWriteRequest(hash=image_hash(older)))
            await reset(wire, handle)
            assert handle.hub.truth()["active_version"] == "04000007"
            assert handle.hub.images_rejected == 1


async def test_state_write_naming_no_image_is_hash_not_found(tmp_path: Path) -> None:
    async with running_hub(tmp_path, timing=FAST, spec=HubSpec(locked=False)) as handle:
        with Wire(handle.path) as wire:
            answer = body(await wire.request(smpimg.ImageStatesWriteRequest(hash=bytes(32))))
            assert answer == {"err": {"group": 1, "rc": IMG_HASH_NOT_FOUND}}


async def test_upload_resumes_from_the_offset_reached_after_power_loss(tmp_path: Path) -> None:
    # A model that keeps the upload's state in flash (Zephyr 3.4 keeps it in RAM: see
    # test_hub_zephyr.py for that).
    timing = FAST.model_copy(update={"upload_state": "flash"})
    async with running_hub(tmp_path, timing=timing, spec=HubSpec(locked=False)) as handle:
        image = handle.make_image(NEW, 16 * 1024)
        with Wire(handle.path) as wire:
            answer = await upload(wire, image, stop=8 * 1024)
            assert answer == {"off": 8 * 1024}
            handle.hub.power_off()
            await wire.send(smpos.EchoWriteRequest(d="lost"))
            assert await wire.silent(0.1)
            handle.hub.power_on()
            await handle.hub.wait_for_state(HubState.RUNNING, timeout_s=5.0)
            assert handle.hub.bytes_discarded > 0
            written_before = handle.hub.chunks_written
            # A new offset-0 request for the same image answers where the hub got to,
            # without writing.
            assert await upload(wire, image, stop=1024) == {"off": 8 * 1024}
            assert handle.hub.chunks_written == written_before
            assert await upload(wire, image, start=8 * 1024) == {"off": len(image)}
            assert handle.hub.flash.secondary is not None
            assert handle.hub.flash.secondary.data == image


async def test_a_chunk_at_the_wrong_offset_is_answered_with_the_expected_one(
    tmp_path: Path,
) -> None:
    async with running_hub(tmp_path, timing=FAST, spec=HubSpec(locked=False)) as handle:
        image = handle.make_image(NEW)
        with Wire(handle.path) as wire:
            await upload(wire, image, stop=2048)
            stray = smpimg.ImageUploadWriteRequest(off=4096, data=image[4096:5120])
            assert body(await wire.request(stray)) == {"off": 2048}
            assert len(handle.hub.flash.upload.data if handle.hub.flash.upload else b"") == 2048


async def test_a_final_chunk_not_matching_the_sha_is_taken_as_zephyr_does(tmp_path: Path) -> None:
    """Zephyr 3.4 does not check the whole image against the announced `sha`: the upload
    completes and the image waits in the secondary slot for the bootloader's checks."""
    async with running_hub(tmp_path, timing=FAST, spec=HubSpec(locked=False)) as handle:
        image = handle.make_image(NEW)
        with Wire(handle.path) as wire:
            first = smpimg.ImageUploadWriteRequest(
                off=0, data=image[:1024], len=len(image), sha=bytes(32), image=0
            )
            assert body(await wire.request(first)) == {"off": 1024}
            answer = await upload(wire, image, start=1024)
            assert answer == {"off": len(image)}
            assert len(await state(wire)) == 2


async def test_an_image_larger_than_the_slot_is_refused(tmp_path: Path) -> None:
    timing = FAST.model_copy(update={"slot_size": 64 * 1024})
    async with running_hub(tmp_path, timing=timing, spec=HubSpec(locked=False)) as handle:
        image = handle.make_image(NEW)
        with Wire(handle.path) as wire:
            request = smpimg.ImageUploadWriteRequest(
                off=0, data=image[:1024], len=64 * 1024 + 1, sha=bytes(32), image=0
            )
            assert body(await wire.request(request)) == {"err": {"group": 1, "rc": IMG_TOO_LARGE}}


async def test_pipelined_requests_are_answered_in_order_and_overflow_is_dropped(
    tmp_path: Path,
) -> None:
    # Slow flash: the hub is still programming the first chunk while the rest arrive.
    timing = FAST.model_copy(update={"buf_count": 2, "sector_erase_s": 0.1})
    async with running_hub(tmp_path, timing=timing, spec=HubSpec(locked=False)) as handle:
        image = handle.make_image(NEW)
        sha = hashlib.sha256(image).digest()
        with Wire(handle.path) as wire:
            requests = [
                smpimg.ImageUploadWriteRequest(
                    off=0, data=image[:1024], len=len(image), sha=sha, image=0
                ),
                smpimg.ImageUploadWriteRequest(off=1024, data=image[1024:2048]),
                smpimg.ImageUploadWriteRequest(off=2048, data=image[2048:3072]),
            ]
            for request in requests:
                await wire.send(request)
            answers = [body(await wire.receive()), body(await wire.receive())]
            assert answers == [{"off": 1024}, {"off": 2048}]
            assert await wire.silent(0.3)  # the third arrived with both buffers busy
            assert handle.hub.frames_dropped_busy == 1


async def test_the_hub_receives_while_it_programs(tmp_path: Path) -> None:
    # Each 1 KiB chunk takes as long to program as to cross the wire at 115200 baud (~89 ms):
    # pipelined, 4 chunks take about 5 wire times; stop-and-wait would take about 8.
    timing = Timing(
        baud=115_200,
        sector_erase_s=0.0,
        page_program_s=0.089 / 4,
        swap_s=0.05,
        boot_s=0.02,
        reset_s=0.01,
    )
    async with running_hub(tmp_path, timing=timing, spec=HubSpec(locked=False)) as handle:
        image = handle.make_image(NEW)
        sha = hashlib.sha256(image).digest()
        with Wire(handle.path) as wire:
            started = time.monotonic()
            await wire.send(
                smpimg.ImageUploadWriteRequest(
                    off=0, data=image[:1024], len=len(image), sha=sha, image=0
                )
            )
            for offset in (1024, 2048, 3072):
                await wire.send(
                    smpimg.ImageUploadWriteRequest(off=offset, data=image[offset : offset + 1024])
                )
            for _ in range(4):
                await wire.receive()
            elapsed = time.monotonic() - started
        chunk_wire_s = 1100 * 10 / 115_200
        assert 4.5 * chunk_wire_s < elapsed < 7 * chunk_wire_s


async def test_received_bytes_are_paced_at_baud_over_ten(tmp_path: Path) -> None:
    timing = FAST.model_copy(update={"baud": 115_200, "buf_size": 16 * 1024})
    async with running_hub(tmp_path, timing=timing) as handle:
        with Wire(handle.path) as wire:
            request = bytes(smpos.EchoWriteRequest(d="x" * (10 * 1024 - 14)))
            assert len(request) == 10 * 1024
            started = time.monotonic()
            await wire.send(request)
            await handle.hub.wait_until(lambda: handle.hub.frames_received == 1, timeout_s=5.0)
            received_s = time.monotonic() - started
            await wire.receive()
            answered_s = time.monotonic() - started
        expected_s = 10 * 1024 * 10 / 115_200  # 0.89 s
        assert 0.8 * expected_s < received_s < 2 * expected_s
        # The answer is as long again, paced the same way.
        assert 0.8 * 2 * expected_s < answered_s < 2 * 2 * expected_s


async def test_power_off_abandons_work_and_keeps_programmed_bytes(tmp_path: Path) -> None:
    timing = FAST.model_copy(update={"sector_erase_s": 0.5, "upload_state": "flash"})
    async with running_hub(tmp_path, timing=timing, spec=HubSpec(locked=False)) as handle:
        image = handle.make_image(NEW)
        with Wire(handle.path) as wire:
            # The first sector is erased once (0.5 s); the chunk after it needs a new one.
            assert await upload(wire, image, stop=4096) == {"off": 4096}
            received = handle.hub.frames_received
            await wire.send(smpimg.ImageUploadWriteRequest(off=4096, data=image[4096:5120]))
            # The hub has the chunk and is erasing the second sector.
            await handle.hub.wait_until(
                lambda: handle.hub.frames_received > received, timeout_s=2.0
            )
            handle.hub.power_off()
            assert handle.hub.state is HubState.OFF
            assert await wire.silent(0.6)
            record = handle.hub.flash.upload
            assert record is not None
            assert record.offset == 4096
            assert bytes(record.data) == image[:4096]


def _first_chunk(image: bytes) -> smpimg.ImageUploadWriteRequest:
    return smpimg.ImageUploadWriteRequest(
        off=0, data=image[:1024], len=len(image), sha=hashlib.sha256(image).digest(), image=0
    )
