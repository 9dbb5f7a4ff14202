"""Prometheus metrics of a station: what operations watches on dashboards and alerts on.

`StationMetrics` owns a registry of its own, not prometheus_client's process-wide one, so two
stations (or two tests) never share counters. Its `observer()` counts what the station reports
through the `StationObserver` hooks, in memory and without blocking; `refresh()` reads what only
the store and the catalog know (outbox depth, batch progress, catalog images) and is called
every few seconds; `serve_metrics()` serves `GET /metrics` over HTTP. Names, types and labels
are a contract (docs/architecture.md, "Prometheus metrics"; docs/metrics.md): change them only
together with the docs, the alert rules and the dashboard.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter as Tally
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, NoReturn

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.metrics_core import Metric

from firmware_catalog import Catalog, Status
from jigd import __version__
from jigd.events import BatchStatus, GuidResult, LinkStats, SlotStatus
from jigd.model import Outcome, SlotState, Stage
from jigd.slot_yield import HubYield, Suspicion
from jigd.station import StationObserver
from jigd.store import BatchInfo, SelftestRun, SlotService, Store, StoreError, UnknownBatchError

__all__ = [
    "CLOSED_BATCH_KEEP_S",
    "FLASH_BUCKETS_S",
    "PENDING",
    "REFRESH_INTERVAL_S",
    "SLOT_RESULTS",
    "STAGE_BUCKETS_S",
    "UNKNOWN_MODEL",
    "MetricsServer",
    "StationMetrics",
    "make_metrics_app",
    "serve_metrics",
]

_LOGGER = logging.getLogger(__name__)

# A whole flash takes from ~10 s (already current) to the 15 min upload timeout and beyond.
FLASH_BUCKETS_S: Final = (10, 20, 30, 45, 60, 90, 120, 180, 240, 300, 420, 600, 900, 1200, 1800)
# Stages range from a fraction of a second (select, lock) to the upload's many minutes.
STAGE_BUCKETS_S: Final = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 900, 1800)
CLOSED_BATCH_KEEP_S: Final = 24 * 3600.0  # a closed batch's series stay this long, then go
REFRESH_INTERVAL_S: Final = 5.0
UNKNOWN_MODEL: Final = "unknown"  # `model` label of a hub that failed before it identified
PENDING: Final = "pending"  # `outcome` label of a batch's GUIDs that have no outcome yet
# Outcomes a slot records; `not_received` comes only from closing a batch (batch_hubs).
_FLASH_OUTCOMES: Final = (Outcome.REFLASHED, Outcome.ALREADY_CURRENT, Outcome.FAILED)
# `result` label of jigd_slot_hubs_total: good at the first attempt, good after a retry, failed.
SLOT_RESULTS: Final = ("first_pass", "retried", "failed")


def _utc_now() -> datetime:
    return datetime.now(UTC)


class _WithoutCreated:
    """Collects metrics without the `_created` series prometheus_client adds by default.

    In the text format Prometheus scrapes, `_created` becomes one more gauge per counter and
    histogram series, doubling their count for nothing the contract names. The switch that
    turns it off (`disable_created_metrics`) is process-wide, so filter here instead.
    """

    def __init__(self, metrics: Iterable[MetricWrapperBase]) -> None:
        self._metrics = tuple(metrics)

    def collect(self) -> Iterator[Metric]:
        for metric in self._metrics:
            for family in metric.collect():
                created = family.name + "_created"
                family.samples = [s for s in family.samples if s.name != created]
                yield family

    def describe(self) -> Iterator[Metric]:
        """The families, so the registry refuses a second collector with the same names."""
        return self.collect()


class StationMetrics:
    """The `jigd_*` metrics of one station, in a registry of their own (`registry`).

    `mqtt_enabled=False` leaves out `jigd_mqtt_outbox_depth` and `jigd_mqtt_connected`: without
    MQTT the outbox keeps every message by design, which is nothing to alert on.
    """

    def __init__(
        self,
        *,
        version: str = __version__,
        mqtt_enabled: bool = True,
        closed_batch_keep_s: float = CLOSED_BATCH_KEEP_S,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self._closed_batch_keep = timedelta(seconds=closed_batch_keep_s)
        self._clock = clock
        # Unregistered (registry=None): `_WithoutCreated` is what the registry collects.
        self._flashes = Counter(
            "jigd_flashes_total",
            "Hubs finished by a slot, by outcome and Device Model",
            ["outcome", "model"],
            registry=None,
        )
        self._flash_duration = Histogram(
            "jigd_flash_duration_seconds",
            "Time from a hub's identification to its result (all attempts), of reflashed hubs",
            ["model"],
            buckets=FLASH_BUCKETS_S,
            registry=None,
        )
        self._stage_duration = Histogram(
            "jigd_stage_duration_seconds",
            "Time spent in each stage of the flash procedure",
            ["stage"],
            buckets=STAGE_BUCKETS_S,
            registry=None,
        )
        self._bytes_uploaded = Counter(
            "jigd_bytes_uploaded_total",
            "Image bytes uploaded to hubs",
            ["rig"],
            registry=None,
        )
        self._link_errors = Counter(
            "jigd_link_errors_total",
            "Errors on hub links, by kind (timeout, garbage, port_error, ...)",
            ["rig", "kind"],
            registry=None,
        )
        self._link_dropped_bytes = Counter(
            "jigd_link_dropped_bytes_total",
            "Bytes the hub link decoders dropped as garbage while resynchronising",
            ["rig"],
            registry=None,
        )
        self._link_frame_bytes = Gauge(
            "jigd_link_frame_bytes",
            "Upload request frame size a slot's hub link settled on in its last upload",
            ["rig", "slot"],
            registry=None,
        )
        self._link_window = Gauge(
            "jigd_link_window",
            "Upload requests in flight a slot's hub link settled on in its last upload",
            ["rig", "slot"],
            registry=None,
        )
        self._slot_state = Gauge(
            "jigd_slot_state",
            "1 for the state a slot is in, 0 for the other states",
            ["rig", "slot", "state"],
            registry=None,
        )
        self._slot_disabled = Gauge(
            "jigd_slot_disabled",
            "1 while the slot is out of service (jigctl slot disable, or a failed self-test)",
            ["rig", "slot"],
            registry=None,
        )
        self._selftest_check = Gauge(
            "jigd_selftest_check",
            "The rig's last self-test: 1 for a check that passed, 0 for one that failed "
            "(slot empty for the controller)",
            ["rig", "slot", "check"],
            registry=None,
        )
        self._selftest_timestamp = Gauge(
            "jigd_selftest_timestamp_seconds",
            "When the rig's last self-test ran (Unix time)",
            ["rig"],
            registry=None,
        )
        self._slot_hubs = Counter(
            "jigd_slot_hubs_total",
            "Hubs finished in a slot: first_pass (good at the first attempt), retried (good "
            "after a retry), failed",
            ["rig", "slot", "result"],
            registry=None,
        )
        self._slot_suspect = Gauge(
            "jigd_slot_suspect",
            "1 while the slot yield watch finds the slot failing hubs significantly more often "
            "than the rest of its rig, else 0",
            ["rig", "slot"],
            registry=None,
        )
        self._rig_up = Gauge(
            "jigd_rig_up",
            "1 while the rig controller answers, 0 while the rig is down",
            ["rig"],
            registry=None,
        )
        self._batch_hubs = Gauge(
            "jigd_batch_hubs",
            "GUIDs of open (and recently closed) batches, by outcome; pending: no outcome yet",
            ["batch", "outcome"],
            registry=None,
        )
        self._outbox_depth = Gauge(
            "jigd_mqtt_outbox_depth",
            "MQTT messages committed and not yet published",
            registry=None,
        )
        self._store_up = Gauge(
            "jigd_store_up",
            "1 while the station's store (its database) can be reached, 0 while it is down",
            registry=None,
        )
        self._store_up.set(1)
        self._mqtt_connected = Gauge(
            "jigd_mqtt_connected",
            "1 while connected to the MQTT broker",
            registry=None,
        )
        self._catalog_images = Gauge(
            "jigd_catalog_images",
            "Firmware catalog entries, by release status",
            ["status"],
            registry=None,
        )
        self._catalog_rejected = Gauge(
            "jigd_catalog_rejected",
            "Firmware catalog entries never flashed: they failed verification, or a flash failed "
            "because of their image",
            registry=None,
        )
        self._build_info = Gauge(
            "jigd_build_info",
            "Always 1; the version of jigd is the label",
            ["version"],
            registry=None,
        )
        self._build_info.labels(version).set(1)
        for stage in Stage:
            self._stage_duration.labels(str(stage))
        for status in Status:
            self._catalog_images.labels(str(status))

        exported: list[MetricWrapperBase] = [
            self._flashes,
            self._flash_duration,
            self._stage_duration,
            self._bytes_uploaded,
            self._link_errors,
            self._link_dropped_bytes,
            self._link_frame_bytes,
            self._link_window,
            self._slot_state,
            self._slot_disabled,
            self._selftest_check,
            self._selftest_timestamp,
            self._slot_hubs,
            self._slot_suspect,
            self._rig_up,
            self._store_up,
            self._batch_hubs,
            self._catalog_images,
            self._catalog_rejected,
            self._build_info,
        ]
        if mqtt_enabled:
            exported += [self._outbox_depth, self._mqtt_connected]
        self.registry = CollectorRegistry()
        self.registry.register(_WithoutCreated(exported))

        self._slot_states: dict[tuple[int, int], SlotState] = {}
        self._suspect_set: set[tuple[int, int]] = set()  # set before their slot's first status
        self._batch_series: set[tuple[str, str]] = set()
        self._open_batches: set[str] = set()
        self._closed_batches: dict[str, BatchInfo] | None = None  # None: not read yet

    # -- the station's hooks ---------------------------------------------------------------------

    def observer(self) -> StationObserver:
        """Hooks to add to the station; each only updates counters in memory."""
        return StationObserver(
            on_slot=self._on_slot,
            on_rig=self._on_rig,
            on_result=self._on_result,
            on_stage_time=self._on_stage_time,
            on_link_stats=self._on_link_stats,
            on_service=self._on_service,
            on_selftest=self._on_selftest,
            on_slot_suspect=self._on_slot_suspect,
            on_store=lambda up: self._store_up.set(1 if up else 0),
        )

    def _on_slot(self, status: SlotStatus) -> None:
        key = (status.rig, status.slot)
        if self._slot_states.get(key) is status.state:
            return  # progress and stage changes come often; only a new state matters here
        rig, slot = str(status.rig), str(status.slot)
        if key not in self._slot_states:  # a new slot: its series from 0, for increase()
            for result in SLOT_RESULTS:
                self._slot_hubs.labels(rig, slot, result)
            if key not in self._suspect_set:
                self._slot_suspect.labels(rig, slot).set(0)
        self._slot_states[key] = status.state
        self._slot_disabled.labels(rig, slot)  # 0 until disabled
        for state in SlotState:
            self._slot_state.labels(rig, slot, str(state)).set(1 if state is status.state else 0)

    def _on_service(self, service: SlotService) -> None:
        self._slot_disabled.labels(str(service.rig), str(service.slot)).set(int(service.disabled))

    def _on_selftest(self, run: SelftestRun) -> None:
        rig = str(run.rig)
        self._selftest_timestamp.labels(rig).set(run.ts.timestamp())
        for check in run.checks:
            slot = "" if check.slot is None else str(check.slot)
            self._selftest_check.labels(rig, slot, check.check).set(int(check.passed))

    def _on_rig(self, rig: int, up: bool) -> None:
        label = str(rig)
        self._rig_up.labels(label).set(1 if up else 0)
        # Zero series from the start, so that rate() sees the first bytes.
        self._bytes_uploaded.labels(label)
        self._link_dropped_bytes.labels(label)

    def _on_result(self, result: GuidResult, seconds: float) -> None:
        model = UNKNOWN_MODEL if result.model is None else str(result.model)
        self._ensure_model(model)
        self._flashes.labels(str(result.outcome), model).inc()
        hub = HubYield.of(result)
        counted = "failed" if hub.failed else "first_pass" if hub.first_pass else "retried"
        self._slot_hubs.labels(str(result.rig), str(result.slot), counted).inc()
        if result.outcome is Outcome.REFLASHED:
            self._flash_duration.labels(model).observe(seconds)

    def _on_slot_suspect(self, change: Suspicion) -> None:
        key = (change.rig, change.slot)
        if change.reason is None:
            self._suspect_set.discard(key)
        else:
            self._suspect_set.add(key)
        self._slot_suspect.labels(str(change.rig), str(change.slot)).set(
            0 if change.reason is None else 1
        )

    def _ensure_model(self, model: str) -> None:
        """Every outcome series of a model, at 0 until counted: increase() needs a start."""
        for outcome in _FLASH_OUTCOMES:
            self._flashes.labels(str(outcome), model)

    def _on_stage_time(self, stage: Stage, seconds: float) -> None:
        self._stage_duration.labels(str(stage)).observe(seconds)

    def _on_link_stats(self, rig: int, stats: LinkStats) -> None:
        label = str(rig)
        # Counter.inc refuses negative amounts; the drivers never report any.
        self._bytes_uploaded.labels(label).inc(max(stats.bytes_uploaded, 0))
        self._link_dropped_bytes.labels(label).inc(max(stats.bytes_dropped, 0))
        for kind, count in stats.errors.items():
            if count > 0:
                self._link_errors.labels(label, kind).inc(count)
        if stats.frame_bytes is not None and stats.window is not None:
            self._link_frame_bytes.labels(label, str(stats.slot)).set(stats.frame_bytes)
            self._link_window.labels(label, str(stats.slot)).set(stats.window)

    # -- what the daemon sets --------------------------------------------------------------------

    def set_mqtt_connected(self, connected: bool) -> None:
        self._mqtt_connected.set(1 if connected else 0)

    async def refresh(self, store: Store, catalog: Catalog) -> None:
        """Read outbox depth and batch progress from the store, image counts from the catalog.

        All reads come first, so a store error (raised to the caller) changes no metric.
        """
        depth = await store.outbox_depth()
        open_batches = await store.list_batches(BatchStatus.OPEN)
        closed = await self._recently_closed(store, {b.batch_id for b in open_batches})
        images = Tally(entry.status for entry in catalog.entries())
        selftests = await store.last_selftests()

        self._outbox_depth.set(depth)
        self._set_batches([*open_batches, *closed])
        for status in Status:
            self._catalog_images.labels(str(status)).set(images[status])
        self._catalog_rejected.set(len(catalog.untrusted()))
        for run in selftests:
            self._on_selftest(run)
        for entry in catalog.entries():
            self._ensure_model(str(entry.device_model))

    async def refresh_every(
        self,
        store: Store,
        catalog: Callable[[], Catalog],
        interval_s: float = REFRESH_INTERVAL_S,
    ) -> NoReturn:
        """`refresh()` every `interval_s` until cancelled; a store error is logged, not fatal.

        `catalog` returns the current catalog (it may be reloaded while the daemon runs).
        """
        while True:
            try:
                await self.refresh(store, catalog())
            except StoreError as exc:
                _LOGGER.warning("metrics: the store could not be read, will retry: %s", exc)
            await asyncio.sleep(interval_s)

    async def _recently_closed(self, store: Store, open_ids: set[str]) -> list[BatchInfo]:
        """Batches closed less than `closed_batch_keep_s` ago; counts of a closed batch are final.

        Reads every closed batch once, at the first refresh; afterwards only those that were
        open at the previous refresh, so each refresh costs the same however long the history.
        """
        closed = self._closed_batches
        if closed is None:
            closed = {b.batch_id: b for b in await store.list_batches(BatchStatus.CLOSED)}
        for batch_id in self._open_batches - open_ids:
            try:
                info = await store.get_batch(batch_id)
            except UnknownBatchError:
                continue
            if info.status is BatchStatus.CLOSED:
                closed[batch_id] = info
        oldest = self._clock() - self._closed_batch_keep
        self._closed_batches = {
            batch_id: info
            for batch_id, info in closed.items()
            if info.closed_at is not None and info.closed_at >= oldest
        }
        self._open_batches = open_ids
        return list(self._closed_batches.values())

    def _set_batches(self, batches: Iterable[BatchInfo]) -> None:
        series: dict[tuple[str, str], int] = {}
        for info in batches:
            for outcome, count in info.counts.items():
                series[(info.batch_id, str(outcome))] = count
            series[(info.batch_id, PENDING)] = info.pending
        for gone in self._batch_series - series.keys():
            self._batch_hubs.remove(*gone)
        for (batch_id, label), count in series.items():
            self._batch_hubs.labels(batch_id, label).set(count)
        self._batch_series = set(series)

    def exposition(self) -> bytes:
        """The metrics in Prometheus' text format, as `GET /metrics` serves them."""
        return generate_latest(self.registry)


# -- HTTP ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MetricsServer:
    """Where `serve_metrics` listens; `port` is the bound one (also when asked for port 0)."""

    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"


def make_metrics_app(metrics: StationMetrics) -> web.Application:
    """The HTTP app: `GET /metrics` in Prometheus' text format."""

    async def handle(request: web.Request) -> web.Response:
        return web.Response(
            body=metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    app = web.Application()
    app.router.add_get("/metrics", handle)
    return app


@asynccontextmanager
async def serve_metrics(
    metrics: StationMetrics, host: str, port: int
) -> AsyncIterator[MetricsServer]:
    """Serve `GET /metrics` on TCP `host`:`port` while the context is open."""
    runner = web.AppRunner(make_metrics_app(metrics), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_host, bound_port = runner.addresses[0][:2]
        server = MetricsServer(str(bound_host), int(bound_port))
        _LOGGER.info("metrics on %s", server.url)
        yield server
    finally:
        await runner.cleanup()
