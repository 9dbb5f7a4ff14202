"""The daemon verifies its catalog when it starts and on reload (docs/architecture.md, "Firmware
catalog"): an entry whose image fails a check is never selected, is alerted
(`catalog_entry_rejected`, naming the entry, its sha256 and the reason) and shows in the status
and in `jigctl status`. A daemon in this process (conftest's `daemon`), real signed images.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from firmware_catalog import Catalog, SelectionCode, SelectionError, Status
from jigd import control_api as api
from jigd.config import StationConfig
from jigd.ctl import main as jigctl
from jigd.daemon import run_daemon
from jigd.events import GuidResult
from jigd.flash import FlashError
from jigd.manifest import parse_manifest
from jigd.model import DeviceModel, FirmwareVersion, Outcome, Stage
from jigd.payloads import event_route
from jigd.secrets import MasterKeys
from jigd.station import Station
from sim.images import make_manufacturer_keys, make_signed_image
from tests.firmware_catalog.helpers import hand_add
from tests.firmware_catalog.test_images import corrupt

MODEL = DeviceModel.parse("1086/57310102")
GOOD = FirmwareVersion.parse("04000007")
RUNNING = FirmwareVersion.parse("03000001")
SEED = 7


def _fill(catalog_dir: Path, build: Path) -> Catalog:
    """Trusted keys of 1086 and 10AB, and MODEL 04000007 added by `jigd catalog add`."""
    (catalog_dir / "keys").mkdir(parents=True, exist_ok=True)
    build.mkdir(exist_ok=True)
    for manufacturer in (0x1086, 0x10AB):
        public = make_manufacturer_keys(manufacturer, SEED).public_pem()
        (catalog_dir / "keys" / f"{manufacturer:04X}.pem").write_bytes(public)
    catalog = Catalog.open(catalog_dir)
    image = _image(build, "04000007")
    catalog.add(image, MODEL, GOOD, Status.PRODUCTION, date(2026, 1, 31))
    return catalog


def _image(build: Path, version: str, *, signer: int | None = 0x1086) -> Path:
    keys = None if signer is None else make_manufacturer_keys(signer, SEED)
    path = build / f"{version}-{signer}.bin"
    path.write_bytes(make_signed_image(keys, MODEL, FirmwareVersion.parse(version), 4096, 1))
    return path


@pytest.fixture
def unsigned_latest(tmp_path: Path) -> dict[str, object]:
    """Before the daemon starts: an unsigned 04000010 put in catalog.json by hand."""
    _fill(tmp_path / "catalog", tmp_path / "build")
    image = _image(tmp_path / "build", "04000010", signer=None)
    return hand_add(tmp_path / "catalog", image, MODEL, "04000010")


@pytest.fixture
def tampered_latest(tmp_path: Path) -> str:
    """Before the daemon starts: the image of 04000007 changed after `add`."""
    entry = _fill(tmp_path / "catalog", tmp_path / "build").find(MODEL, GOOD)
    assert entry is not None
    corrupt(tmp_path / "catalog" / "images" / entry.image_name, 0x400)
    return entry.sha256


async def _get(station: Station, method: str, path: str) -> Any:
    connector = aiohttp.UnixConnector(path=str(station.config.control_socket))
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.request(method, f"http://jigd{path}") as response,
    ):
        assert response.status == 200, await response.text()
        return json.loads(await response.read())


async def _alerts(station: Station) -> list[dict[str, Any]]:
    return [
        json.loads(m.payload)
        for m in await station.store.outbox_pending()
        if event_route(m.kind, m.data()).topic == "alerts"
    ]


async def _until(done: Callable[[], Awaitable[bool]], timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while True:
            if await done():
                return
            await asyncio.sleep(0.01)


def _never_selected(station: Station, version: str) -> None:
    with pytest.raises(SelectionError) as caught:
        station.catalog.select(MODEL, RUNNING)
    assert caught.value.code is SelectionCode.IMAGE_UNTRUSTED
    assert f"Device Model {MODEL}, {version} (sha256 " in caught.value.detail


async def _shown(
    station: Station, version: str, sha256: str, reason: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The status (API and jigctl) and one alert name the entry, its sha256 and the reason."""
    status = await _get(station, "GET", "/v1/status")
    api.StatusResponse.model_validate(status)
    (shown,) = status["catalog_rejected"]
    assert shown["model"] == str(MODEL)
    assert (shown["firmware_version"], shown["sha256"], shown["code"]) == (
        version,
        sha256,
        "image_untrusted",
    )
    assert reason in shown["reason"]
    capsys.readouterr()
    socket = str(station.config.control_socket)
    assert await asyncio.to_thread(jigctl, ["--socket", socket, "status"]) == 0
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 80  # wrapped to the terminal
    words = " ".join(out.split())
    assert (
        " ".join(f"catalog: {MODEL} {version} NOT FLASHED (image_untrusted): {reason}".split())
        in words
    )
    assert f"  sha256 {sha256}\n" in out
    alerts = [a for a in await _alerts(station) if a["kind"] == "catalog_entry_rejected"]
    assert len(alerts) == 1, alerts
    (alert,) = alerts
    assert (alert["model"], alert["reason"]) == (str(MODEL), "image_untrusted")
    assert f"{MODEL} {version} (sha256 {sha256})" in alert["message"]
    assert reason in alert["message"]


async def test_an_unsigned_image_added_by_hand_is_rejected_when_the_daemon_starts(
    unsigned_latest: dict[str, object], daemon: Station, capsys: pytest.CaptureFixture[str]
) -> None:
    _never_selected(daemon, "04000010")
    assert [str(u.entry.firmware_version) for u in daemon.catalog.untrusted()] == ["04000010"]
    await _shown(
        daemon,
        "04000010",
        str(unsigned_latest["sha256"]),
        "no valid signature by the trusted key",
        capsys,
    )


async def test_an_image_changed_after_it_was_added_is_rejected_when_the_daemon_starts(
    tampered_latest: str, daemon: Station, capsys: pytest.CaptureFixture[str]
) -> None:
    _never_selected(daemon, "04000007")
    await _shown(daemon, "04000007", tampered_latest, "changed on disk", capsys)


async def test_a_foreign_key_image_added_by_hand_is_rejected_on_reload(
    daemon: Station, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The catalog is changed under a running daemon, which is told to reload it."""
    catalog_dir = daemon.config.catalog_dir
    _fill(catalog_dir, tmp_path / "build")
    reloaded = await _get(daemon, "POST", "/v1/catalog/reload")
    assert daemon.catalog.select(MODEL, RUNNING).firmware_version == GOOD

    # Signed, but by manufacturer 10AB's key (trusted, for 10AB's models only).
    image = _image(tmp_path / "build", "04000010", signer=0x10AB)
    entry = hand_add(catalog_dir, image, MODEL, "04000010")
    reloaded = await _get(daemon, "POST", "/v1/catalog/reload")

    _never_selected(daemon, "04000010")
    assert reloaded["entries"] == 2
    assert api.CatalogReloaded.model_validate(reloaded).to_json() == reloaded
    assert [(r["firmware_version"], r["sha256"]) for r in reloaded["rejected"]] == [
        ("04000010", entry["sha256"])
    ]
    await _shown(
        daemon, "04000010", str(entry["sha256"]), "no valid signature by the trusted key", capsys
    )

    # The fix: withdraw it (or replace the image) and reload. Never a silent fallback before.
    Catalog.open(catalog_dir).set_status(MODEL, FirmwareVersion.parse("04000010"), Status.WITHDRAWN)
    assert (await _get(daemon, "POST", "/v1/catalog/reload"))["rejected"] == []
    assert daemon.catalog.select(MODEL, RUNNING).firmware_version == GOOD
    assert (await _get(daemon, "GET", "/v1/status"))["catalog_rejected"] == []
    assert len([a for a in await _alerts(daemon) if a["kind"] == "catalog_entry_rejected"]) == 1


async def test_sighup_reloads_and_verifies_in_the_background(tmp_path: Path) -> None:
    """`systemctl reload jigd`: the catalog is verified again (in a thread), the loop goes on."""
    _fill(tmp_path / "catalog", tmp_path / "build")
    config = StationConfig(
        station="test",
        catalog_dir=tmp_path / "catalog",
        store_path=tmp_path / "state" / "jigd.sqlite3",
        control_socket=tmp_path / "run" / "control.sock",
    )
    ready: asyncio.Future[Station] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        run_daemon(
            config, master_keys=MasterKeys({}, tmp_path / "keys.toml"), on_ready=ready.set_result
        )
    )
    try:
        async with asyncio.timeout(10):
            station = await ready
        assert station.catalog.untrusted() == ()
        image = _image(tmp_path / "build", "04000010", signer=None)
        entry = hand_add(config.catalog_dir, image, MODEL, "04000010")
        os.kill(os.getpid(), signal.SIGHUP)

        async def alerted() -> bool:
            return bool(await _alerts(station))

        await _until(alerted)  # recorded once the reload has verified the catalog
        _never_selected(station, "04000010")
        assert station.catalog.untrusted()[0].entry.sha256 == entry["sha256"]
        assert [a["kind"] for a in await _alerts(station)] == ["catalog_entry_rejected"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_bootloader_refusal_distrusts_an_image_no_hub_has_booted(
    daemon: Station, tmp_path: Path
) -> None:
    """The policy behind the simulator tests (test_catalog_trust_e2e.py), including what a
    restart would forget: a hub reflashed with the image in an open batch, as the store says."""
    catalog = _fill(daemon.config.catalog_dir, tmp_path / "build")
    newer = FirmwareVersion.parse("04000008")
    image = _image(tmp_path / "build", str(newer))
    other = catalog.add(image, MODEL, newer, Status.PRODUCTION, date(2026, 2, 1))
    await daemon.reload_catalog()
    entry = daemon.catalog.find(MODEL, GOOD)
    assert entry is not None
    refused = FlashError(Stage.VERIFY, "image_rejected", "the bootloader refused it", image=entry)

    # Booted by a hub of an open batch (recorded before this daemon started): that hub's fault.
    rows = parse_manifest(
        b"guid,manufacturer,model\n00-DB-00-00-00-00-00-01,1086,57310102\n", "p.csv"
    )
    batch = await daemon.store.import_batch(rows, "WO-1", "P", "p.csv")
    guid = rows[0].guid
    attempt = await daemon.store.begin_attempt(batch, guid, 1, 1, model=MODEL, from_version=RUNNING)
    now = datetime.now(UTC)
    await daemon.store.record_result(
        GuidResult(
            batch_id=batch, guid=guid, outcome=Outcome.REFLASHED, rig=1, slot=1,
            attempts=attempt, started=now, finished=now, model=MODEL, from_version=RUNNING,
            to_version=GOOD, image_sha256=entry.sha256,
        )
    )  # fmt: skip
    assert not await daemon.image_fault(refused)
    assert daemon.catalog.untrusted() == ()

    # Never booted (the newer image): the image's fault, until the catalog is reloaded.
    unbooted = FlashError(Stage.VERIFY, "image_rejected", "the bootloader refused it", image=other)
    assert await daemon.image_fault(unbooted)
    assert [(u.entry, u.code) for u in daemon.catalog.untrusted()] == [(other, "image_rejected")]
    assert await daemon.image_fault(unbooted)  # still not flashed; alerted once
    alerts = [a for a in await _alerts(daemon) if a["kind"] == "catalog_entry_rejected"]
    assert [a["reason"] for a in alerts] == ["image_rejected"]
    _never_selected(daemon, "04000008")
    await daemon.reload_catalog()
    assert daemon.catalog.select(MODEL, RUNNING) == other
