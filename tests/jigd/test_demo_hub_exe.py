"""The whole station on real Zephyr firmware: `jigd demo --hub-exe` with Zephyr's SMP server in
every occupied slot (`jigsim serve --hub-exe`: one native_sim process per hub behind the slot's
stable pty, the project's MCUboot boot step between an exit and the next start).

`jig_hub.exe` (with the jig group) must be flashed like any hub and the books must balance, with
each flash file holding the catalog's image confirmed; `smp_svr.exe` (stock Zephyr, no jig
group) must be failed at `identify` with `no_jig_group`, never unlocked or written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from jigd.demo import DemoOptions, DemoRun, Paths
from jigd.store.sqlite import SqliteStore
from sim.bootloader import SLOT0, read_flash, read_slot_image
from tests.jigd.e2e_helpers import demo, results, truth, wait_for_slot
from tests.peers import zephyr_peer

pytestmark = pytest.mark.slow  # end to end with real processes: not in `make test-fast`


def exe_demo(workdir: Path, exe: str, **options: Any) -> DemoOptions:
    """`jigd demo --hub-exe EXE` options, as the CLI sets them for Zephyr hubs."""
    return DemoOptions(
        workdir=workdir,
        hub_exe=zephyr_peer(exe),
        faults="none",
        framing="console",
        live=False,
        **options,
    )


@pytest.mark.timeout(300)
async def test_16_zephyr_hubs_on_2_rigs_balance_the_books(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    options = exe_demo(workdir, "jig_hub.exe", hubs=16, rigs=2, image_size=64 * 1024)
    code, lines = await demo(options)
    assert code == 0, "\n".join(lines[-60:])
    rows = results(workdir)
    outcomes = {row["outcome"] for row in rows}
    assert "reflashed" in outcomes
    assert outcomes <= {"reflashed", "already_current", "not_received"}
    catalog = json.loads((Paths(workdir).catalog / "catalog.json").read_text("utf-8"))
    latest = {(e["manufacturer"], e["model"]): e for e in catalog["entries"]}
    flashed = [row for row in rows if row["outcome"] in ("reflashed", "already_current")]
    assert len(flashed) >= 12
    hubs = {hub["guid"]: hub for hub in truth(workdir)["hubs"]}
    for row in flashed:
        hub = hubs[row["guid"]]
        manufacturer, model = hub["model"].split("/")
        entry = latest[(manufacturer, model)]
        # The ground truth is read from the hub's flash file: the catalog's image, confirmed.
        assert hub["active_image_hash"] == entry["image_hash"], hub
        assert hub["confirmed"] is True, hub
        assert hub["locked"] is True, hub
    for flash in (workdir / "sim" / "hubs").glob("*.bin"):
        image = read_slot_image(read_flash(flash), SLOT0)
        assert image is not None
        assert image.tlv_hash is not None


@pytest.mark.timeout(120)
async def test_stock_zephyr_hubs_fail_identify_with_no_jig_group(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    seen: list[dict[str, Any]] = []

    async def watch(run: DemoRun) -> None:
        for slot in (1, 2):
            seen.append(
                await wait_for_slot(
                    run,
                    lambda s, slot=slot: s["slot"] == slot and "no_jig_group" in s["detail"],
                    timeout_s=7,
                )
            )

    options = exe_demo(
        workdir,
        "smp_svr.exe",
        hubs=2,
        rigs=1,
        slots=2,
        image_size=16 * 1024,
        missing=0,
        extra=0,
        current=0,
        timeout_s=8,
    )
    code, lines = await demo(options, during=watch)
    # Such hubs cannot be identified, so the batch never balances: the demo gives up.
    assert code != 0
    assert len(seen) == 2, "\n".join(lines[-40:])
    for slot in seen:
        assert slot["state"] == "rejected"
        assert slot["stage"] == "identify"
        assert slot["guid"] is None
    # Never written: each flash file still holds the hub's own image, with nothing in slot 1.
    for hub in truth(workdir)["hubs"]:
        assert hub["secondary_image_hash"] is None, hub
        assert hub["pending"] is False, hub
    # Each is on record: a journalled `unidentified_hub` alert, queued for MQTT.
    async with await SqliteStore.open(Paths(workdir).store) as store:
        alerts = [e for e in await store.journal() if e.kind == "alert"]
    unidentified = [e for e in alerts if e.data["alert"] == "unidentified_hub"]
    assert sorted(e.slot or 0 for e in unidentified) == [1, 2], alerts
    assert {e.data["reason"] for e in unidentified} == {"no_jig_group"}
    assert all(e.guid is None for e in unidentified)
