"""`jigsim serve` as a separate process: rigs on ptys, the operator, signals, ground truth."""

from __future__ import annotations

import asyncio
import json
import signal
import tomllib
from pathlib import Path

from drivers import jig_group
from sim.cli import main as jigsim
from tests.sim.helpers import jigsim_serve
from tests.sim.wire import LineWire, Wire, body

START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
POLL_S = 0.05


def _exists(path: Path) -> bool:
    return path.exists()


async def _until(check_path: Path, *, present: bool = True) -> None:
    for _ in range(int(START_TIMEOUT_S / POLL_S)):
        if _exists(check_path) == present:
            return
        await asyncio.sleep(POLL_S)
    raise TimeoutError(f"{check_path} never {'appeared' if present else 'went'}")


async def _presence(ctl: LineWire, expected: str) -> None:
    for _ in range(int(START_TIMEOUT_S / POLL_S)):
        ctl.send("PRESENCE?")
        line = await ctl.readline()
        while not line.startswith("PRESENCE"):
            line = await ctl.readline()
        if line == f"PRESENCE {expected}":
            return
        await asyncio.sleep(POLL_S)
    raise TimeoutError(f"presence never became {expected}")


async def test_serve_runs_rigs_and_operator_and_writes_ground_truth(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    assert jigsim(["keys", "--out", str(keys), "--seed", "3"]) == 0
    pallet = tmp_path / "pallet.json"
    assert jigsim(["pallet", "--hubs", "3", "--out", str(pallet), "--missing", "1"]) == 0
    truth_path = tmp_path / "truth.json"
    rigs = tmp_path / "rigs"
    async with jigsim_serve(
        *("--dir", str(rigs), "--rigs", "1", "--slots", "2"),
        *("--pallet", str(pallet), "--keys", str(keys), "--ground-truth", str(truth_path)),
        *("--handling-s", "0.01", "--image-size", "8192"),
        *("--boot-s", "0.02", "--swap-s", "0.05", "--reset-s", "0.01"),
    ) as process:
        assert process.stdout is not None
        ready = await asyncio.wait_for(process.stdout.readline(), START_TIMEOUT_S)
        assert ready.startswith(b"jigsim: serving 1 rig(s) x 2 slot(s)")
        with LineWire(str(rigs / "rig1" / "ctl")) as ctl:
            await _presence(ctl, "11")
            with Wire(str(rigs / "rig1" / "slot2")) as wire:
                identity = body(await wire.request(jig_group.IdentityReadRequest()))
                assert identity["locked"] is True
                # The hub holds the device key derived from the --keys master key.
                master = bytes.fromhex(
                    tomllib.loads((keys / "master-keys.toml").read_text())["1086"]
                )
                nonce = body(await wire.request(jig_group.UnlockChallengeRequest()))["nonce"]
                guid = identity["guid"]
                mac = jig_group.unlock_mac(jig_group.device_key(master, guid), nonce, guid)
                assert body(await wire.request(jig_group.UnlockWriteRequest(mac=mac))) == {}
            assert await ctl.ask("LED 1 GREEN") == "OK"
            events = [await ctl.readline(), await ctl.readline()]
            assert events == ["EVT REMOVE 1", "EVT INSERT 1"]
        process.send_signal(signal.SIGUSR1)
        await _until(truth_path)
        truth = json.loads(truth_path.read_text(encoding="utf-8"))
        assert truth["schema"] == "jigsim.ground-truth/1"
        hubs = truth["hubs"]
        assert sorted(h["where"] for h in hubs) == ["removed", "slot", "slot"]
        assert len(truth["missing"]) == 1
        unlocked = [h for h in hubs if not h["locked"]]
        assert len(unlocked) == 1
        assert (unlocked[0]["rig"], unlocked[0]["slot"]) == (1, 2)
        on_pallet = json.loads(pallet.read_text(encoding="utf-8"))["hubs"]
        versions = {h["guid"]: h["firmware_version"] for h in on_pallet}
        assert {h["guid"]: h["active_version"] for h in hubs} == versions
        truth_path.unlink()
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), STOP_TIMEOUT_S) == 0
        assert json.loads(truth_path.read_text(encoding="utf-8"))["hubs"]
        assert not _exists(rigs / "rig1" / "ctl")


def test_serve_refuses_a_missing_keys_directory(tmp_path: Path) -> None:
    rigs = ["--dir", str(tmp_path / "r"), "--rigs", "1", "--slots", "1"]
    code = jigsim(["serve", *rigs, "--keys", str(tmp_path / "nokeys")])
    assert code == 2
