"""A catalog image that fails at flash time stops its Device Model after the first hub.

The daemon runs in this process against `jigsim serve` (a process, real ptys), one slot, a pallet
of hubs of one Device Model loaded one after the other. Two ways an image fails a hub because of
the image: its file changed on disk after the catalog was loaded (re-verified before the hub is
unlocked), or the hubs' bootloader refuses it (the station trusts another key than the hubs
hold: `verify:image_rejected`). Either way the first hub fails, a `catalog_entry_rejected` alert
names the entry, and the next hubs of the model fail at `select` (`image_untrusted`) without
being unlocked or uploaded to, until the catalog is reloaded.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Final

import pytest

from firmware_catalog import Catalog, Status
from jigd.daemon import run_daemon
from jigd.demo import DemoOptions, Paths, prepare, sim_process, wait_for_paths
from jigd.demo.process import rig_paths
from jigd.demo.workdir import LATEST, demo_config
from jigd.manifest import parse_manifest
from jigd.model import DeviceModel, FirmwareVersion
from jigd.payloads import event_route
from jigd.station import Station
from jigd.store import GuidState, JournalEvent
from sim.faults import Faults
from sim.images import make_manufacturer_keys, make_signed_image
from sim.pallet import make_pallet, write_pallet
from tests.firmware_catalog.helpers import hand_add
from tests.firmware_catalog.test_images import corrupt

pytestmark = pytest.mark.slow  # the simulator as a process

MODEL: Final = DeviceModel.parse("1086/57310102")
SEED: Final = 31
HUBS: Final = 3
WAIT_S: Final = 90.0
OPTIONS = DemoOptions(
    hubs=HUBS, rigs=1, slots=1, faults="none", seed=SEED, image_size=32 * 1024,
    handling_s=0.05, missing=0, extra=0, current=0,
)  # fmt: skip


@dataclass
class Bench:
    station: Station
    results: list[GuidState]  # in the order the hubs were loaded
    journal: list[JournalEvent]
    alerts: list[dict[str, Any]]
    truth: dict[str, dict[str, Any]]  # by GUID, from the simulator

    def uploads(self, state: GuidState) -> int:
        """Completed uploads of the hub, as journalled."""
        return sum(
            1
            for e in self.journal
            if e.guid == state.guid
            and e.kind == "stage"
            and e.data.get("stage") == "upload"
            and str(e.data.get("detail")).startswith("uploaded ")
        )


async def _run(
    workdir: Path,
    *,
    before_start: Callable[[Paths], None] = lambda paths: None,
    after_load: Callable[[Paths], None] = lambda paths: None,
    then: Callable[[Station], Any] | None = None,
    refusing: int | None = None,
) -> Bench:
    """Prepare a station, start it, `after_load`, feed the pallet, wait for every outcome.

    `refusing`: the index on the pallet of a hub whose bootloader refuses every image."""
    options = DemoOptions(**{**OPTIONS.__dict__, "workdir": workdir})
    paths = Paths(workdir)
    await asyncio.to_thread(prepare, options, paths)
    pallet = make_pallet(
        HUBS, seed=SEED, missing=0, extra=0, current=0, models=(MODEL,), latest={MODEL: LATEST}
    )
    if refusing is not None:
        hubs = list(pallet.hubs)
        hubs[refusing] = hubs[refusing].model_copy(update={"faults": Faults(reject_image=True)})
        pallet = pallet.model_copy(update={"hubs": hubs})
    write_pallet(pallet, paths.pallet, paths.manifest)
    before_start(paths)
    ready: asyncio.Future[Station] = asyncio.get_running_loop().create_future()
    daemon = asyncio.create_task(
        run_daemon(demo_config(options, paths), on_ready=ready.set_result, handle_signals=False)
    )
    sim = sim_process(options, paths)
    if refusing is not None:  # the pallet's own faults, not a profile's
        at = sim.argv.index("--faults")
        del sim.argv[at : at + 2]
    try:
        async with asyncio.timeout(30):
            station = await ready
        after_load(paths)
        rows = parse_manifest(paths.manifest.read_bytes(), "pallet.csv")
        batch = await station.store.import_batch(rows, "WO-TRUST", "P", "pallet.csv")
        await sim.start()
        await wait_for_paths(rig_paths(options, paths), sim, 30.0)
        async with asyncio.timeout(WAIT_S):
            while True:
                if (await station.store.get_batch(batch)).pending == 0:
                    break
                await asyncio.sleep(0.1)
        results = sorted(await station.store.batch_results(batch), key=lambda s: s.started or 0)
        journal = await station.store.journal(batch_id=batch)
        alerts = [
            json.loads(m.payload)
            for m in await station.store.outbox_pending()
            if event_route(m.kind, m.data()).topic == "alerts"
        ]
        if then is not None:
            await then(station)
    finally:
        await sim.stop()
        daemon.cancel()
        await asyncio.gather(daemon, return_exceptions=True)
    truth = json.loads(paths.ground_truth.read_text("utf-8"))
    return Bench(station, results, journal, alerts, {h["guid"]: h for h in truth["hubs"]})


def _never_touched(bench: Bench, first: int = 1) -> None:
    """Every hub from `first` on failed at select and was never unlocked nor uploaded to."""
    assert len(bench.results) == HUBS
    for state in bench.results[first:]:
        assert (state.outcome, state.failure_stage, state.failure_code) == (
            "failed",
            "select",
            "image_untrusted",
        ), state
        assert bench.uploads(state) == 0
        hub = bench.truth[str(state.guid)]
        assert hub["locked"], hub
        assert hub["secondary_sha256"] is None, hub
        assert state.attempts == 1


def _one_alert(bench: Bench, reason: str, version: FirmwareVersion = LATEST) -> dict[str, Any]:
    alerts = [a for a in bench.alerts if a["kind"] == "catalog_entry_rejected"]
    assert len(alerts) == 1, bench.alerts
    (alert,) = alerts
    assert (alert["model"], alert["reason"]) == (str(MODEL), reason)
    assert f"{MODEL} {version} (sha256 " in alert["message"]
    return alert


@pytest.mark.timeout(150)
async def test_an_unsigned_image_added_by_hand_is_never_flashed(tmp_path: Path) -> None:
    """Listed in catalog.json by hand as the latest: no hub of its model is touched."""
    newer = FirmwareVersion.parse("04000008")

    def add_by_hand(paths: Paths) -> None:
        image = paths.root / "unsigned.bin"
        image.write_bytes(make_signed_image(None, MODEL, newer, OPTIONS.image_size, SEED))
        hand_add(paths.catalog, image, MODEL, str(newer))

    bench = await _run(tmp_path / "b", before_start=add_by_hand)

    _never_touched(bench, first=0)
    alert = _one_alert(bench, "image_untrusted", newer)
    assert "no valid signature by the trusted key" in alert["message"]


@pytest.mark.timeout(150)
async def test_an_image_changed_after_load_stops_its_model(tmp_path: Path) -> None:
    def tamper(paths: Paths) -> None:
        entry = Catalog.open(paths.catalog).find(MODEL, LATEST)
        assert entry is not None
        corrupt(paths.catalog / "images" / entry.image_name, 0x800)

    async def reload(station: Station) -> None:
        await station.reload_catalog()  # the file is still changed: still untrusted
        assert [u.code for u in station.catalog.untrusted()] == ["image_untrusted"]

    bench = await _run(tmp_path / "b", after_load=tamper, then=reload)

    first = bench.results[0]
    assert (first.outcome, first.failure_code) == ("failed", "image_missing")
    assert bench.uploads(first) == 0
    # Re-verified before the hub was unlocked: this hub was not touched either.
    assert bench.truth[str(first.guid)]["locked"]
    _never_touched(bench)
    alert = _one_alert(bench, "image_missing")
    assert "changed on disk" in alert["message"]


@pytest.mark.timeout(150)
async def test_an_image_the_bootloaders_refuse_stops_its_model(tmp_path: Path) -> None:
    def rekey(paths: Paths) -> None:
        """The station's catalog trusts (and is signed with) another key than the hubs hold."""
        other = make_manufacturer_keys(MODEL.manufacturer, SEED + 1000)
        shutil.rmtree(paths.catalog)
        (paths.catalog / "keys").mkdir(parents=True)
        (paths.catalog / "keys" / f"{MODEL.manufacturer_hex}.pem").write_bytes(other.public_pem())
        image = paths.root / "other-key.bin"
        image.write_bytes(make_signed_image(other, MODEL, LATEST, OPTIONS.image_size, SEED))
        Catalog.open(paths.catalog).add(image, MODEL, LATEST, Status.PRODUCTION, date(2026, 2, 1))

    async def reload(station: Station) -> None:
        await station.reload_catalog()  # the image passes every check: flashed again
        assert station.catalog.untrusted() == ()

    bench = await _run(tmp_path / "b", before_start=rekey, then=reload)

    first = bench.results[0]
    assert (first.outcome, first.failure_stage, first.failure_code) == (
        "failed",
        "verify",
        "image_rejected",
    )
    assert bench.uploads(first) == 1  # not once per attempt
    _never_touched(bench)
    _one_alert(bench, "image_rejected")


@pytest.mark.timeout(150)
async def test_a_bootloader_refusing_an_image_others_booted_stops_only_its_hub(
    tmp_path: Path,
) -> None:
    """That hub's fault (its bootloader), not the image's: the model goes on, no alert."""
    bench = await _run(tmp_path / "b", refusing=1)

    outcomes = {str(s.guid): (s.outcome, s.failure_code) for s in bench.results}
    refusing = [g for g, hub in bench.truth.items() if "reject_image" in hub["faults"]]
    assert len(refusing) == 1
    assert outcomes.pop(refusing[0]) == ("failed", "image_rejected")
    assert set(outcomes.values()) == {("reflashed", None)}
    assert [a for a in bench.alerts if a["kind"] == "catalog_entry_rejected"] == []
    assert bench.station.catalog.untrusted() == ()
