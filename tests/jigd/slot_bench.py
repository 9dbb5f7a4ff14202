"""A slot worker on a bench: the real `SlotWorker`, the real SQLite store, a real firmware
catalog and the `smp` driver, flashing a simulated hub on a real pty (`sim.harness`). The rig is
simulated: its power switches the hub's supply, its LEDs are recorded, and it can vanish as a
rig controller does (commands fail, the slot hears `rig_down`).

    async with slot_bench(tmp_path) as bench:
        batch = await bench.import_batch()
        bench.insert()                    # the rig is up and the hub is in the slot
        result = await bench.next_result()
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Final

from drivers.errors import RigClosed
from drivers.registry import load_driver
from firmware_catalog import Catalog, Status
from jigd.config import RetryConfig, SlotConfig, TimeoutConfig
from jigd.events import GuidResult, LinkStats, SlotStatus
from jigd.manifest import ManifestRow
from jigd.model import FirmwareVersion, LedColour
from jigd.secrets import MasterKeys, Secret
from jigd.slot import SlotDeps, SlotWorker
from jigd.store.sqlite import SqliteStore
from sim.faults import Faults
from sim.harness import HubHandle, running_hub
from tests.sim.helpers import FAST

__all__ = ["NEW", "TIMEOUTS", "TIMING", "SimRigPort", "SlotBench", "slot_bench"]

NEW: Final = FirmwareVersion(0x04000007)
TIMING: Final = FAST
TIMEOUTS: Final = TimeoutConfig(request_s=0.5, boot_s=5.0, stage_s=10.0, upload_s=30.0, swap_s=5.0)
STOP_TIMEOUT_S: Final = 10.0


class SimRigPort:
    """The slot's rig: power goes to the simulated hub's supply, LEDs are recorded. While `up`
    is False the controller is gone and every command fails, as `RigSupervisor`'s do."""

    def __init__(self, handle: HubHandle, number: int = 1) -> None:
        self.rig = number
        self.up = True
        self.leds: list[LedColour] = []
        self.power_offs = 0
        self._hub = handle.hub

    async def power(self, slot: int, on: bool) -> None:
        self._check()
        if on:
            self._hub.power_on()
        else:
            self.power_offs += 1
            self._hub.power_off()

    async def led(self, slot: int, colour: LedColour) -> None:
        self._check()
        self.leds.append(colour)

    def _check(self) -> None:
        if not self.up:
            raise RigClosed(f"rig{self.rig}", "the rig controller is not connected")


@dataclass
class SlotBench:
    hub: HubHandle
    rig: SimRigPort
    store: SqliteStore
    worker: SlotWorker
    catalog: Catalog
    deps: SlotDeps
    results: asyncio.Queue[GuidResult] = field(default_factory=asyncio.Queue)
    statuses: list[SlotStatus] = field(default_factory=list)
    link_stats: list[LinkStats] = field(default_factory=list)

    async def import_batch(self) -> str:
        row = ManifestRow(2, self.hub.spec.guid, self.hub.spec.model, None)
        return await self.store.import_batch([row], "WO-1", "SUPPLIER-A", "manifest.csv")

    def insert(self) -> None:
        """The rig answers and the hub is in the slot: the worker takes it."""
        self.rig.up = True
        self.worker.rig_up(True)

    def vanish(self) -> None:
        """The rig controller is lost, as `RigSupervisor` reports it to its slots."""
        self.rig.up = False
        self.worker.rig_down()

    async def next_result(self, timeout_s: float = 60.0) -> GuidResult:
        async with asyncio.timeout(timeout_s):
            return await self.results.get()

    async def idle(self, timeout_s: float = 10.0) -> None:
        """Wait until the worker has let go of its hub."""
        async with asyncio.timeout(timeout_s):
            while self.worker.handling:  # noqa: ASYNC110 - a plain property, no event
                await asyncio.sleep(0.005)


def _catalog(directory: Path, handle: HubHandle) -> Catalog:
    """A catalog trusting the hub's manufacturer, holding NEW for its Device Model."""
    model = handle.spec.model
    (directory / "keys").mkdir(parents=True)
    (directory / "keys" / f"{model.manufacturer:04X}.pem").write_bytes(handle.keys.public_pem())
    image = directory / "new.bin"
    image.write_bytes(handle.make_image(NEW, 16 * 1024))
    catalog = Catalog.open(directory)
    catalog.add(image, model, NEW, Status.PRODUCTION, date(2026, 11, 1))
    return catalog


@asynccontextmanager
async def slot_bench(
    tmp_path: Path,
    *,
    faults: Faults | None = None,
    retries: RetryConfig | None = None,
    timeouts: TimeoutConfig = TIMEOUTS,
    store_class: type[SqliteStore] = SqliteStore,
) -> AsyncIterator[SlotBench]:
    """Slot 1 of rig 1 holding one simulated hub (locked, version 01000000), its worker
    running, the rig not yet up; `store_class` may be a subclass of the SQLite store."""
    async with running_hub(tmp_path / "hub", timing=TIMING, faults=faults) as handle:
        catalog = _catalog(tmp_path / "catalog", handle)
        store = await store_class.open(tmp_path / "state" / "jigd.sqlite3")
        rig = SimRigPort(handle)
        results: asyncio.Queue[GuidResult] = asyncio.Queue()
        statuses: list[SlotStatus] = []
        link_stats: list[LinkStats] = []
        manufacturer = handle.spec.model.manufacturer
        deps = SlotDeps(
            store=store,
            catalog=lambda: catalog,
            master_keys=MasterKeys({manufacturer: Secret(handle.master_key)}, Path("keys.toml")),
            driver=load_driver("smp"),
            pilot_models=(),
            timeouts=timeouts,
            retries=retries or RetryConfig(),
            on_result=lambda result, seconds: results.put_nowait(result),
            on_status=statuses.append,
            on_link_stats=lambda rig, stats: link_stats.append(stats),
        )
        config = SlotConfig(slot=1, port=handle.path, framing="raw", baudrate=TIMING.baud)
        worker = SlotWorker(rig, config, deps)
        task = asyncio.create_task(worker.run(), name="slot bench worker")
        try:
            yield SlotBench(
                handle, rig, store, worker, catalog, deps, results, statuses, link_stats
            )
        finally:
            worker.drain()
            try:
                async with asyncio.timeout(STOP_TIMEOUT_S):
                    await task
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                await store.close()
