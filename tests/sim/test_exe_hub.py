"""Zephyr's jig_hub.exe (native_sim) as a slot's hub: real processes on real ptys.

The executable is one of the Zephyr reference peers (`tests/peers.py`): these tests are skipped
without it, and fail under CI. Requests go through the slot's stable pty, as jigd's would.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

import pytest
from smp import image_management as smpimg
from smp import os_management as smpos

from drivers import jig_group
from jigd.model import DeviceModel, FirmwareVersion, Guid
from sim.bootloader import SwapType
from sim.exe_hub import ExeHub
from sim.hub import HubState
from sim.image_check import inspect_image
from sim.images import ManufacturerKeys, make_manufacturer_keys, make_signed_image
from tests.peers import served_exe_hub, zephyr_peer
from tests.sim.helpers import jigsim_serve
from tests.sim.wire import LineWire, Wire, body

GUID: Final = Guid.parse("00-DB-12-34-56-78-90-A1")
MODEL: Final = DeviceModel(0x10AB, 0x57310201)  # not the executable's defaults
OLD: Final = FirmwareVersion(0x03000007)
NEW: Final = FirmwareVersion(0x04000007)
SEED: Final = 3
IMAGE_SIZE: Final = 4 * 1024  # small: the executable's UART runs at about 115200 baud
CHUNK: Final = 128  # upload data per request: frames well inside the hub's 384-byte buffer
START_TIMEOUT_S: Final = 10.0  # boot step and process start, after power on or reset
SILENCE_S: Final = 0.3  # a hub without power answers nothing in this long
STOP_TIMEOUT_S: Final = 10.0
POLL_S: Final = 0.05  # looking at /proc for another process's children


@pytest.fixture
def keys() -> ManufacturerKeys:
    return make_manufacturer_keys(MODEL.manufacturer, SEED)


def _image(keys: ManufacturerKeys, version: FirmwareVersion) -> bytes:
    return make_signed_image(keys, MODEL, version, IMAGE_SIZE, SEED)


def _exe_pids(directory: Path) -> list[int]:
    """Processes still running on a flash file under `directory`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # gone meanwhile
        if any(arg.startswith(f"-flash={directory}".encode()) for arg in argv):
            found.append(int(entry.name))
    return found


@asynccontextmanager
async def _served_hub(tmp_path: Path, keys: ManufacturerKeys) -> AsyncIterator[ExeHub]:
    """jig_hub.exe running OLD, behind a stable pty at `tmp_path/slot`, powered on."""
    async with served_exe_hub(
        tmp_path, exe="jig_hub.exe", guid=GUID, model=MODEL, keys=keys, image=_image(keys, OLD)
    ) as hub:
        yield hub
    assert _exe_pids(tmp_path) == []  # cancelling serve() stopped and reaped the process


async def _restarted(hub: ExeHub, starts: int) -> None:
    """Wait until the hub's process has been started `starts` times and runs."""
    await hub.wait_until(
        lambda: hub.starts == starts and hub.state is HubState.RUNNING, timeout_s=START_TIMEOUT_S
    )


async def _unlock(wire: Wire, master_key: bytes) -> None:
    nonce = body(await wire.request(jig_group.UnlockChallengeRequest()))["nonce"]
    key = jig_group.device_key(master_key, GUID.to_bytes())
    mac = jig_group.unlock_mac(key, nonce, GUID.to_bytes())
    assert body(await wire.request(jig_group.UnlockWriteRequest(mac=mac))) == {}


async def _reset(wire: Wire, hub: ExeHub) -> None:
    """os reset: the process exits with status 1 and the hub boots again."""
    starts = hub.starts
    assert body(await wire.request(smpos.ResetWriteRequest())) == {}
    await _restarted(hub, starts + 1)


async def _upload(wire: Wire, image: bytes) -> None:
    sha = hashlib.sha256(image).digest()
    off = 0
    while off < len(image):
        data = image[off : off + CHUNK]
        request = (
            smpimg.ImageUploadWriteRequest(off=0, data=data, len=len(image), sha=sha, image=0)
            if off == 0
            else smpimg.ImageUploadWriteRequest(off=off, data=data)
        )
        off = body(await wire.request(request))["off"]


async def _state(
    wire: Wire,
    request: smpimg.ImageStatesReadRequest | smpimg.ImageStatesWriteRequest | None = None,
) -> list[str]:
    """Each slot as `slot version flags`, e.g. `0 4.0.0.7 active`."""
    answer = body(await wire.request(request or smpimg.ImageStatesReadRequest()))
    flags = ("pending", "confirmed", "active", "permanent")
    return [
        " ".join([str(i["slot"]), i["version"], *(f for f in flags if i.get(f))])
        for i in answer["images"]
    ]


async def test_exe_hub_answers_on_its_stable_port_across_reset_and_power(
    tmp_path: Path, keys: ManufacturerKeys
) -> None:
    async with _served_hub(tmp_path, keys) as hub:
        with Wire(str(tmp_path / "slot"), "console") as wire:
            echo = body(await wire.request(smpos.EchoWriteRequest(d="through the relay")))
            assert echo == {"r": "through the relay"}
            identity = body(await wire.request(jig_group.IdentityReadRequest()))
            assert identity["guid"] == GUID.to_bytes()
            assert (identity["manufacturer"], identity["model"]) == (0x10AB, 0x57310201)
            assert identity["firmware_version"] == OLD.value  # from slot 0's image header
            assert identity["locked"] is True
            await _unlock(wire, keys.master_key)
            first = hub.pid

            await _reset(wire, hub)  # same port, same open descriptor, a new process
            assert hub.resets == 1
            assert hub.pid not in (None, first)
            identity = body(await wire.request(jig_group.IdentityReadRequest()))
            assert identity["locked"] is False  # kept in the flash file's storage partition

            hub.power_off()
            await hub.wait_until(lambda: hub.pid is None, timeout_s=STOP_TIMEOUT_S)
            assert _exe_pids(tmp_path) == []
            assert hub.state is HubState.OFF
            await wire.send(smpos.EchoWriteRequest(d="lost"))  # nobody listens: discarded
            assert await wire.silent(SILENCE_S)

            hub.power_on()
            await _restarted(hub, 3)
            echo = body(await wire.request(smpos.EchoWriteRequest(d="back")))
            assert echo == {"r": "back"}
        assert hub.bytes_discarded > 0
        assert hub.truth()["locked"] is False


async def test_exe_hub_swaps_reverts_and_keeps_a_confirmed_image(
    tmp_path: Path, keys: ManufacturerKeys
) -> None:
    """Upload, test, reset: the boot step swaps; no confirm: it reverts; confirmed: it stays."""
    new = _image(keys, NEW)
    tlv_hash = inspect_image(new).tlv_hash
    async with _served_hub(tmp_path, keys) as hub:
        with Wire(str(tmp_path / "slot"), "console") as wire:
            await _unlock(wire, keys.master_key)
            await _upload(wire, new)
            test = smpimg.ImageStatesWriteRequest(hash=tlv_hash, confirm=False)
            assert await _state(wire, test) == ["0 3.0.0.7 confirmed active", "1 4.0.0.7 pending"]
            assert hub.truth()["pending"] is True

            await _reset(wire, hub)
            assert _last_swap(hub) is SwapType.TEST
            assert await _state(wire) == ["0 4.0.0.7 active", "1 3.0.0.7 confirmed"]
            identity = body(await wire.request(jig_group.IdentityReadRequest()))
            assert identity["firmware_version"] == NEW.value
            truth = hub.truth()
            assert (truth["active_version"], truth["confirmed"]) == (str(NEW), False)

            await _reset(wire, hub)  # not confirmed: MCUboot reverts
            assert _last_swap(hub) is SwapType.REVERT
            assert await _state(wire) == ["0 3.0.0.7 confirmed active", "1 4.0.0.7"]

            assert len(await _state(wire, test)) == 2  # test it again, then confirm it
            await _reset(wire, hub)
            assert _last_swap(hub) is SwapType.TEST
            confirm = smpimg.ImageStatesWriteRequest(confirm=True)
            assert await _state(wire, confirm) == ["0 4.0.0.7 confirmed active", "1 3.0.0.7"]
            await _reset(wire, hub)
            assert _last_swap(hub) is SwapType.NONE
            assert await _state(wire) == ["0 4.0.0.7 confirmed active", "1 3.0.0.7"]
        truth = hub.truth()
        assert truth["active_sha256"] == hashlib.sha256(new).hexdigest()
        assert truth["active_image_hash"] == (tlv_hash or b"").hex()
        assert (truth["confirmed"], truth["locked"], truth["pending"]) == (True, False, False)


async def test_jigsim_serve_runs_exe_hubs_with_power_cycling_and_leaves_no_process(
    tmp_path: Path,
) -> None:
    exe = zephyr_peer("jig_hub.exe")
    zephyr_peer("flash_init.bin")  # beside the executable: the default flash template
    rigs = tmp_path / "rigs"
    truth_path = tmp_path / "truth.json"
    async with jigsim_serve(
        *("--dir", str(rigs), "--rigs", "1", "--slots", "1", "--hubs", "1"),
        *("--hub-exe", str(exe), "--ground-truth", str(truth_path), "--handling-s", "0.01"),
    ) as process:
        assert process.stdout is not None
        ready = await asyncio.wait_for(process.stdout.readline(), START_TIMEOUT_S)
        assert ready.startswith(b"jigsim: serving 1 rig(s) x 1 slot(s)")
        slot = str(rigs / "rig1" / "slot1")
        with LineWire(str(rigs / "rig1" / "ctl")) as ctl, Wire(slot, "console") as wire:
            identity = await _answer(wire, jig_group.IdentityReadRequest())
            assert identity["locked"] is True
            assert len(_exe_pids(rigs)) == 1
            assert await _command(ctl, "POWER 1 OFF") == "OK"
            await _until(lambda: not _exe_pids(rigs))
            assert await _command(ctl, "POWER 1 ON") == "OK"
            again = await _answer(wire, jig_group.IdentityReadRequest())
            assert again["guid"] == identity["guid"]
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), STOP_TIMEOUT_S) == 0
        assert _exe_pids(rigs) == []
        (hub,) = json.loads(truth_path.read_text(encoding="utf-8"))["hubs"]
        assert (hub["where"], hub["locked"], hub["confirmed"]) == ("slot", True, True)
        assert hub["active_version"] is not None


async def _answer(wire: Wire, request: jig_group.IdentityReadRequest) -> dict[str, Any]:
    """Ask until the hub answers: it is booting when the slot has just been powered."""
    async with asyncio.timeout(START_TIMEOUT_S):
        while True:
            try:
                return body(await wire.request(request, SILENCE_S))
            except TimeoutError:
                continue


async def _command(ctl: LineWire, line: str) -> str:
    """The controller's answer to `line`, past any `EVT` lines."""
    ctl.send(line)
    while (answer := await ctl.readline()).startswith("EVT "):
        pass
    return answer


async def _until(check: Callable[[], bool]) -> None:
    """Poll `check` (the state of other processes) until it holds."""
    for _ in range(int(STOP_TIMEOUT_S / POLL_S)):
        if check():
            return
        await asyncio.sleep(POLL_S)
    raise TimeoutError(f"{check} never held in {STOP_TIMEOUT_S:g} s")


def _last_swap(hub: ExeHub) -> SwapType:
    assert hub.last_boot is not None
    return hub.last_boot.swap
