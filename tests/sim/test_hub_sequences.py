"""Random sequences of uploads, state writes, resets and power cycles keep the hub consistent."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest
from smp import image_management as smpimg
from smp import os_management as smpos

from jigd.model import FirmwareVersion
from sim.harness import HubHandle, HubSpec, running_hub
from sim.hub import HubState
from tests.sim.helpers import FAST, image_hash, upload
from tests.sim.wire import Wire, body

STEPS = 40
BOOT_WAIT_S = 5.0


async def _step(action: str, wire: Wire, handle: HubHandle, image: bytes) -> None:
    hub = handle.hub
    if action == "upload":
        await upload(wire, image)
    elif action == "half-upload":
        await upload(wire, image, stop=len(image) // 2)
    elif action == "test":
        await wire.request(smpimg.ImageStatesWriteRequest(hash=image_hash(image), confirm=False))
    elif action == "test-secondary":
        secondary = hub.flash.secondary
        digest = secondary.tlv_hash if secondary and secondary.tlv_hash else bytes(32)
        await wire.request(smpimg.ImageStatesWriteRequest(hash=digest, confirm=False))
    elif action == "confirm":
        await wire.request(smpimg.ImageStatesWriteRequest(confirm=True))
    elif action == "reset":
        assert body(await wire.request(smpos.ResetWriteRequest())) == {}
        await hub.wait_for_state(HubState.BOOTING, timeout_s=BOOT_WAIT_S)
        await hub.wait_for_state(HubState.RUNNING, timeout_s=BOOT_WAIT_S)
    elif action == "power-cycle":
        hub.power_off()
        hub.power_on()
        await hub.wait_for_state(HubState.RUNNING, timeout_s=BOOT_WAIT_S)


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_random_operations_leave_a_consistent_hub(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    async with running_hub(tmp_path, timing=FAST, spec=HubSpec(locked=False)) as handle:
        initial = handle.hub.flash.primary.data
        images = [
            handle.make_image(FirmwareVersion.parse(v), 4096)
            for v in ("02000000", "03000000", "04000007")
        ]
        known = {hashlib.sha256(i).hexdigest() for i in [initial, *images]}
        actions = ["upload", "half-upload", "test", "test-secondary", "confirm", "reset"]
        with Wire(handle.path) as wire:
            for _ in range(STEPS):
                action = rng.choice([*actions, "power-cycle"])
                await _step(action, wire, handle, rng.choice(images))
                truth = handle.hub.truth()
                assert truth["active_sha256"] in known, action
                assert truth["state"] == "running", action
                assert body(await wire.request(smpos.EchoWriteRequest(d="ok"))) == {"r": "ok"}
                if not truth["confirmed"]:
                    assert handle.hub.flash.revert_on_boot
                    assert truth["secondary_sha256"] in known
