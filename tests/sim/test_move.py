"""Moving hubs between benches (`jigsim move`, sim/move.py, sim/move_desk.py): the request files,
a hub's record, and two `jigsim serve` processes, a hub taken mid-upload from one to the other
keeping its real state, and both benches keeping the move through a SIGKILL."""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
from pathlib import Path
from typing import Any

import pytest
from smp import image_management as smpimg

from drivers import jig_group
from jigd.model import DeviceModel, Guid
from sim.cli import main as jigsim
from sim.hub import SimHub
from sim.hub.flash import SwapKind, UploadRecord
from sim.images import make_manufacturer_keys, make_signed_image
from sim.move import (
    MOVE_IN_DIR,
    MOVE_OUT_DIR,
    MoveError,
    hub_from_record,
    hub_record,
    request_move,
    take_move_requests,
)
from sim.pallet import DEFAULT_LATEST
from sim.serve import load_keys
from sim.state import STATE_DIR
from tests.sim.helpers import FAST, jigsim_serve, upload
from tests.sim.wire import LineWire, Wire, body

START_TIMEOUT_S = 20.0
POLL_S = 0.05
IMAGE_SIZE = 16384
HALF = 8192
MODEL = DeviceModel(0x1086, 0x57310102)


def _bench(directory: Path) -> Path:
    (directory / STATE_DIR).mkdir(parents=True)
    return directory


def test_a_move_request_is_read_once_and_names_the_destination(tmp_path: Path) -> None:
    a, b = _bench(tmp_path / "a"), _bench(tmp_path / "b")
    guids = [Guid.parse("00-DB-00-00-00-00-00-01"), Guid.parse("00-DB-00-00-00-00-00-02")]
    first = request_move(a, b, guids[:1])
    request_move(a, b, guids[1:])
    assert first.parent == a / MOVE_OUT_DIR
    requests = take_move_requests(a)
    assert [(r.destination, r.guids) for r in requests] == [
        (b.resolve(), guids[:1]),
        (b.resolve(), guids[1:]),
    ]
    assert take_move_requests(a) == []  # read and removed
    with pytest.raises(FileNotFoundError, match="no `jigsim serve --dir` bench"):
        request_move(a, tmp_path / "nowhere", guids)
    with pytest.raises(MoveError, match="the bench it is on"):
        request_move(a, a, guids)


def test_jigsim_move_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = _bench(tmp_path / "a"), _bench(tmp_path / "b")
    guid = "00-DB-00-00-00-00-00-01"
    assert jigsim(["move", "--from", str(a), "--to", str(b), guid]) == 0
    assert f"move {guid} to {b}" in capsys.readouterr().out
    assert jigsim(["move", "--from", str(a), "--to", str(b), "not-a-guid"]) == 2
    assert jigsim(["move", "--from", str(tmp_path), "--to", str(b), guid]) == 2
    assert "no `jigsim serve --dir` bench" in capsys.readouterr().err
    [request] = take_move_requests(a)
    assert request.guids == [Guid.parse(guid)]


def test_a_hub_record_carries_flash_faults_and_an_unfinished_upload() -> None:
    keys = make_manufacturer_keys(MODEL.manufacturer, 0)
    old = make_signed_image(keys, MODEL, DEFAULT_LATEST, IMAGE_SIZE, 0)
    new = make_signed_image(keys, MODEL, DEFAULT_LATEST, IMAGE_SIZE, 5)
    from sim.harness import image_key_of

    hub = SimHub(
        guid=Guid.parse("00-DB-00-00-00-00-00-07"),
        model=MODEL,
        image=old,
        master_key=keys.master_key,
        image_key=image_key_of(keys),
        timing=FAST,
    )
    hub.flash.unlocked = True
    hub.flash.primary_confirmed = False
    hub.flash.pending = SwapKind.TEST
    hub.flash.upload = UploadRecord(
        sha=hashlib.sha256(new).digest(), length=len(new), data=bytearray(new[:HALF])
    )
    hub.flash.upload.erased_sectors.update({0, 1})
    hub.faults_fired.add("hang")
    record = json.loads(json.dumps(hub_record(hub, listed=False, source=Path("/a"))))
    moved = hub_from_record(record, lambda _m: keys, lambda _model: FAST, framing="raw")
    assert moved.listed is False
    assert moved.source == "/a"
    flash = moved.hub.flash
    assert flash.primary.data == old
    assert flash.unlocked is True
    assert flash.primary_confirmed is False
    assert flash.pending is SwapKind.TEST
    assert flash.upload is not None
    assert bytes(flash.upload.data) == new[:HALF]
    assert flash.upload.sha == hashlib.sha256(new).digest()
    assert flash.upload.erased_sectors == {0, 1}
    assert moved.hub.faults_fired == {"hang"}
    with pytest.raises(MoveError):
        hub_from_record({**record, "flash": {}}, lambda _m: keys, lambda _m: FAST, framing="raw")


async def _ready(process: asyncio.subprocess.Process) -> None:
    assert process.stdout is not None
    ready = await asyncio.wait_for(process.stdout.readline(), START_TIMEOUT_S)
    assert ready.startswith(b"jigsim: serving 1 rig(s) x 2 slot(s)"), ready


async def _truth(
    process: asyncio.subprocess.Process, path: Path, until: Any = None
) -> dict[str, dict[str, Any]]:
    """The ground truth SIGUSR1 writes, by GUID, asked again until `until(truth)` holds."""
    async with asyncio.timeout(START_TIMEOUT_S):
        while True:
            await asyncio.to_thread(path.unlink, missing_ok=True)
            process.send_signal(signal.SIGUSR1)
            for _ in range(int(START_TIMEOUT_S / POLL_S)):
                if await asyncio.to_thread(path.exists):
                    break
                await asyncio.sleep(POLL_S)
            text = await asyncio.to_thread(path.read_text, encoding="utf-8")
            truth = {h["guid"]: h for h in json.loads(text)["hubs"]}
            if until is None or until(truth):
                return truth
            await asyncio.sleep(POLL_S * 4)


async def _identity(wire: Wire) -> dict[str, Any]:
    for _ in range(int(START_TIMEOUT_S / 0.5)):
        try:
            return body(await wire.request(jig_group.IdentityReadRequest(), 0.5))
        except TimeoutError:
            continue
    raise TimeoutError("the hub never answered")


async def _lines_until(ctl: LineWire, wanted: str) -> None:
    async with asyncio.timeout(START_TIMEOUT_S):
        while await ctl.readline() != wanted:
            pass


async def test_a_hub_moved_mid_upload_keeps_its_state_on_the_other_bench(tmp_path: Path) -> None:
    keys_dir = tmp_path / "keys"
    assert jigsim(["keys", "--out", str(keys_dir)]) == 0
    # A model that keeps an unfinished upload in flash: moved, the hub takes it along.
    timing = tmp_path / "timing.toml"
    timing.write_text('[default]\nupload_state = "flash"\n', encoding="utf-8")
    keys = load_keys(keys_dir, {MODEL.manufacturer})[MODEL.manufacturer]
    new_image = make_signed_image(keys, MODEL, DEFAULT_LATEST, IMAGE_SIZE, 0)
    counts = ("--missing", "0", "--extra", "0", "--current", "0")
    benches = {}
    for name, seed in (("a", "1"), ("b", "2")):
        pallet = tmp_path / f"{name}.json"
        assert jigsim(["pallet", "--hubs", "3", "--seed", seed, "--out", str(pallet), *counts]) == 0
        benches[name] = (
            *("--dir", str(tmp_path / name), "--rigs", "1", "--slots", "2"),
            *("--pallet", str(pallet), "--keys", str(keys_dir)),
            *("--ground-truth", str(tmp_path / f"{name}-truth.json")),
            *("--handling-s", "0.01", "--image-size", str(IMAGE_SIZE), "--timing", str(timing)),
            *("--boot-s", "0.02", "--swap-s", "0.05", "--reset-s", "0.01"),
        )
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    a_truth, b_truth = tmp_path / "a-truth.json", tmp_path / "b-truth.json"

    async with jigsim_serve(*benches["a"]) as a, jigsim_serve(*benches["b"]) as b:
        await _ready(a)
        await _ready(b)
        with Wire(str(a_dir / "rig1" / "slot1")) as wire:
            # A station unlocks the hub in A's slot 1 and uploads half the new image.
            guid = (await _identity(wire))["guid"]
            nonce = body(await wire.request(jig_group.UnlockChallengeRequest()))["nonce"]
            mac = jig_group.unlock_mac(jig_group.device_key(keys.master_key, guid), nonce, guid)
            assert body(await wire.request(jig_group.UnlockWriteRequest(mac=mac))) == {}
            assert (await upload(wire, new_image, stop=HALF))["off"] == HALF
        moved = str(Guid.from_bytes(guid))
        old_version = (await _truth(a, a_truth))[moved]["active_version"]
        with LineWire(str(a_dir / "rig1" / "ctl")) as ctl:
            assert jigsim(["move", "--from", str(a_dir), "--to", str(b_dir), moved]) == 0
            # Pulled whatever its LED (AMBER: the station was busy with it), the slot refilled.
            await _lines_until(ctl, "EVT REMOVE 1")
            await _lines_until(ctl, "EVT INSERT 1")
        on_a = await _truth(a, a_truth)
        assert on_a[moved] == {"guid": moved, "where": "moved", "to": str(b_dir), "listed": True}
        on_b = await _truth(b, b_truth, until=lambda t: moved in t)
        hub = on_b[moved]
        assert hub["where"] == "pallet"  # on top of B's pallet: both slots are busy
        assert hub["moved_from"] == str(a_dir)
        assert hub["listed"] is True
        assert hub["active_version"] == old_version  # still the old firmware, unlocked
        assert hub["locked"] is False
        assert hub["secondary_sha256"] is None  # the upload is unfinished

        # B's slot 1 is done: its operator pulls that hub and puts the moved one in.
        with LineWire(str(b_dir / "rig1" / "ctl")) as ctl:
            ctl.send("LED 1 GREEN")
            await _lines_until(ctl, "EVT INSERT 1")
        with Wire(str(b_dir / "rig1" / "slot1")) as wire:
            assert Guid.from_bytes((await _identity(wire))["guid"]) == Guid.parse(moved)
            # The half it received on A is still in its flash: the upload resumes there.
            resume = smpimg.ImageUploadWriteRequest(
                off=0,
                data=new_image[:1024],
                len=len(new_image),
                sha=hashlib.sha256(new_image).digest(),
                image=0,
            )
            assert body(await wire.request(resume))["off"] == HALF
            assert (await upload(wire, new_image, start=HALF))["off"] == IMAGE_SIZE
        done = await _truth(b, b_truth)
        assert done[moved]["where"] == "slot"
        assert done[moved]["secondary_sha256"] == hashlib.sha256(new_image).hexdigest()
        for process in (a, b):
            process.send_signal(signal.SIGKILL)
            await process.wait()

    # Both benches keep the move through a SIGKILL: A does not get the hub back, B keeps it.
    async with jigsim_serve(*benches["a"]) as a, jigsim_serve(*benches["b"]) as b:
        await _ready(a)
        await _ready(b)
        assert (await _truth(a, a_truth))[moved]["where"] == "moved"
        again = (await _truth(b, b_truth))[moved]
        assert (again["where"], again["slot"], again["moved_from"]) == ("slot", 1, str(a_dir))
        assert again["secondary_sha256"] == hashlib.sha256(new_image).hexdigest()
        assert again["locked"] is False
        assert sorted(p.name for p in (b_dir / MOVE_IN_DIR).iterdir()) == []
        for process in (a, b):
            process.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(process.wait(), START_TIMEOUT_S) == 0
