"""The station end to end with USB hubs: `jigd run` and `jigsim serve --transport mixed` as
separate processes (odd rigs serial, even rigs USB on the simulator's USB bus, reached through
pyusb and `sim.usb_backend`), driven as `jigd demo --transport mixed` drives them, with the books
checked against the simulator's ground truth (jigd.demo.check_books) after every run.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any, Final

import pytest

from jigd.config import load_config
from jigd.demo import DemoOptions, DemoRun, Paths
from jigd.demo.workdir import STATION
from jigd.store.sqlite import SqliteStore
from sim.harness import plug_usb, unplug_usb
from sim.serve import USB_SOCKET_FILE
from tests.jigd import e2e_helpers as e2e

pytestmark = pytest.mark.slow  # end to end with real processes: not in `make test-fast`

UNPLUGGED_S: Final = 1.0


def usb_backend(paths: Paths) -> str:
    return f"sim+unix://{(paths.sim / USB_SOCKET_FILE).resolve()}"


def _transports(workdir: Path) -> dict[int, set[str]]:
    config = load_config(Paths(workdir).config)
    return {rig.rig: {slot.transport for slot in rig.slots} for rig in config.rigs}


@pytest.mark.timeout(300)
async def test_a_usb_rig_and_a_serial_rig_in_one_batch_with_light_faults(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    options = DemoOptions(
        hubs=20,
        rigs=2,
        slots=4,
        faults="light",
        seed=11,
        workdir=workdir,
        image_size=64 * 1024,
        handling_s=0.05,
        transport="mixed",
    )
    code, lines = await e2e.demo(options)
    assert code == 0, "\n".join(lines[-60:])
    assert _transports(workdir) == {1: {"serial"}, 2: {"usb"}}
    results = e2e.results(workdir)
    reflashed = {row["rig"] for row in results if row["outcome"] == "reflashed"}
    assert reflashed == {"1", "2"}, "both the serial and the USB rig must reflash hubs"
    assert {row["outcome"] for row in results} >= {"reflashed", "not_received"}
    sim_log = (workdir / "jigsim.log").read_text("utf-8")
    assert re.search(r"USB 1-2\.\d: attached, address \d+ \(00-DB-", sim_log)
    e2e.no_hub_left_unbootable(workdir)


@pytest.mark.timeout(300)
async def test_usb_hub_unplugged_during_upload_resumes_and_is_reflashed(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    pulled: dict[str, Any] = {}

    async def pull_the_cable(run: DemoRun) -> None:
        slot = await e2e.wait_for_slot(
            run, lambda s: s["rig"] == 2 and s["stage"] == "upload" and 10 < s["progress"] < 60
        )
        port = f"1-2.{slot['slot']}"
        backend = usb_backend(run.paths)
        state = await unplug_usb(backend, port)
        assert (state["attached"], state["plugged"]) == (False, False)
        pulled.update(guid=slot["guid"], port=port, progress=slot["progress"])
        await asyncio.sleep(UNPLUGGED_S)
        state = await plug_usb(backend, port)
        assert state["plugged"] is True

    options = DemoOptions(
        hubs=8,
        rigs=2,
        slots=4,
        faults="none",
        seed=5,
        workdir=workdir,
        image_size=256 * 1024,
        handling_s=0.05,
        missing=0,
        extra=0,
        current=0,
        transport="mixed",
    )
    code, lines = await e2e.demo(options, during=pull_the_cable)
    assert code == 0, "\n".join(lines[-60:])
    assert set(pulled) == {"guid", "port", "progress"}, "no USB upload was caught in progress"
    row = next(r for r in e2e.results(workdir) if r["guid"] == pulled["guid"])
    assert (row["outcome"], row["rig"]) == ("reflashed", "2")
    assert int(row["attempts"]) == 2  # the pulled cable cost one attempt
    async with await SqliteStore.open(Paths(workdir).store, station=STATION) as store:
        events = [e for e in await store.journal() if str(e.guid) == pulled["guid"]]
    failed = [(e.data["stage"], e.data["code"]) for e in events if e.kind == "attempt_failed"]
    assert failed == [("upload", "device_disconnected")]  # the typed link error, recorded
    resumed = [
        (e.data["attempt"], int(m.group(1)))
        for e in events
        if e.kind == "stage"
        and (m := re.search(r"resumed from offset (\d+)", str(e.data.get("detail")))) is not None
    ]
    assert len(resumed) == 1, events
    attempt, offset = resumed[0]
    assert attempt == 2
    # The slot power-cycles the hub between attempts, and a hub that keeps its upload state in
    # RAM (Zephyr's img_mgmt, the simulator's default) starts that upload over.
    assert offset == 0
    e2e.no_hub_left_unbootable(workdir)
