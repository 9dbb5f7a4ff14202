"""The simulated hub answers as Zephyr 3.4's MCUmgr SMP server does, where the protocol page
leaves room: checked against Zephyr's native_sim peers (smp_svr.exe, smp_svr_params.exe,
jig_hub.exe) when these behaviours were written.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

import pytest
from smp import header as smpheader
from smp import image_management as smpimg
from smp import os_management as smpos

from drivers import jig_group
from drivers.framing import ConsoleFraming
from jigd.model import FirmwareVersion
from sim.harness import HubHandle, HubSpec, running_hub
from sim.hub import HubState
from tests.sim.helpers import FAST, MGMT_EINVAL, MGMT_ENOTSUP, MGMT_EUNKNOWN, image_hash, upload
from tests.sim.wire import Wire, body

NEW = FirmwareVersion.parse("04000007")
UNLOCKED = HubSpec(locked=False)
V1 = smpheader.Version.V1  # the original protocol: errors are {rc} only
IMG = smpimg.IMG_MGMT_ERR
MGMT_EACCESSDENIED = 11
MGMT_EBADSTATE = 6


def _img_err(rc: int) -> dict[str, Any]:
    return {"err": {"group": 1, "rc": rc}}


def _first_chunk(image: bytes, size: int = 1024, **fields: Any) -> smpimg.ImageUploadWriteRequest:
    return smpimg.ImageUploadWriteRequest(
        off=0,
        data=image[:size],
        len=len(image),
        sha=hashlib.sha256(image).digest(),
        image=0,
        **fields,
    )


async def _upload_and_test(wire: Wire, image: bytes) -> None:
    assert await upload(wire, image) == {"off": len(image)}
    written = body(await wire.request(smpimg.ImageStatesWriteRequest(hash=image_hash(image))))
    assert written["images"][1]["pending"] is True


# ---- image hash: MCUboot's SHA256 TLV, not the file's sha256 -----------------------------------


async def test_image_state_shows_and_takes_only_the_images_sha256_tlv(tmp_path: Path) -> None:
    async with running_hub(tmp_path, timing=FAST, spec=UNLOCKED) as handle:
        image = handle.make_image(NEW)
        sha, digest = hashlib.sha256(image).digest(), image_hash(image)
        assert sha != digest
        with Wire(handle.path) as wire:
            # The upload announces the sha256 of the whole file, and completes with it.
            assert await upload(wire, image) == {"off": len(image)}
            read = body(await wire.request(smpimg.ImageStatesReadRequest()))
            assert [i["hash"] for i in read["images"]] == [
                bytes.fromhex(str(handle.hub.truth()["active_image_hash"])),
                digest,
            ]
            assert read["splitStatus"] == 0
            # The file's sha256 names no image: HASH_NOT_FOUND, legacy EUNKNOWN for version 1.
            by_sha = smpimg.ImageStatesWriteRequest(hash=sha, confirm=False)
            assert body(await wire.request(by_sha)) == _img_err(IMG.HASH_NOT_FOUND)
            by_sha_v1 = smpimg.ImageStatesWriteRequest(hash=sha, confirm=False, version=V1)
            assert body(await wire.request(by_sha_v1)) == {"rc": MGMT_EUNKNOWN}
            assert handle.hub.flash.pending is None
            by_tlv = smpimg.ImageStatesWriteRequest(hash=digest, confirm=False)
            assert body(await wire.request(by_tlv))["images"][1]["pending"] is True
        truth = handle.hub.truth()
        assert truth["secondary_image_hash"] == digest.hex()
        assert truth["secondary_sha256"] == sha.hex()


@pytest.mark.parametrize(
    ("fields", "v2", "v1"),
    [
        ({"confirm": False}, IMG.INVALID_HASH, MGMT_EINVAL),  # test without a hash
        ({"hash": bytes(5), "confirm": False}, IMG.INVALID_HASH, MGMT_EINVAL),
        ({"hash": bytes(32), "confirm": True}, IMG.HASH_NOT_FOUND, MGMT_EUNKNOWN),
    ],
    ids=["test-without-hash", "short-hash", "unknown-hash"],
)
async def test_state_write_refusals_as_zephyr(
    tmp_path: Path, fields: dict[str, Any], v2: int, v1: int
) -> None:
    async with running_hub(tmp_path, timing=FAST, spec=UNLOCKED) as handle:
        with Wire(handle.path) as wire:
            request = smpimg.ImageStatesWriteRequest(**fields)
            assert body(await wire.request(request)) == _img_err(v2)
            request_v1 = smpimg.ImageStatesWriteRequest(**fields, version=V1)
            assert body(await wire.request(request_v1)) == {"rc": v1}


async def test_testing_the_active_image_is_denied(tmp_path: Path) -> None:
    async with running_hub(tmp_path, timing=FAST, spec=UNLOCKED) as handle:
        active = bytes.fromhex(str(handle.hub.truth()["active_image_hash"]))
        with Wire(handle.path) as wire:
            request = smpimg.ImageStatesWriteRequest(hash=active, confirm=False)
            assert body(await wire.request(request)) == _img_err(
                IMG.IMAGE_SETTING_TEST_TO_ACTIVE_DENIED
            )
            request_v1 = smpimg.ImageStatesWriteRequest(hash=active, confirm=False, version=V1)
            assert body(await wire.request(request_v1)) == {"rc": MGMT_EUNKNOWN}


async def test_a_pending_image_holds_the_secondary_slot(tmp_path: Path) -> None:
    async with running_hub(tmp_path, timing=FAST, spec=UNLOCKED) as handle:
        image = handle.make_image(NEW)
        digest = image_hash(image)
        with Wire(handle.path) as wire:
            await _upload_and_test(wire, image)
            # Marking it for test again changes nothing; anything else clashes with the test.
            again = smpimg.ImageStatesWriteRequest(hash=digest, confirm=False)
            assert body(await wire.request(again))["images"][1]["pending"] is True
            for request in (
                smpimg.ImageStatesWriteRequest(confirm=True),
                smpimg.ImageStatesWriteRequest(hash=digest, confirm=True),
            ):
                assert body(await wire.request(request)) == _img_err(IMG.IMAGE_ALREADY_PENDING)
            # No new upload over it (img_mgmt_slot_in_use): NO_FREE_SLOT, EBADSTATE for v1.
            assert body(await wire.request(_first_chunk(image))) == _img_err(IMG.NO_FREE_SLOT)
            first_v1 = _first_chunk(image, version=V1)
            assert body(await wire.request(first_v1)) == {"rc": MGMT_EBADSTATE}


async def test_a_permanent_swap_due_refuses_a_test_and_a_confirm(tmp_path: Path) -> None:
    async with running_hub(tmp_path, timing=FAST, spec=UNLOCKED) as handle:
        image = handle.make_image(NEW)
        digest = image_hash(image)
        with Wire(handle.path) as wire:
            assert await upload(wire, image) == {"off": len(image)}
            permanent = smpimg.ImageStatesWriteRequest(hash=digest, confirm=True)
            assert body(await wire.request(permanent))["images"][1]["permanent"] is True
            assert body(await wire.request(permanent))["images"][1]["permanent"] is True
            for request in (
                smpimg.ImageStatesWriteRequest(hash=digest, confirm=False),
                smpimg.ImageStatesWriteRequest(confirm=True),
            ):
                assert body(await wire.request(request)) == _img_err(IMG.IMAGE_ALREADY_PENDING)


# ---- mcumgr_params may be absent -----------------------------------------------------------


@pytest.mark.parametrize("version", [smpheader.Version.V1, smpheader.Version.V2])
async def test_a_model_without_mcumgr_params_answers_enotsup(
    tmp_path: Path, version: smpheader.Version
) -> None:
    timing = FAST.model_copy(update={"mcumgr_params": False})
    async with running_hub(tmp_path, timing=timing) as handle:
        with Wire(handle.path) as wire:
            answer = body(await wire.request(smpos.MCUMgrParametersReadRequest(version=version)))
            assert answer["rc"] == MGMT_ENOTSUP
            assert "err" not in answer  # not a group error, for version 2 either
            assert body(await wire.request(smpos.EchoWriteRequest(d="ok"))) == {"r": "ok"}


# ---- console framing: Zephyr's UART line buffers -------------------------------------------


def _echo_lines(count: int) -> bytes:
    """`count` one-line echo requests, as one burst of console framing."""
    framing = ConsoleFraming()
    return b"".join(
        framing.encode(bytes(smpos.EchoWriteRequest(d=str(i), sequence=i))) for i in range(count)
    )


async def _answers(wire: Wire, quiet_s: float = 0.3) -> list[str]:
    """The echoes answered until the hub has been quiet for `quiet_s`."""
    got: list[str] = []
    while True:
        try:
            frame = await wire.receive(quiet_s)
        except TimeoutError:
            return got
        got.append(body(frame)["r"])


async def test_unpaced_burst_of_more_lines_than_buffers_loses_lines(tmp_path: Path) -> None:
    timing = FAST.model_copy(update={"rx_bytes_per_tick": 0})  # a fast adapter, unpaced
    async with running_hub(tmp_path, timing=timing, framing="console") as handle:
        with Wire(handle.path, framing="console") as wire:
            await wire.write(_echo_lines(2))
            assert await _answers(wire) == ["0", "1"]
            await wire.write(_echo_lines(5))
            assert await _answers(wire) == ["0", "1"]  # 2 line buffers: 3 lines dropped
            # A frame of more lines than buffers never arrives whole.
            long_echo = smpos.EchoWriteRequest(d="x" * 300)
            assert len(ConsoleFraming().encode(bytes(long_echo)).splitlines()) == 4
            await wire.send(long_echo)
            assert await wire.silent(0.3)
            assert body(await wire.request(smpos.EchoWriteRequest(d="ok"))) == {"r": "ok"}
        hub = handle.hub
        assert (hub.line_rx.dropped_busy, hub.line_rx.dropped_long) == (5, 0)
        assert hub.lines_dropped == hub.truth()["rx_lines_dropped"] == 5


async def test_paced_lines_free_their_buffers_in_time(tmp_path: Path) -> None:
    # 115200 baud: about 11.5 bytes per 1 ms tick, so each line takes ticks of its own.
    timing = FAST.model_copy(update={"baud": 115_200})
    async with running_hub(tmp_path, timing=timing, framing="console") as handle:
        with Wire(handle.path, framing="console") as wire:
            await wire.write(_echo_lines(5))
            assert await _answers(wire) == ["0", "1", "2", "3", "4"]
            long_echo = smpos.EchoWriteRequest(d="x" * 300)
            assert body(await wire.request(long_echo)) == {"r": "x" * 300}
        assert handle.hub.lines_dropped == 0


async def test_more_line_buffers_take_a_bigger_burst(tmp_path: Path) -> None:
    timing = FAST.model_copy(update={"rx_bytes_per_tick": 0, "rx_buf_count": 4})
    async with running_hub(tmp_path, timing=timing, framing="console") as handle:
        with Wire(handle.path, framing="console") as wire:
            await wire.write(_echo_lines(5))
            assert await _answers(wire) == ["0", "1", "2", "3"]


async def test_a_line_longer_than_its_buffer_is_dropped(tmp_path: Path) -> None:
    async with running_hub(tmp_path, timing=FAST, framing="console") as handle:
        with Wire(handle.path, framing="console") as wire:
            await wire.write(b"\x06\x09" + b"A" * 200 + b"\n")
            assert body(await wire.request(smpos.EchoWriteRequest(d="ok"))) == {"r": "ok"}
        assert (handle.hub.line_rx.dropped_busy, handle.hub.line_rx.dropped_long) == (0, 1)


async def test_stray_bytes_before_a_line_cost_that_line(tmp_path: Path) -> None:
    # The stray bytes start a line; the request's line is appended to them and, not starting
    # with a packet delimiter, ignored (as smp_svr.exe does). Nothing resynchronises inside it.
    async with running_hub(tmp_path, timing=FAST, framing="console") as handle:
        with Wire(handle.path, framing="console") as wire:
            await wire.write(b"xyz")
            await wire.send(smpos.EchoWriteRequest(d="lost"))
            assert await wire.silent(0.3)
            assert body(await wire.request(smpos.EchoWriteRequest(d="ok"))) == {"r": "ok"}
        assert handle.hub.lines_dropped == 0  # received, then ignored


async def test_console_frames_fit_the_smp_buffer_less_length_and_crc(tmp_path: Path) -> None:
    # As smp_svr_params.exe (buf_size 384): a 380-byte frame is answered, a 381-byte one is
    # dropped (its length, frame and CRC16 no longer fit one SMP buffer).
    timing = FAST.model_copy(update={"buf_size": 384})
    async with running_hub(tmp_path, timing=timing, framing="console") as handle:
        with Wire(handle.path, framing="console") as wire:
            for size, answered in ((380, True), (381, False)):
                request = bytes(smpos.EchoWriteRequest(d="x" * (size - 14)))
                assert len(request) == size
                await wire.send(request)
                assert await wire.silent(0.3) is not answered, size


# ---- reset takes effect reset_delay_s after its answer -----------------------------------------


async def test_the_hub_answers_as_the_old_firmware_until_the_reset_takes_effect(
    tmp_path: Path,
) -> None:
    delay_s = 0.3
    timing = FAST.model_copy(update={"reset_delay_s": delay_s})
    async with running_hub(tmp_path, timing=timing, spec=UNLOCKED) as handle:
        loop = asyncio.get_running_loop()
        hub = handle.hub
        image = handle.make_image(NEW)
        with Wire(handle.path) as wire:
            await _upload_and_test(wire, image)
            started = loop.time()
            assert body(await wire.request(smpos.ResetWriteRequest())) == {}
            identity = body(await wire.request(jig_group.IdentityReadRequest()))
            assert identity["firmware_version"] == 0x01000000  # still the old firmware
            assert hub.state is HubState.RUNNING
            await hub.wait_for_state(HubState.BOOTING, timeout_s=2.0)
            assert loop.time() - started >= delay_s - 0.01
            await hub.wait_for_state(HubState.RUNNING, timeout_s=5.0)
            identity = body(await wire.request(jig_group.IdentityReadRequest()))
            assert identity["firmware_version"] == 0x04000007


async def test_a_second_reset_restarts_the_delay(tmp_path: Path) -> None:
    delay_s = 0.3
    timing = FAST.model_copy(update={"reset_delay_s": delay_s})
    async with running_hub(tmp_path, timing=timing, spec=UNLOCKED) as handle:
        loop = asyncio.get_running_loop()
        with Wire(handle.path) as wire:
            assert body(await wire.request(smpos.ResetWriteRequest())) == {}
            await asyncio.sleep(delay_s / 2)
            again = loop.time()
            assert body(await wire.request(smpos.ResetWriteRequest())) == {}
            await handle.hub.wait_for_state(HubState.BOOTING, timeout_s=2.0)
            assert loop.time() - again >= delay_s - 0.01
        assert handle.hub.resets == 1


# ---- upload state in RAM (Zephyr 3.4) or in flash ----------------------------------------------


async def _cut_upload(handle: HubHandle, wire: Wire, image: bytes, how: str) -> None:
    """Upload half of `image`, then power cycle or reset the hub."""
    assert await upload(wire, image, stop=len(image) // 2) == {"off": len(image) // 2}
    if how == "power":
        handle.hub.power_off()
        handle.hub.power_on()
    else:
        assert body(await wire.request(smpos.ResetWriteRequest())) == {}
        await handle.hub.wait_for_state(HubState.BOOTING, timeout_s=2.0)
    await handle.hub.wait_for_state(HubState.RUNNING, timeout_s=5.0)


@pytest.mark.parametrize("how", ["power", "reset"])
async def test_an_upload_in_ram_starts_over_after_power_loss_or_reset(
    tmp_path: Path, how: str
) -> None:
    async with running_hub(tmp_path, timing=FAST, spec=UNLOCKED) as handle:
        assert handle.timing.upload_state == "ram"  # the default, as Zephyr 3.4
        image = handle.make_image(NEW, 16 * 1024)
        with Wire(handle.path) as wire:
            await _cut_upload(handle, wire, image, how)
            assert handle.hub.flash.upload is None
            # A continuation is answered with offset 0; offset 0 starts a new upload.
            stray = smpimg.ImageUploadWriteRequest(off=8192, data=image[8192:9216])
            assert body(await wire.request(stray)) == {"off": 0}
            assert body(await wire.request(_first_chunk(image))) == {"off": 1024}


@pytest.mark.parametrize("how", ["power", "reset"])
async def test_an_upload_in_flash_resumes_after_power_loss_or_reset(
    tmp_path: Path, how: str
) -> None:
    timing = FAST.model_copy(update={"upload_state": "flash"})
    async with running_hub(tmp_path, timing=timing, spec=UNLOCKED) as handle:
        image = handle.make_image(NEW, 16 * 1024)
        with Wire(handle.path) as wire:
            await _cut_upload(handle, wire, image, how)
            written = handle.hub.chunks_written
            assert body(await wire.request(_first_chunk(image))) == {"off": 8192}
            assert handle.hub.chunks_written == written  # resumed: nothing written
            assert await upload(wire, image, start=8192) == {"off": len(image)}


async def test_an_upload_resumes_in_ram_while_the_hub_runs(tmp_path: Path) -> None:
    async with running_hub(tmp_path, timing=FAST, spec=UNLOCKED) as handle:
        image = handle.make_image(NEW, 16 * 1024)
        with Wire(handle.path) as wire:
            assert await upload(wire, image, stop=8192) == {"off": 8192}
            assert body(await wire.request(_first_chunk(image))) == {"off": 8192}


# ---- upload: first chunk checks and the last answer --------------------------------------------


async def test_a_first_chunk_shorter_than_the_image_header_is_refused(tmp_path: Path) -> None:
    async with running_hub(tmp_path, timing=FAST, spec=UNLOCKED) as handle:
        image = handle.make_image(NEW)
        with Wire(handle.path) as wire:
            for size in (0, 1, 31):
                answer = body(await wire.request(_first_chunk(image, size)))
                assert answer == _img_err(IMG.INVALID_IMAGE_HEADER), size
            assert body(await wire.request(_first_chunk(image, 31, version=V1))) == {
                "rc": MGMT_EINVAL
            }
            assert body(await wire.request(_first_chunk(image, 32))) == {"off": 32}
            # A refused first chunk ends the upload in progress, as img_mgmt_reset_upload.
            assert body(await wire.request(_first_chunk(image, 8))) == _img_err(
                IMG.INVALID_IMAGE_HEADER
            )
            follow = smpimg.ImageUploadWriteRequest(off=32, data=image[32:64])
            assert body(await wire.request(follow)) == {"off": 0}


async def test_a_first_chunk_without_mcuboot_magic_or_len_is_refused(tmp_path: Path) -> None:
    async with running_hub(tmp_path, timing=FAST, spec=UNLOCKED) as handle:
        image = handle.make_image(NEW)
        with Wire(handle.path) as wire:
            no_len = smpimg.ImageUploadWriteRequest(off=0, data=image[:1024])
            assert body(await wire.request(no_len)) == _img_err(IMG.INVALID_LENGTH)
            no_magic = smpimg.ImageUploadWriteRequest(off=0, data=bytes(1024), len=4096)
            assert body(await wire.request(no_magic)) == _img_err(IMG.INVALID_IMAGE_HEADER_MAGIC)
            no_magic_v1 = smpimg.ImageUploadWriteRequest(
                off=0, data=bytes(1024), len=4096, version=V1
            )
            assert body(await wire.request(no_magic_v1)) == {"rc": MGMT_EUNKNOWN}


async def test_the_last_upload_answer_carries_no_match(tmp_path: Path) -> None:
    async with running_hub(tmp_path, timing=FAST, spec=UNLOCKED) as handle:
        image = handle.make_image(NEW)
        with Wire(handle.path) as wire:
            assert await upload(wire, image, stop=len(image) - 1024) == {"off": len(image) - 1024}
            last = smpimg.ImageUploadWriteRequest(
                off=len(image) - 1024, data=image[len(image) - 1024 :]
            )
            assert body(await wire.request(last)) == {"off": len(image)}


# ---- version-1 requests get the legacy code of a group error -----------------------------------


async def test_jig_group_errors_are_translated_for_version_1(tmp_path: Path) -> None:
    async with running_hub(tmp_path, timing=FAST) as handle:
        with Wire(handle.path) as wire:
            no_challenge = jig_group.UnlockWriteRequest(mac=bytes(32), version=V1)
            assert body(await wire.request(no_challenge)) == {"rc": MGMT_EBADSTATE}
            await wire.request(jig_group.UnlockChallengeRequest())
            bad_mac = jig_group.UnlockWriteRequest(mac=bytes(32), version=V1)
            assert body(await wire.request(bad_mac)) == {"rc": MGMT_EACCESSDENIED}
