"""The station: one store, one catalog, every rig and slot of the config, under one owner.

`Station.run()` opens the store (recovering hubs left mid-flash; jigd.daemon has taken the
station's lock first), the catalog, the secrets and each slot's hub driver, then runs every rig
supervisor and slot worker, the event-loop lag monitor (`jigd.looplag`) and the control API in
one TaskGroup until it is cancelled. A slot's or a rig's trouble stays its
own: workers catch what they can handle and a rig that goes away is reconnected while the others
keep working.

The catalog is verified when it is opened and on every reload (`reload_catalog`, in a thread):
an entry whose image fails is never flashed and is alerted (`catalog_entry_rejected`); so is an
entry whose image fails a flash (`image_fault`), until the next reload (docs/architecture.md,
"Firmware catalog").

While the store cannot be reached, the slots start no new hub and their store calls wait for it
(jigd.store_outage: `store_watch` says whether it is up, its probe sees it back).

To stop without harming a hub, `drain()` first (jigd.slot: hubs in the activation sequence
finish, other attempts are interrupted resumable), then cancel `run()`.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
from collections import deque
from collections.abc import Callable, Iterable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Final

from drivers.errors import DriverError
from drivers.hub_link import HubLink, LinkOptions
from drivers.registry import HubDriver, SlotParams, load_driver
from firmware_catalog import Catalog, Untrusted
from jigd.config import StationConfig
from jigd.events import AlertKind, BatchStatus, GuidResult, LinkStats, SlotStatus
from jigd.flash import FlashError
from jigd.heartbeat import beat_every, slots_json
from jigd.looplag import LoopLagMonitor
from jigd.model import DeviceModel, Guid, Outcome, SlotState, Stage
from jigd.rig import RigSupervisor
from jigd.secrets import MasterKeys, load_master_keys
from jigd.selftest import SelftestOutcome, run_selftest
from jigd.slot import SlotDeps, SlotWorker
from jigd.slot_service import SlotServices
from jigd.slot_yield import SlotYieldWatch, Suspicion
from jigd.startup import StartupError
from jigd.store import SelftestRun, SlotService, Store, StoreError, open_store, shown_url
from jigd.store_outage import GuardedStore, StoreWatch
from jigd.views import slot_view

__all__ = ["HubTimes", "Station", "StationObserver"]

_LOGGER = logging.getLogger(__name__)

RATE_WINDOW: Final = 50  # recent results used for the throughput estimate (ETA)
TIMES_KEPT: Final = 20  # recent reflashed hubs' slot times per Device Model, for expected_s


@dataclass
class StationObserver:
    """Hooks for the interfaces that watch a station (control API, MQTT, metrics)."""

    on_slot: Callable[[SlotStatus], None] = lambda status: None
    on_rig: Callable[[int, bool], None] = lambda rig, up: None
    on_result: Callable[[GuidResult, float], None] = lambda result, seconds: None
    on_rejected: Callable[[Guid, int, int, str], None] = lambda guid, rig, slot, reason: None
    # A hub that could not be identified: rig, slot, failure code, detail for a person.
    on_unidentified: Callable[[int, int, str, str], None] = lambda rig, slot, code, detail: None
    on_stage_time: Callable[[Stage, float], None] = lambda stage, seconds: None
    on_link_stats: Callable[[int, LinkStats], None] = lambda rig, stats: None
    # A slot taken out of service or put back (jigd.slot_service), and a rig's self-test.
    on_service: Callable[[SlotService], None] = lambda service: None
    on_selftest: Callable[[SelftestRun], None] = lambda run: None
    # A slot became suspect (the yield watch, jigd.slot_yield) or recovered.
    on_slot_suspect: Callable[[Suspicion], None] = lambda suspicion: None
    # The store became unreachable (False) or reachable again (True): jigd.store_outage.
    on_store: Callable[[bool], None] = lambda up: None


@dataclass
class _Throughput:
    finished: deque[float] = field(default_factory=lambda: deque(maxlen=RATE_WINDOW))

    def add(self) -> None:
        self.finished.append(time.monotonic())

    def per_second(self) -> float | None:
        if len(self.finished) < 2:
            return None
        span = self.finished[-1] - self.finished[0]
        return (len(self.finished) - 1) / span if span > 0 else None


@dataclass
class HubTimes:
    """How long recent hubs of each Device Model took in their slot (reflashed ones only, the
    usual case), so a slot can say how long its hub is expected to take: the median."""

    recent: dict[DeviceModel, deque[float]] = field(default_factory=dict)

    def add(self, model: DeviceModel, seconds: float) -> None:
        self.recent.setdefault(model, deque(maxlen=TIMES_KEPT)).append(seconds)

    def expected_s(self, model: DeviceModel) -> float | None:
        times = self.recent.get(model)
        return statistics.median(times) if times else None


class Station:
    """Everything one jigd process drives."""

    def __init__(
        self,
        config: StationConfig,
        *,
        driver: HubDriver | None = None,
        master_keys: MasterKeys | None = None,
        observers: list[StationObserver] | None = None,
    ) -> None:
        self.config = config
        self._driver = driver
        self._master_keys = master_keys
        self._observers = observers or []
        self._store: Store | None = None  # the store as everyone but the slots sees it
        self._slot_store: Store | None = None  # as the slots see it: calls wait while it is down
        self.store_watch = StoreWatch(shown_url(config.store_url), self._store_changed)
        self._catalog: Catalog | None = None
        self.rigs: list[RigSupervisor] = []
        self.throughput = _Throughput()
        self.hub_times = HubTimes()
        self.slot_yield = SlotYieldWatch(
            config.slot_yield, {rig.rig: [s.slot for s in rig.slots] for rig in config.rigs}
        )
        self.loop_lag = LoopLagMonitor()
        self.ready = asyncio.Event()
        self.started = time.monotonic()
        self._worker_tasks: dict[asyncio.Task[None], SlotWorker] = {}
        self._draining = False
        self._catalog_reload = asyncio.Lock()
        self._booted_images: set[str] = set()  # sha256 of images a hub's bootloader accepted
        self._services: SlotServices | None = None
        self._slot_driver: HubDriver | None = None
        self._selftests: dict[int, asyncio.Lock] = {}
        self._rig_up: dict[int, asyncio.Event] = {}  # set once the rig's controller answered

    @property
    def store(self) -> Store:
        if self._store is None:
            raise RuntimeError("the station is not running")
        return self._store

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            raise RuntimeError("the station is not running")
        return self._catalog

    @property
    def services(self) -> SlotServices:
        """Which slots are out of service (jigctl slot disable/enable)."""
        if self._services is None:
            raise RuntimeError("the station is not running")
        return self._services

    def disabled(self, rig: int, slot: int) -> SlotService | None:
        """Why slot `rig`/`slot` is out of service; None if it is in service (or the station
        is not running)."""
        return None if self._services is None else self._services.disabled(rig, slot)

    def rig(self, number: int) -> RigSupervisor | None:
        return next((r for r in self.rigs if r.rig == number), None)

    async def selftest(self, rig: RigSupervisor) -> SelftestOutcome:
        """Self-test `rig` now (one self-test per rig at a time), and tell the observers."""
        if self._slot_driver is None:
            raise RuntimeError("the station is not running")
        async with self._selftests.setdefault(rig.rig, asyncio.Lock()):
            outcome = await run_selftest(
                rig,
                store=self.store,
                services=self.services,
                driver=self._slot_driver,
                timeouts=self.config.timeouts,
            )
        for observer in self._observers:
            observer.on_selftest(outcome.run)
        return outcome

    async def _selftest_at_start(self, rig: RigSupervisor) -> None:
        """`[selftest] at_start`: self-test the rig once its controller first answers, before
        its slots start any hub (they are held until then, so hubs already in them are tested
        too: `run` holds them)."""
        try:
            await self._rig_up.setdefault(rig.rig, asyncio.Event()).wait()
            await self.selftest(rig)
        except StoreError as exc:
            _LOGGER.error("rig %d: self-test not recorded: %s", rig.rig, exc)  # noqa: TRY400
        finally:
            for slot, worker in rig.workers.items():
                worker.hold(self.disabled(rig.rig, slot) is not None)

    def add_observer(self, observer: StationObserver) -> None:
        self._observers.append(observer)

    async def reload_catalog(self) -> int:
        """Re-read and verify the catalog (SIGHUP, control API) in a thread while the slots go
        on; the old one stays if the new one is bad (CatalogError). Each entry that fails
        verification is alerted; what flashes had found untrusted is trusted again only if it
        passes. Returns the number of entries."""
        async with self._catalog_reload:
            await asyncio.to_thread(self.catalog.reload, verify=True)
            await self._alert_untrusted(self.catalog.untrusted())
        return len(self.catalog.entries())

    async def _booted(self, sha256: str) -> bool:
        """Whether a hub was reflashed with the image `sha256`: in this run, or in an open batch
        (so a restart does not forget it)."""
        store = self._slot_store or self.store  # a slot asks: it waits while the store is down
        if sha256 not in self._booted_images:
            for batch in await store.list_batches(BatchStatus.OPEN):
                self._booted_images.update(
                    state.image_sha256
                    for state in await store.batch_results(batch.batch_id)
                    if state.outcome is Outcome.REFLASHED and state.image_sha256 is not None
                )
        return sha256 in self._booted_images

    async def _alert_untrusted(self, untrusted: Iterable[Untrusted]) -> None:
        """One `catalog_entry_rejected` alert per entry, naming it, its sha256 and the reason."""
        for bad in untrusted:
            entry = bad.entry
            detail = (
                f"{entry.describe()} (sha256 {entry.sha256}) rejected ({bad.code}): {bad.reason}"
            )
            try:
                await self.store.record_alert(
                    AlertKind.CATALOG_ENTRY_REJECTED,
                    detail=detail,
                    model=entry.device_model,
                    reason=bad.code,
                )
            except StoreError as exc:
                _LOGGER.error("alert %s not recorded: %s", detail, exc)  # noqa: TRY400

    async def image_fault(self, error: FlashError) -> bool:
        """A flash failed because of its image: stop flashing it (until the catalog is reloaded)
        and alert, unless a bootloader refused an image other hubs have booted (that hub's
        fault). True if the image is no longer flashed."""
        entry = error.image
        if entry is None:
            return False
        if error.code == "image_rejected" and await self._booted(entry.sha256):
            return False
        reason = f"{error.stage}: {error.detail}"
        if self.catalog.distrust(entry, error.code, reason):
            await self._alert_untrusted([Untrusted(entry, error.code, reason)])
            return True
        return any(u.entry == entry for u in self.catalog.untrusted())  # already untrusted

    async def _rebuild_yield(self) -> None:
        """Fill the yield watch from the store. A slot found suspect now was alerted when its
        results were recorded: the observers hear of it (the metrics show it again), and the
        alert recorder, added once the station is ready, does not alert it twice."""
        for change in await self.slot_yield.rebuild(self.store):
            self._suspicion(change)

    def slots(self) -> list[SlotStatus]:
        return [w.status for rig in self.rigs for w in rig.workers.values()]

    def _slots_json(self) -> str:
        """The slots as the control API shows them, for the heartbeat (jigd.heartbeat)."""
        return slots_json(
            slot_view(w.status, self.disabled(rig.rig, s), self.slot_yield.suspect(rig.rig, s))
            for rig in self.rigs
            for s, w in rig.workers.items()
        )

    @property
    def draining(self) -> bool:
        return self._draining

    async def drain(self, timeout_s: float) -> bool:
        """Stop taking hubs and wait up to `timeout_s` for every slot to let go of its hub.

        Hubs in the activation sequence (mark test to lock) or a power cycle are let finish and
        recorded; every other attempt is interrupted now and resumes from the hub's state on
        the next start. True when all slots let go in time; either way, cancel `run()` next:
        what is still running then is cut, and resumes the same way.
        """
        self._draining = True
        self.store_watch.drain()  # slots waiting for the store to start a hub start none
        workers = [w for rig in self.rigs for w in rig.workers.values()]
        finishing = [w.label for w in workers if w.finishing]
        _LOGGER.info(
            "station %s: draining; %d slot(s) finishing their hub (%s), at most %g s",
            self.config.station,
            len(finishing),
            ", ".join(finishing) or "none",
            timeout_s,
        )
        for worker in workers:
            worker.drain()
        running = [t for t in self._worker_tasks if not t.done()]
        if not running:
            return True
        _, pending = await asyncio.wait(running, timeout=timeout_s)
        if pending:
            late = [self._worker_tasks[t] for t in pending]
            _LOGGER.warning(
                "station %s: %d slot(s) still busy after %g s, cut now and resumed on the next "
                "start: %s",
                self.config.station,
                len(pending),
                timeout_s,
                ", ".join(f"{w.label} at {w.status.stage}" for w in late),
            )
            return False
        _LOGGER.info("station %s: drained", self.config.station)
        return True

    async def run(self, on_ready: Callable[[], None] | None = None) -> None:
        """Run until cancelled."""
        config = self.config
        async with AsyncExitStack() as stack:
            store = await open_store(config.store_url, station=config.station)
            stack.push_async_callback(store.close)
            self._store = GuardedStore(store, self.store_watch, retry=False)
            self._slot_store = GuardedStore(store, self.store_watch, retry=True)
            interrupted = await store.recover_interrupted()
            if interrupted:
                _LOGGER.warning("%d hub(s) were mid-flash and will resume", len(interrupted))
            await self._rebuild_yield()
            self._catalog = await asyncio.to_thread(Catalog.open, config.catalog_dir, verify=True)
            await self._alert_untrusted(self._catalog.untrusted())
            master_keys = self._master_keys
            if master_keys is None:
                master_keys = await asyncio.to_thread(
                    load_master_keys, config.secrets.master_keys_file
                )
            driver = self._driver or slot_drivers(config)
            self._slot_driver = driver
            deps = SlotDeps(
                store=self._slot_store,
                catalog=lambda: self.catalog,
                master_keys=master_keys,
                driver=driver,
                pilot_models=frozenset(config.pilot_models),
                timeouts=config.timeouts,
                retries=config.retries,
                on_status=self._slot_changed,
                on_rejected=self._rejected,
                on_unidentified=self._unidentified,
                on_stage_time=self._stage_time,
                on_result=self._result,
                on_link_stats=self._link_stats,
                on_image_fault=self.image_fault,
                expected_s=self.hub_times.expected_s,
                store_waited=self.store_watch.waited,
            )
            self.rigs = [
                RigSupervisor(
                    rig,
                    deps,
                    backoff_max_s=config.retries.rig_reconnect_max_s,
                    on_rig_state=self._rig_changed,
                )
                for rig in config.rigs
            ]
            self._services = SlotServices(self.store, self.rigs, self._service_changed)
            await self._services.load()
            if config.selftest.at_start:
                for worker in (w for rig in self.rigs for w in rig.workers.values()):
                    worker.hold(True)  # until the rig's self-test (_selftest_at_start)
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self.loop_lag.run(), name="loop-lag")
                tasks.create_task(self.store_watch.probe(store), name="store-probe")
                tasks.create_task(beat_every(self.store, self._slots_json), name="heartbeat")
                for rig in self.rigs:
                    tasks.create_task(rig.run(), name=f"rig{rig.rig}")
                    for worker in rig.workers.values():
                        task = tasks.create_task(worker.run(), name=worker.label)
                        self._worker_tasks[task] = worker
                if config.selftest.at_start:
                    for rig in self.rigs:
                        tasks.create_task(self._selftest_at_start(rig), name=f"selftest{rig.rig}")
                self.ready.set()
                _LOGGER.info(
                    "station %s: %d rig(s), %d slot(s) running",
                    config.station,
                    len(self.rigs),
                    sum(len(r.workers) for r in self.rigs),
                )
                if on_ready is not None:
                    on_ready()
                # Run until cancelled, even with no rigs configured (the API still serves).
                try:
                    await asyncio.get_running_loop().create_future()
                finally:
                    # Stopping: a slot's write waiting for the store gives up; its attempt, left
                    # open in the store, is recovered as interrupted at the next start.
                    self.store_watch.close()

    def busy_slots(self) -> int:
        return sum(1 for s in self.slots() if s.state is SlotState.BUSY)

    # -- fan-out to observers --------------------------------------------------------------------

    def _slot_changed(self, status: SlotStatus) -> None:
        for observer in self._observers:
            observer.on_slot(status)

    def _store_changed(self, up: bool) -> None:
        for observer in self._observers:
            observer.on_store(up)

    def _rig_changed(self, rig: int, up: bool) -> None:
        if up:
            self._rig_up.setdefault(rig, asyncio.Event()).set()
        for observer in self._observers:
            observer.on_rig(rig, up)

    def _result(self, result: GuidResult, seconds: float) -> None:
        if result.outcome is not Outcome.NOT_RECEIVED:
            self.throughput.add()
        if result.outcome is Outcome.REFLASHED and result.image_sha256 is not None:
            self._booted_images.add(result.image_sha256)
        if result.outcome is Outcome.REFLASHED and result.model is not None:
            self.hub_times.add(result.model, seconds)
        for observer in self._observers:
            observer.on_result(result, seconds)
        change = self.slot_yield.add(result)
        if change is not None:
            self._suspicion(change)

    def _suspicion(self, change: Suspicion) -> None:
        if change.reason is None:
            _LOGGER.info("rig %d slot %d: no longer suspect", change.rig, change.slot)
        else:
            _LOGGER.warning("rig %d slot %d: suspect: %s", change.rig, change.slot, change.reason)
        for observer in self._observers:
            observer.on_slot_suspect(change)

    def _rejected(self, guid: Guid, rig: int, slot: int, reason: str) -> None:
        for observer in self._observers:
            observer.on_rejected(guid, rig, slot, reason)

    def _unidentified(self, rig: int, slot: int, code: str, detail: str) -> None:
        for observer in self._observers:
            observer.on_unidentified(rig, slot, code, detail)

    def _link_stats(self, rig: int, stats: LinkStats) -> None:
        for observer in self._observers:
            observer.on_link_stats(rig, stats)

    def _service_changed(self, service: SlotService) -> None:
        for observer in self._observers:
            observer.on_service(service)

    def _stage_time(self, stage: Stage, seconds: float) -> None:
        for observer in self._observers:
            observer.on_stage_time(stage, seconds)


def slot_drivers(config: StationConfig) -> HubDriver:
    """The hub driver that opens each slot's link: the one its `driver` key names, loaded once
    at start; one that does not load stops the start (StartupError naming the key)."""
    loaded: dict[str, HubDriver] = {}
    for i, rig in enumerate(config.rigs):
        for j, slot in enumerate(rig.slots):
            if slot.driver in loaded:
                continue
            try:
                loaded[slot.driver] = load_driver(slot.driver)
            except DriverError as exc:
                raise StartupError(f"rigs[{i}].slots[{j}].driver: {exc}") from None

    async def open_link(
        params: SlotParams, /, *, name: str | None = None, options: LinkOptions | None = None
    ) -> HubLink:
        chosen = loaded[getattr(params, "driver", "smp")]
        return await chosen(params, name=name, options=options)

    return open_link
