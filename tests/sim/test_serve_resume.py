"""`jigsim serve` killed with SIGKILL and started again resumes its bench from `<dir>/state`:
hubs keep their flash and lock state, hubs in slots stay there, pulled hubs stay pulled."""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
from pathlib import Path
from typing import Any

from smp import image_management as smpimg

from drivers import jig_group
from jigd.model import DeviceModel
from sim.cli import main as jigsim
from sim.images import make_signed_image
from sim.pallet import DEFAULT_LATEST
from sim.serve import load_keys
from tests.sim.helpers import image_hash, jigsim_serve, upload
from tests.sim.wire import LineWire, Wire, body

START_TIMEOUT_S = 20.0
POLL_S = 0.05
IMAGE_SIZE = 8192


async def _truth(process: asyncio.subprocess.Process, path: Path) -> dict[str, dict[str, Any]]:
    """The ground truth SIGUSR1 writes, by GUID."""
    await asyncio.to_thread(path.unlink, missing_ok=True)
    process.send_signal(signal.SIGUSR1)
    for _ in range(int(START_TIMEOUT_S / POLL_S)):
        if await asyncio.to_thread(path.exists):
            text = await asyncio.to_thread(path.read_text, encoding="utf-8")
            return {h["guid"]: h for h in json.loads(text)["hubs"]}
        await asyncio.sleep(POLL_S)
    raise TimeoutError(f"{path} never appeared")


def _where(truth: dict[str, dict[str, Any]]) -> dict[str, tuple[str, int | None]]:
    return {guid: (h["where"], h.get("slot")) for guid, h in truth.items()}


async def _identity(wire: Wire) -> dict[str, Any]:
    """The hub's identity, asked again while it is still booting (it hears nothing then)."""
    for _ in range(int(START_TIMEOUT_S / 0.5)):
        try:
            return body(await wire.request(jig_group.IdentityReadRequest(), 0.5))
        except TimeoutError:
            continue
    raise TimeoutError("the hub never answered")


async def _ready(process: asyncio.subprocess.Process) -> None:
    assert process.stdout is not None
    ready = await asyncio.wait_for(process.stdout.readline(), START_TIMEOUT_S)
    assert ready.startswith(b"jigsim: serving 1 rig(s) x 2 slot(s)"), ready


async def test_a_killed_simulator_resumes_flash_locks_and_piles(tmp_path: Path) -> None:
    keys_dir = tmp_path / "keys"
    assert jigsim(["keys", "--out", str(keys_dir), "--seed", "3"]) == 0
    pallet = tmp_path / "pallet.json"
    counts = ("--missing", "0", "--extra", "0", "--current", "0")
    assert jigsim(["pallet", "--hubs", "4", "--out", str(pallet), *counts]) == 0
    truth_path = tmp_path / "truth.json"
    rigs = tmp_path / "rigs"
    args = (
        *("--dir", str(rigs), "--rigs", "1", "--slots", "2"),
        *("--pallet", str(pallet), "--keys", str(keys_dir), "--ground-truth", str(truth_path)),
        *("--handling-s", "0.01", "--image-size", str(IMAGE_SIZE)),
        *("--boot-s", "0.02", "--swap-s", "0.05", "--reset-s", "0.01"),
    )
    model = DeviceModel.parse(json.loads(pallet.read_text(encoding="utf-8"))["hubs"][0]["model"])
    keys = load_keys(keys_dir, {model.manufacturer})[model.manufacturer]
    new_image = make_signed_image(keys, model, DEFAULT_LATEST, IMAGE_SIZE, 0)

    async with jigsim_serve(*args) as process:
        await _ready(process)
        with LineWire(str(rigs / "rig1" / "ctl")) as ctl:
            with Wire(str(rigs / "rig1" / "slot2")) as wire:
                # The hub in slot 2: unlocked, a new image uploaded and marked for test.
                guid = (await _identity(wire))["guid"]
                nonce = body(await wire.request(jig_group.UnlockChallengeRequest()))["nonce"]
                mac = jig_group.unlock_mac(jig_group.device_key(keys.master_key, guid), nonce, guid)
                assert body(await wire.request(jig_group.UnlockWriteRequest(mac=mac))) == {}
                assert (await upload(wire, new_image))["off"] == IMAGE_SIZE
                mark = smpimg.ImageStatesWriteRequest(hash=image_hash(new_image), confirm=False)
                assert "images" in body(await wire.request(mark))
            # The hub in slot 1 is done: the operator pulls it and inserts the next one.
            ctl.send("LED 1 GREEN")
            for line in ("OK", "EVT REMOVE 1", "EVT INSERT 1"):
                while await ctl.readline() != line:  # the insert events of the start come first
                    pass
        before = await _truth(process, truth_path)
        process.send_signal(signal.SIGKILL)
        await process.wait()

    # Where each hub was: one pulled, two in slots, one still on the pallet.
    assert sorted(_where(before).values(), key=str) == sorted(
        [("removed", None), ("slot", 1), ("slot", 2), ("pallet", None)], key=str
    )
    slot2 = next(g for g, h in before.items() if h.get("slot") == 2)
    assert before[slot2]["pending"] is True
    assert before[slot2]["locked"] is False

    async with jigsim_serve(*args) as process:
        await _ready(process)
        with Wire(str(rigs / "rig1" / "slot2")) as wire:
            assert (await _identity(wire))["locked"] is False  # booted, still unlocked
        after = await _truth(process, truth_path)
        assert _where(after) == _where(before)
        hub = after[slot2]
        # Its flash survived: powered again in its slot, it boots the new image on test
        # (the old one kept in the secondary slot), and it is still unlocked.
        assert hub["locked"] is False
        assert hub["active_sha256"] == hashlib.sha256(new_image).hexdigest()
        assert hub["confirmed"] is False
        assert hub["secondary_sha256"] == before[slot2]["active_sha256"]
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), START_TIMEOUT_S) == 0


def test_serve_refuses_a_state_of_another_pallet(tmp_path: Path, capsys: Any) -> None:
    state = tmp_path / "r" / "state"
    state.mkdir(parents=True)
    (state / "serve.json").write_text(
        json.dumps(
            {"schema": "jigsim.state/1", "seed": 99, "guids": [], "slots": [], "removed": []}
        )
    )
    rigs = ["--dir", str(tmp_path / "r"), "--rigs", "1", "--slots", "1"]
    assert jigsim(["serve", *rigs]) == 2
    err = capsys.readouterr().err
    assert "serve.json: saved for another pallet" in err
