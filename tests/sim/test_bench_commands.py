"""`jigsim image` (the hubs' own image, byte for byte) and `jigsim reinsert` (hubs put back by
the simulated operator of a running `jigsim serve`), run as the separate processes they are."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from jigd.model import Guid
from sim.cli import main as jigsim
from sim.reinsert import guids_in, request_reinsert, take_requests
from tests.sim.helpers import image_hash, jigsim_serve, state
from tests.sim.wire import LineWire, Wire

START_TIMEOUT_S = 20.0
POLL_S = 0.05
MODEL = "1086/57310102"
VERSION = "04000007"


def _jigsim(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sim.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def _until_line(ctl: LineWire, wanted: str) -> None:
    for _ in range(int(START_TIMEOUT_S / POLL_S)):
        line = await ctl.readline(timeout_s=START_TIMEOUT_S)
        if line == wanted:
            return
    raise TimeoutError(f"the rig never said {wanted!r}")


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


async def test_image_is_the_image_the_simulated_hubs_run(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    assert jigsim(["keys", "--out", str(keys), "--seed", "5"]) == 0
    pallet = tmp_path / "pallet.json"
    # Every hub already runs the latest firmware, as `jigsim image` makes it by default.
    made = _jigsim(
        *("pallet", "--hubs", "2", "--current", "2", "--extra", "0", "--missing", "0"),
        *("--seed", "5", "--out", str(pallet)),
    )
    assert made.returncode == 0, made.stderr
    image = tmp_path / "fw.bin"
    written = _jigsim(
        *("image", "--model", MODEL, "--version", VERSION, "--keys", str(keys)),
        *("--seed", "5", "--size", "8192", "--out", str(image)),
    )
    assert written.returncode == 0, written.stderr
    assert written.stdout.strip() == str(image)
    data = await asyncio.to_thread(image.read_bytes)
    assert len(data) == 8192

    truth_path = tmp_path / "truth.json"
    rigs = tmp_path / "rigs"
    async with jigsim_serve(
        *("--dir", str(rigs), "--rigs", "1", "--slots", "2", "--seed", "5"),
        *("--pallet", str(pallet), "--keys", str(keys), "--ground-truth", str(truth_path)),
        *("--handling-s", "0.01", "--image-size", "8192", "--boot-s", "0.02"),
    ) as process:
        assert process.stdout is not None
        await asyncio.wait_for(process.stdout.readline(), START_TIMEOUT_S)
        with LineWire(str(rigs / "rig1" / "ctl")) as ctl:
            await _presence(ctl, "11")
        with Wire(str(rigs / "rig1" / "slot1")) as wire:
            [active, *_] = await state(wire)
        assert active["hash"] == image_hash(data)
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), START_TIMEOUT_S) == 0
    truth = json.loads(await asyncio.to_thread(truth_path.read_text, encoding="utf-8"))
    assert {(h["active_version"], h["active_image_hash"]) for h in truth["hubs"]} == {
        (VERSION, image_hash(data).hex())
    }


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--model", "1086"), "'1086' is not a Device Model"),
        (("--version", "4.0.0"), "Firmware Version"),
        (("--keys", "no-such-dir"), "no-such-dir/master-keys.toml: cannot read it"),
    ],
)
def test_image_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, args: tuple[str, ...], says: str
) -> None:
    out = tmp_path / "fw.bin"
    done = _jigsim("image", *args, "--out", str(out))
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith("error: ")
    assert says in done.stderr
    assert not out.exists()


def test_reinsert_requests_reach_the_server_in_order(tmp_path: Path) -> None:
    bench = tmp_path / "bench"
    (bench / "state").mkdir(parents=True)
    first, second = Guid(0x00DB_0000_0000_0001), Guid(0x00DB_0000_0000_0002)
    request_reinsert(bench, [second])
    request_reinsert(bench, [first])
    assert take_requests(bench) == [second, first]
    assert take_requests(bench) == []
    text = f"batch B000001\nset aside, re-insert: {first} (rig 1 slot 2, seen 10:00:00)\n"
    assert guids_in(text.splitlines()) == [first]


def test_reinsert_without_a_bench_is_exit_2(tmp_path: Path) -> None:
    done = _jigsim("reinsert", "--dir", str(tmp_path), "00-DB-12-34-56-78-90-A0")
    assert done.returncode == 2
    assert done.stderr == f"error: {tmp_path}: no `jigsim serve --dir` bench here\n"
    bad = _jigsim("reinsert", "--dir", str(tmp_path), "not-a-guid")
    assert bad.returncode == 2
    assert bad.stderr.startswith("error: GUID 'not-a-guid'")


async def test_the_operator_of_serve_reinserts_hubs_when_told(tmp_path: Path) -> None:
    pallet = tmp_path / "pallet.json"
    made = _jigsim(
        *("pallet", "--hubs", "1", "--extra", "0", "--missing", "0", "--out", str(pallet))
    )
    assert made.returncode == 0, made.stderr
    rigs = tmp_path / "rigs"
    async with jigsim_serve(
        *("--dir", str(rigs), "--rigs", "1", "--slots", "1", "--pallet", str(pallet)),
        *("--handling-s", "0.01", "--image-size", "8192", "--boot-s", "0.02"),
    ) as process:
        assert process.stdout is not None
        await asyncio.wait_for(process.stdout.readline(), START_TIMEOUT_S)
        guid = json.loads(pallet.read_text(encoding="utf-8"))["hubs"][0]["guid"]
        with LineWire(str(rigs / "rig1" / "ctl")) as ctl:
            await _until_line(ctl, "EVT INSERT 1")
            # As a station does with a hub in no open batch: RED, and the operator pulls it.
            assert await ctl.ask("LED 1 AMBER") == "OK"
            assert await ctl.ask("LED 1 RED") == "OK"
            await _until_line(ctl, "EVT REMOVE 1")
            told = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "sim.cli", "reinsert", "--dir", str(rigs), "-"],
                input=f"set aside, re-insert: {guid} (rig 1 slot 1, seen 10:00:00)\n",
                capture_output=True,
                text=True,
                check=False,
            )
            assert (told.returncode, told.stdout) == (0, f"re-insert {guid}\n")
            await _until_line(ctl, "EVT INSERT 1")
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), START_TIMEOUT_S) == 0
