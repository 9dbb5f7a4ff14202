"""Injected faults: each does what it says, deterministically, and profiles hand them out."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from pathlib import Path

from smp import image_management as smpimg
from smp import os_management as smpos

from drivers import jig_group
from jigd.model import FirmwareVersion
from sim.faults import FaultProfile, Faults, assign_faults
from sim.harness import HubSpec, running_hub
from sim.hub import HubState
from tests.sim.helpers import FAST, image_hash, reset, unlock, upload
from tests.sim.wire import Wire, body

NEW = FirmwareVersion.parse("04000007")
UNLOCKED = HubSpec(locked=False)


async def _upload_and_test(wire: Wire, image: bytes) -> None:
    assert (await upload(wire, image))["off"] == len(image)
    await wire.request(smpimg.ImageStatesWriteRequest(hash=image_hash(image), confirm=False))


async def test_hang_after_requests_lasts_until_a_power_cycle(tmp_path: Path) -> None:
    faults = Faults(hang_after_requests=2)
    async with running_hub(tmp_path, timing=FAST, faults=faults) as handle:
        with Wire(handle.path) as wire:
            for _ in range(2):
                assert body(await wire.request(smpos.EchoWriteRequest(d="a"))) == {"r": "a"}
            await wire.send(smpos.EchoWriteRequest(d="b"))
            assert await wire.silent(0.2)
            assert handle.hub.state is HubState.HUNG
            handle.hub.power_off()
            handle.hub.power_on()
            await handle.hub.wait_for_state(HubState.RUNNING, timeout_s=5.0)
            assert body(await wire.request(smpos.EchoWriteRequest(d="c"))) == {"r": "c"}


async def test_bricked_after_reset_never_boots_again(tmp_path: Path) -> None:
    faults = Faults(bricked_after_reset=True)
    async with running_hub(tmp_path, timing=FAST, faults=faults, spec=UNLOCKED) as handle:
        with Wire(handle.path) as wire:
            await reset(wire, handle)
            assert handle.hub.state is HubState.BRICKED
            handle.hub.power_off()
            handle.hub.power_on()
            await handle.hub.wait_for_state(HubState.BRICKED, timeout_s=5.0)
            await wire.send(smpos.EchoWriteRequest(d="anyone?"))
            assert await wire.silent(0.2)
            assert handle.hub.truth()["bricked"] is True


async def test_never_boots_never_answers_from_the_first_power_on(tmp_path: Path) -> None:
    """A hub dead on arrival: silent from the start, after a power cycle too."""
    async with running_hub(tmp_path, timing=FAST, faults=Faults(never_boots=True)) as handle:
        assert handle.hub.state is HubState.BRICKED
        with Wire(handle.path) as wire:
            await wire.send(smpos.EchoWriteRequest(d="anyone?"))
            assert await wire.silent(0.2)
            handle.hub.power_off()
            handle.hub.power_on()
            await handle.hub.wait_for_state(HubState.BRICKED, timeout_s=5.0)
            await wire.send(smpos.EchoWriteRequest(d="still nobody?"))
            assert await wire.silent(0.2)
        assert handle.hub.boots == 0
        assert handle.hub.truth()["bricked"] is True


async def test_wrong_unlock_key_refuses_the_right_mac(tmp_path: Path) -> None:
    async with running_hub(tmp_path, timing=FAST, faults=Faults(wrong_unlock_key=True)) as handle:
        with Wire(handle.path) as wire:
            answer = await unlock(wire, handle)
            assert answer["err"]["rc"] == jig_group.JigMgmtErr.BAD_MAC
            assert handle.hub.truth()["locked"] is True


async def test_reject_image_boots_the_old_image(tmp_path: Path) -> None:
    async with running_hub(
        tmp_path, timing=FAST, faults=Faults(reject_image=True), spec=UNLOCKED
    ) as handle:
        with Wire(handle.path) as wire:
            await _upload_and_test(wire, handle.make_image(NEW))
            await reset(wire, handle)
            assert handle.hub.truth()["active_version"] == "01000000"
            assert handle.hub.images_rejected == 1


async def test_refuse_mark_test_fails_every_test_write_and_nothing_else(tmp_path: Path) -> None:
    async with running_hub(
        tmp_path, timing=FAST, faults=Faults(refuse_mark_test=True), spec=UNLOCKED
    ) as handle:
        image = handle.make_image(NEW)
        with Wire(handle.path) as wire:
            assert (await upload(wire, image))["off"] == len(image)
            for _ in range(2):
                answer = body(
                    await wire.request(
                        smpimg.ImageStatesWriteRequest(hash=image_hash(image), confirm=False)
                    )
                )
                assert answer["err"]["rc"] == smpimg.IMG_MGMT_ERR.FLASH_WRITE_FAILED
            assert handle.hub.truth()["pending"] is False
            confirmed = await wire.request(smpimg.ImageStatesWriteRequest(confirm=True))
            assert "err" not in body(confirmed)


async def test_power_loss_during_upload_leaves_the_hub_off_until_powered(tmp_path: Path) -> None:
    faults = Faults(power_loss_during_upload_at=0.5)
    timing = FAST.model_copy(update={"upload_state": "flash"})  # resumable after power loss
    async with running_hub(tmp_path, timing=timing, faults=faults, spec=UNLOCKED) as handle:
        lost: list[bool] = []
        handle.hub.on_power_lost = lambda: lost.append(True)
        image = handle.make_image(NEW, 16 * 1024)
        with Wire(handle.path) as wire:
            answer = await wire.request(
                smpimg.ImageUploadWriteRequest(
                    off=0,
                    data=image[:1024],
                    len=len(image),
                    sha=hashlib.sha256(image).digest(),
                    image=0,
                )
            )
            assert body(answer) == {"off": 1024}
            with contextlib.suppress(TimeoutError):  # the hub goes silent mid-upload
                await upload(wire, image, start=1024, timeout_s=0.3)
            assert lost == [True]
            assert handle.hub.state is HubState.OFF
            assert handle.hub.powered is False
            reached = handle.hub.flash.upload.offset if handle.hub.flash.upload else 0
            assert 0 < reached < len(image) // 2 + 1024
            handle.hub.power_on()  # as the rig does on POWER n ON
            await handle.hub.wait_for_state(HubState.RUNNING, timeout_s=5.0)
            assert await upload(wire, image, stop=1024) == {"off": reached}
            assert await upload(wire, image, start=reached) == {"off": len(image)}


async def test_power_loss_during_swap_is_resumed_at_power_on(tmp_path: Path) -> None:
    faults = Faults(power_loss_during_swap=True)
    async with running_hub(tmp_path, timing=FAST, faults=faults, spec=UNLOCKED) as handle:
        image = handle.make_image(NEW)
        with Wire(handle.path) as wire:
            await _upload_and_test(wire, image)
            assert body(await wire.request(smpos.ResetWriteRequest())) == {}
            await handle.hub.wait_until(lambda: not handle.hub.powered, timeout_s=5.0)
            truth = handle.hub.truth()
            assert truth["swap_in_progress"] is True
            assert truth["active_version"] == "01000000"
            handle.hub.power_on()
            await handle.hub.wait_for_state(HubState.RUNNING, timeout_s=5.0)
            truth = handle.hub.truth()
            assert truth["active_version"] == "04000007"
            assert truth["swap_in_progress"] is False
            assert truth["confirmed"] is False


async def test_dropped_responses_are_never_sent(tmp_path: Path) -> None:
    async with running_hub(tmp_path, timing=FAST, faults=Faults(drop_response_rate=1.0)) as handle:
        with Wire(handle.path) as wire:
            await wire.send(smpos.EchoWriteRequest(d="x"))
            assert await wire.silent(0.2)
            assert handle.hub.responses_dropped == 1


async def test_corrupted_console_responses_fail_their_crc(tmp_path: Path) -> None:
    async with running_hub(
        tmp_path, timing=FAST, framing="console", faults=Faults(corrupt_rate=1.0)
    ) as handle:
        with Wire(handle.path, framing="console") as wire:
            await wire.send(smpos.EchoWriteRequest(d="x" * 100))
            assert await wire.silent(0.2)
            assert wire.decoder.dropped_bytes > 0
            assert handle.hub.responses_corrupted == 1


async def test_slow_flash_multiplies_programming_time(tmp_path: Path) -> None:
    timing = FAST.model_copy(update={"sector_erase_s": 0.05})
    faults = Faults(slow_flash_factor=4.0)
    async with running_hub(tmp_path, timing=timing, faults=faults, spec=UNLOCKED) as handle:
        image = handle.make_image(NEW)
        with Wire(handle.path) as wire:
            loop_time = asyncio.get_running_loop().time
            started = loop_time()
            await upload(wire, image, stop=1024)
            assert loop_time() - started > 4 * 0.05


def test_faults_are_deterministic_and_profiles_scale() -> None:
    def faulty(profile: FaultProfile) -> list[Faults]:
        assigned = [assign_faults(profile, 7, f"hub-{i}") for i in range(2000)]
        return [f for f in assigned if f.names()]

    assert assign_faults("light", 7, "x") == assign_faults("light", 7, "x")
    assert assign_faults("light", 7, "x").seed != assign_faults("light", 8, "x").seed
    assert faulty(FaultProfile.NONE) == []
    light, harsh = faulty(FaultProfile.LIGHT), faulty(FaultProfile.HARSH)
    assert 0.04 < len(light) / 2000 < 0.09
    assert 0.01 < sum(f.unrecoverable for f in light) / 2000 < 0.025
    assert len(harsh) == 2000  # every harsh hub corrupts and drops a little
    assert 0.3 < sum(len(f.names()) > 2 or f.unrecoverable for f in harsh) / 2000 < 0.55
    # `dead`: dead hubs only, about one in eight, every one dead after its activation.
    dead = faulty(FaultProfile.DEAD)
    assert 0.1 < len(dead) / 2000 < 0.15
    assert {tuple(f.names()) for f in dead} == {("bricked_after_reset",)}
