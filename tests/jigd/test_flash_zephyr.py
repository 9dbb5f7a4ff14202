"""The flash procedure against Zephyr's own SMP server with the jig group (`jig_hub.exe`), booted
by the project's MCUboot boot step (`sim.exe_hub`, `sim.bootloader`): real firmware, real pty.

What a real hub must do with jigd: a full flash (identify, unlock, upload, mark test, reset,
boot, verify, confirm, lock), `already_current` on a second run without an upload, an image the
bootloader refuses failing at `verify` with the old image still running, and a reset without
confirm reverting. The executable is one of the Zephyr peers (`tests/peers.py`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Final

import pytest

from drivers import serial
from drivers.hub_link import SmpHubLink, await_reset
from drivers.smp_client import SmpClient
from firmware_catalog import Catalog, CatalogEntry, Status
from jigd.config import SlotConfig, TimeoutConfig
from jigd.flash import FlashError, FlashProcedure, image_hash_of
from jigd.model import DeviceModel, FirmwareVersion, Guid, Stage
from jigd.receiver import receiver_settings
from jigd.secrets import MasterKeys, Secret
from sim.exe_hub import ExeHub
from sim.hub import HubState
from sim.images import ManufacturerKeys, make_manufacturer_keys, make_signed_image
from tests.peers import EXE_START_TIMEOUT_S as START_TIMEOUT_S
from tests.peers import served_exe_hub

GUID: Final = Guid.parse("00-DB-12-34-56-78-90-B2")
MODEL: Final = DeviceModel(0x1086, 0x57310102)
OLD: Final = FirmwareVersion(0x04000006)
NEW: Final = FirmwareVersion(0x04000007)
SEED: Final = 11
ROGUE_SEED: Final = 12  # another signing key for the same manufacturer
IMAGE_SIZE: Final = 24 * 1024  # the executable's UART runs at about 115200 baud
TIMEOUTS: Final = TimeoutConfig(request_s=1.0, boot_s=10.0, stage_s=30.0, upload_s=60.0, swap_s=5)


@dataclass
class Bench:
    hub: ExeHub
    port: Path
    keys: ManufacturerKeys
    catalog: Catalog
    entry: CatalogEntry


def _catalog(directory: Path, signer: ManufacturerKeys) -> tuple[Catalog, CatalogEntry]:
    """A catalog trusting `signer` for MODEL's manufacturer, holding NEW signed by it."""
    (directory / "keys").mkdir(parents=True)
    (directory / "keys" / f"{MODEL.manufacturer:04X}.pem").write_bytes(signer.public_pem())
    image = directory / "new.bin"
    image.write_bytes(make_signed_image(signer, MODEL, NEW, IMAGE_SIZE, SEED))
    catalog = Catalog.open(directory)
    entry = catalog.add(image, MODEL, NEW, Status.PRODUCTION, date(2026, 11, 1))
    return catalog, entry


@asynccontextmanager
async def bench(tmp_path: Path, *, catalog_signer: int = SEED) -> AsyncIterator[Bench]:
    """jig_hub.exe running OLD (locked) behind a stable pty, and a catalog holding NEW."""
    keys = make_manufacturer_keys(MODEL.manufacturer, SEED)
    signer = make_manufacturer_keys(MODEL.manufacturer, catalog_signer)
    catalog, entry = _catalog(tmp_path / "catalog", signer)
    old = make_signed_image(keys, MODEL, OLD, IMAGE_SIZE, SEED)
    async with served_exe_hub(
        tmp_path, exe="jig_hub.exe", guid=GUID, model=MODEL, keys=keys, image=old
    ) as hub:
        yield Bench(hub, tmp_path / "slot", keys, catalog, entry)


@asynccontextmanager
async def link_to(port: Path) -> AsyncIterator[SmpHubLink]:
    """A link with a console slot's default settings, as the station opens one."""
    settings = receiver_settings(SlotConfig(slot=1, port=str(port), framing="console"), None)
    options = settings.link_options(timeout_s=TIMEOUTS.request_s, request_retries=3)
    transport = await serial.open(str(port), 115200, "console", name="rig1/slot1")
    link = SmpHubLink(SmpClient(transport, timeout_s=options.timeout_s), options=options)
    try:
        yield link
    finally:
        await link.close()


def procedure(b: Bench) -> FlashProcedure:
    master_keys = MasterKeys({MODEL.manufacturer: Secret(b.keys.master_key)}, Path("keys.toml"))
    return FlashProcedure(
        catalog=b.catalog,
        master_keys=master_keys,
        pilot_models=(),
        timeouts=TIMEOUTS,
        label="rig1/slot1",
    )


async def test_full_flash_then_already_current_without_upload(tmp_path: Path) -> None:
    async with bench(tmp_path) as b:
        async with link_to(b.port) as link:
            identity = await link.identify()
            assert (identity.guid, identity.firmware_version, identity.locked) == (GUID, OLD, True)
            success = await procedure(b).run(link, identity)
        assert success.flashed
        assert success.bytes_uploaded >= b.entry.size
        truth = b.hub.truth()
        assert truth["active_version"] == str(NEW)
        assert truth["active_image_hash"] == b.entry.image_hash
        assert truth["confirmed"] is True
        assert truth["locked"] is True
        assert b.hub.last_boot is not None

        # A second run finds the hub current: nothing uploaded, nothing reset.
        starts = b.hub.starts
        async with link_to(b.port) as link:
            identity = await link.identify()
            assert identity.firmware_version == NEW
            again = procedure(b)
            success = await again.run(link, identity)
        assert not success.flashed
        assert again.bytes_uploaded == 0
        assert b.hub.starts == starts


async def test_image_signed_with_another_key_fails_at_verify_on_the_old_image(
    tmp_path: Path,
) -> None:
    """The catalog trusts a key the hub's bootloader does not: the bootloader erases the image
    and boots the old one, and the procedure fails at `verify`."""
    async with bench(tmp_path, catalog_signer=ROGUE_SEED) as b:
        async with link_to(b.port) as link:
            identity = await link.identify()
            with pytest.raises(FlashError) as caught:
                await procedure(b).run(link, identity)
        assert (caught.value.stage, caught.value.code) == (Stage.VERIFY, "image_rejected")
        truth = b.hub.truth()
        assert truth["active_version"] == str(OLD)
        assert truth["confirmed"] is True
        assert truth["secondary_image_hash"] is None  # the refused image was erased


async def test_reset_without_confirm_reverts(tmp_path: Path) -> None:
    async with bench(tmp_path) as b:
        image_hash = image_hash_of(b.entry)
        async with link_to(b.port) as link:
            await link.unlock(b.keys.master_key)
            await link.upload(b.catalog.image(b.entry).data)
            await link.mark_test(image_hash)
            await link.reset()
            await await_reset(link, timeout_s=START_TIMEOUT_S, pending_hash=image_hash)
            states = await link.image_state()
            active = next(s for s in states if s.active)
            assert (active.hash, active.confirmed) == (image_hash, False)

            starts = b.hub.starts
            await link.reset()  # no confirm: the bootloader reverts
            await b.hub.wait_until(
                lambda: b.hub.starts > starts and b.hub.state is HubState.RUNNING,
                timeout_s=START_TIMEOUT_S,
            )
            await await_reset(link, timeout_s=START_TIMEOUT_S)
            states = await link.image_state()
        active = next(s for s in states if s.active)
        assert active.version == OLD
        assert active.confirmed
        assert b.hub.truth()["active_version"] == str(OLD)
