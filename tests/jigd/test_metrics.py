"""The Prometheus metrics: hooks and refresh give exactly the contract's series, served over
HTTP; promtool accepts the exposition and the alert rules (and their unit tests pass); the
Grafana dashboard queries only metrics that exist.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from firmware_catalog import Catalog, Status
from jigd import __version__
from jigd.events import GuidResult, LinkStats, SlotStatus
from jigd.manifest import parse_manifest
from jigd.metrics import CLOSED_BATCH_KEEP_S, StationMetrics, serve_metrics
from jigd.model import DeviceModel, FirmwareVersion, Guid, Outcome, SlotState, Stage
from jigd.slot_yield import Suspicion
from jigd.store import SelftestCheck
from jigd.store.sqlite import SqliteStore
from sim.images import make_manufacturer_keys, make_signed_image

REPO = Path(__file__).resolve().parents[2]
ALERTS = REPO / "docs" / "prometheus" / "alerts.yml"
ALERTS_TEST = REPO / "docs" / "prometheus" / "alerts_test.yml"
DASHBOARD = REPO / "docs" / "grafana" / "jigd.json"
PROMTOOL_TIMEOUT_S = 20.0
HTTP_TIMEOUT_S = 5.0

MODEL = DeviceModel.parse("1086/57310102")
OLD = FirmwareVersion.parse("03000001")
NEW = FirmwareVersion.parse("04000007")
SHA = "ab" * 32
T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
MANIFEST = b"""guid,manufacturer,model,firmware_version
00-DB-12-34-56-78-90-A0,1086,57310102,03000001
00-DB-12-34-56-78-90-A1,1086,57310102,03000001
00-DB-12-34-56-78-90-A2,1086,57310102,03000001
"""
CONTRACT = {
    "jigd_flashes_total",
    "jigd_flash_duration_seconds",
    "jigd_stage_duration_seconds",
    "jigd_bytes_uploaded_total",
    "jigd_link_errors_total",
    "jigd_link_dropped_bytes_total",
    "jigd_link_frame_bytes",
    "jigd_link_window",
    "jigd_slot_state",
    "jigd_slot_disabled",
    "jigd_selftest_check",
    "jigd_selftest_timestamp_seconds",
    "jigd_slot_hubs_total",
    "jigd_slot_suspect",
    "jigd_rig_up",
    "jigd_store_up",
    "jigd_batch_hubs",
    "jigd_mqtt_outbox_depth",
    "jigd_mqtt_connected",
    "jigd_catalog_images",
    "jigd_catalog_rejected",
    "jigd_build_info",
}
METRIC_NAME_RE = re.compile(r"\bjigd_[a-z0-9_]+")
Series = dict[tuple[str, tuple[tuple[str, str], ...]], float]


# --- promtool ---------------------------------------------------------------------------------


def promtool_binary() -> str:
    """Where promtool is; the tests run it for real and fail (never skip) without it."""
    found = shutil.which("promtool") or shutil.which("promtool", path="/usr/bin:/usr/local/bin")
    if found is None:
        pytest.fail(
            "the promtool binary is missing: the metrics tests check the exposition and the "
            "alert rules with it. Install it with `apt-get install prometheus` "
            "(`make system-deps` does this)."
        )
    return found


async def promtool(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [promtool_binary(), *args],
            input=None if stdin is None else stdin.decode(),
            capture_output=True,
            text=True,
            timeout=PROMTOOL_TIMEOUT_S,
            check=False,
        )

    return await asyncio.to_thread(run)


# --- helpers ----------------------------------------------------------------------------------


class StepClock:
    """The store's clock: one second per reading. The metrics read `now` without moving it."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


def series(text: str) -> Series:
    """Every sample of an exposition: (name, sorted labels) -> value."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def family(all_series: Series, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {labels: value for (n, labels), value in all_series.items() if n == name}


def labels(**values: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(values.items()))


def result(n: int, outcome: Outcome, *, batch_id: str = "B000001", **fields: Any) -> GuidResult:
    """A valid result of each outcome, as a slot reports it."""
    if outcome is Outcome.FAILED:
        fields.setdefault("failure_stage", Stage.VERIFY)
        fields.setdefault("failure_code", "boot_reverted")
    else:
        from_version = NEW if outcome is Outcome.ALREADY_CURRENT else OLD
        fields.update(from_version=from_version, to_version=NEW, image_sha256=SHA)
    fields.setdefault("model", MODEL)
    return GuidResult(
        batch_id=batch_id,
        guid=Guid(0x00DB_1234_5678_90A0 + n),
        outcome=outcome,
        rig=1,
        slot=1 + n % 8,
        attempts=1,
        started=T0,
        finished=T0 + timedelta(minutes=3),
        **fields,
    )


def drive_hooks(metrics: StationMetrics) -> None:
    """What a station with rig 1 (two slots) up and rig 2 (one slot) down reports."""
    observer = metrics.observer()
    observer.on_rig(1, True)
    observer.on_rig(2, False)
    observer.on_slot(SlotStatus(1, 1, SlotState.EMPTY))
    observer.on_slot(SlotStatus(1, 1, SlotState.BUSY, stage=Stage.IDENTIFY))
    observer.on_slot(SlotStatus(1, 1, SlotState.BUSY, stage=Stage.UPLOAD, progress=42.5))
    observer.on_slot(SlotStatus(1, 2, SlotState.BUSY))
    observer.on_slot(SlotStatus(1, 2, SlotState.DONE, outcome=Outcome.REFLASHED))
    observer.on_slot(SlotStatus(2, 1, SlotState.OFFLINE))
    observer.on_stage_time(Stage.UPLOAD, 95.0)
    observer.on_stage_time(Stage.VERIFY, 0.3)
    observer.on_stage_time(Stage.VERIFY, 0.7)
    observer.on_result(result(0, Outcome.REFLASHED), 120.0)
    observer.on_result(result(1, Outcome.ALREADY_CURRENT), 12.0)
    # A hub that never identified has no Device Model.
    observer.on_result(result(2, Outcome.FAILED, model=None, failure_stage=Stage.IDENTIFY), 40.0)
    observer.on_link_stats(1, LinkStats(4096, {"timeout": 2, "garbage": 1, "idle_reset": 0}, 17))
    observer.on_link_stats(1, LinkStats(1024, {"timeout": 1}, 0, slot=3, frame_bytes=176, window=2))
    # The yield watch suspects slot 1/2, and suspected 1/1 before it recovered.
    observer.on_slot_suspect(Suspicion(1, 2, "3 of its last 5 hubs failed", 1e-6))
    observer.on_slot_suspect(Suspicion(1, 1, "4 of its last 6 hubs failed", 1e-6))
    observer.on_slot_suspect(Suspicion(1, 1, None, 0.4))
    metrics.set_mqtt_connected(True)


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def clock() -> StepClock:
    return StepClock()


@pytest.fixture
async def store(tmp_path: Path, clock: StepClock) -> AsyncIterator[SqliteStore]:
    async with await SqliteStore.open(tmp_path / "jigd.sqlite3", clock=clock) as opened:
        yield opened


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    """A real catalog: one production, one pilot and one withdrawn image of MODEL."""
    directory = tmp_path / "catalog"
    (directory / "keys").mkdir(parents=True)
    keys = make_manufacturer_keys(MODEL.manufacturer, 7)
    (directory / "keys" / f"{MODEL.manufacturer_hex}.pem").write_bytes(keys.public_pem())
    catalog = Catalog.open(directory)
    for version, status in [
        ("03000001", Status.WITHDRAWN),
        ("04000007", Status.PRODUCTION),
        ("04000008", Status.PILOT),
    ]:
        image = tmp_path / f"{version}.bin"
        image.write_bytes(make_signed_image(keys, MODEL, FirmwareVersion.parse(version), 4096, 0))
        catalog.add(image, MODEL, FirmwareVersion.parse(version), status, date(2026, 1, 31))
    catalog.reload()
    return catalog


async def import_batch(store: SqliteStore, source: str = "pallet-7.csv") -> str:
    rows = parse_manifest(MANIFEST, source)
    return await store.import_batch(rows, "WO-2026-0142", "SUPPLIER-A", source)


async def flash(store: SqliteStore, batch_id: str, n: int, outcome: Outcome) -> None:
    guid = Guid(0x00DB_1234_5678_90A0 + n)
    attempt = await store.begin_attempt(batch_id, guid, 1, 1, model=MODEL, from_version=OLD)
    await store.record_result(replace(result(n, outcome, batch_id=batch_id), attempts=attempt))


@dataclass
class Driven:
    metrics: StationMetrics
    batch_id: str
    outbox_depth: int


@pytest.fixture
async def driven(store: SqliteStore, catalog: Catalog, clock: StepClock) -> Driven:
    """Metrics after realistic hook calls and a refresh from a real store and catalog."""
    metrics = StationMetrics(clock=lambda: clock.now)
    drive_hooks(metrics)
    batch_id = await import_batch(store)
    await flash(store, batch_id, 0, Outcome.REFLASHED)
    checks = [SelftestCheck(None, "controller", True), SelftestCheck(3, "led", False, "refused")]
    await store.record_selftest(1, checks)
    await metrics.refresh(store, catalog)
    return Driven(metrics, batch_id, await store.outbox_depth())


@dataclass
class Scraped:
    text: str
    content_type: str


async def scrape(metrics: StationMetrics) -> Scraped:
    """GET /metrics over TCP from `serve_metrics` on a port the OS picks."""
    async with (
        serve_metrics(metrics, "127.0.0.1", 0) as server,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S)) as session,
    ):
        assert server.port != 0
        assert server.url == f"http://127.0.0.1:{server.port}/metrics"
        async with session.get(server.url) as response:
            assert response.status == 200
            return Scraped(await response.text(), response.headers["Content-Type"])


@pytest.fixture
async def exposition(driven: Driven) -> str:
    return (await scrape(driven.metrics)).text


# --- the hooks and refresh give exactly the contract's series ----------------------------------


async def test_exposition_has_exactly_the_contract_families(exposition: str) -> None:
    names = {f.name + ("_total" if f.type == "counter" else "") for f in _families(exposition)}
    assert names == CONTRACT
    assert not [name for name, _ in series(exposition) if name.endswith("_created")]


def _families(text: str) -> list[Any]:
    return list(text_string_to_metric_families(text))


async def test_served_over_http_in_prometheus_text_format(driven: Driven) -> None:
    scraped = await scrape(driven.metrics)
    assert scraped.content_type == CONTENT_TYPE_LATEST
    assert scraped.text.encode() == driven.metrics.exposition()


async def test_results_count_by_outcome_and_model(exposition: str) -> None:
    model = str(MODEL)
    assert family(series(exposition), "jigd_flashes_total") == {
        labels(outcome="reflashed", model=model): 1,
        labels(outcome="already_current", model=model): 1,
        labels(outcome="failed", model=model): 0,
        labels(outcome="reflashed", model="unknown"): 0,
        labels(outcome="already_current", model="unknown"): 0,
        labels(outcome="failed", model="unknown"): 1,
    }


async def test_flash_duration_is_of_reflashed_hubs(exposition: str) -> None:
    found = series(exposition)
    count = family(found, "jigd_flash_duration_seconds_count")
    assert count == {labels(model=str(MODEL)): 1}
    assert family(found, "jigd_flash_duration_seconds_sum") == {labels(model=str(MODEL)): 120}
    buckets = family(found, "jigd_flash_duration_seconds_bucket")
    assert buckets[labels(model=str(MODEL), le="90.0")] == 0
    assert buckets[labels(model=str(MODEL), le="120.0")] == 1
    assert buckets[labels(model=str(MODEL), le="1800.0")] == 1
    assert buckets[labels(model=str(MODEL), le="+Inf")] == 1


async def test_stage_durations_by_stage_every_stage_present(exposition: str) -> None:
    found = series(exposition)
    counts = family(found, "jigd_stage_duration_seconds_count")
    assert counts == {
        labels(stage=str(s)): {Stage.UPLOAD: 1, Stage.VERIFY: 2}.get(s, 0) for s in Stage
    }
    sums = family(found, "jigd_stage_duration_seconds_sum")
    assert sums[labels(stage="upload")] == 95.0
    assert sums[labels(stage="verify")] == pytest.approx(1.0)
    buckets = family(found, "jigd_stage_duration_seconds_bucket")
    assert buckets[labels(stage="verify", le="0.25")] == 0
    assert buckets[labels(stage="verify", le="0.5")] == 1
    assert buckets[labels(stage="verify", le="1.0")] == 2


async def test_link_statistics_add_up_per_rig(exposition: str) -> None:
    found = series(exposition)
    assert family(found, "jigd_bytes_uploaded_total") == {
        labels(rig="1"): 5120,
        labels(rig="2"): 0,
    }
    assert family(found, "jigd_link_errors_total") == {
        labels(rig="1", kind="timeout"): 3,
        labels(rig="1", kind="garbage"): 1,
    }
    assert family(found, "jigd_link_dropped_bytes_total") == {
        labels(rig="1"): 17,
        labels(rig="2"): 0,
    }
    # Only a link that uploaded reports what its sizing settled on.
    assert family(found, "jigd_link_frame_bytes") == {labels(rig="1", slot="3"): 176}
    assert family(found, "jigd_link_window") == {labels(rig="1", slot="3"): 2}


async def test_slot_state_is_one_for_the_current_state_zero_for_the_others(
    exposition: str,
) -> None:
    current = {
        ("1", "1"): SlotState.BUSY,
        ("1", "2"): SlotState.DONE,
        ("2", "1"): SlotState.OFFLINE,
    }
    assert family(series(exposition), "jigd_slot_state") == {
        labels(rig=rig, slot=slot, state=str(state)): 1 if state is now else 0
        for (rig, slot), now in current.items()
        for state in SlotState
    }


async def test_slot_results_and_suspect_slots(exposition: str) -> None:
    found = series(exposition)
    hubs = family(found, "jigd_slot_hubs_total")
    # Every result of every slot seen is there from 0; a result counts in its own slot.
    assert hubs == {
        labels(rig=rig, slot=slot, result=kind): count
        for (rig, slot, kind), count in {
            **{
                (rig, slot, kind): 0
                for rig, slot in (("1", "1"), ("1", "2"), ("2", "1"))
                for kind in ("first_pass", "retried", "failed")
            },
            ("1", "1", "first_pass"): 1,
            ("1", "2", "first_pass"): 1,
            ("1", "3", "failed"): 1,
        }.items()
    }
    assert family(found, "jigd_slot_suspect") == {
        labels(rig="1", slot="1"): 0,
        labels(rig="1", slot="2"): 1,
        labels(rig="2", slot="1"): 0,
    }


async def test_rigs_mqtt_build_info(exposition: str, driven: Driven) -> None:
    found = series(exposition)
    assert family(found, "jigd_rig_up") == {labels(rig="1"): 1, labels(rig="2"): 0}
    assert family(found, "jigd_mqtt_connected") == {(): 1}
    assert family(found, "jigd_build_info") == {labels(version=__version__): 1}
    driven.metrics.set_mqtt_connected(False)
    assert family(series(driven.metrics.exposition().decode()), "jigd_mqtt_connected") == {(): 0}


async def test_refresh_reads_outbox_batches_and_catalog(exposition: str, driven: Driven) -> None:
    found = series(exposition)
    assert driven.outbox_depth > 0  # the result and the batch summary wait for MQTT
    assert family(found, "jigd_mqtt_outbox_depth") == {(): driven.outbox_depth}
    assert family(found, "jigd_batch_hubs") == {
        labels(batch=driven.batch_id, outcome="reflashed"): 1,
        labels(batch=driven.batch_id, outcome="already_current"): 0,
        labels(batch=driven.batch_id, outcome="failed"): 0,
        labels(batch=driven.batch_id, outcome="not_received"): 0,
        labels(batch=driven.batch_id, outcome="pending"): 2,
    }
    assert family(found, "jigd_catalog_images") == {
        labels(status="production"): 1,
        labels(status="pilot"): 1,
        labels(status="withdrawn"): 1,
    }
    assert family(found, "jigd_catalog_rejected") == {(): 0}


async def test_catalog_entries_never_flashed_are_counted(
    store: SqliteStore, catalog: Catalog
) -> None:
    """Verified when read: a changed image is untrusted; a flash can distrust another."""
    production = catalog.find(MODEL, NEW)
    pilot = catalog.find(MODEL, FirmwareVersion.parse("04000008"))
    assert production is not None
    assert pilot is not None
    (catalog.directory / "images" / pilot.image_name).write_bytes(b"changed")
    catalog.reload(verify=True)
    metrics = StationMetrics()
    await metrics.refresh(store, catalog)
    assert family(series(metrics.exposition().decode()), "jigd_catalog_rejected") == {(): 1}
    catalog.distrust(production, "image_rejected", "verify: the bootloader refused it")
    await metrics.refresh(store, catalog)
    assert family(series(metrics.exposition().decode()), "jigd_catalog_rejected") == {(): 2}


async def test_closed_batch_stays_for_a_while_then_goes(
    store: SqliteStore, catalog: Catalog, clock: StepClock
) -> None:
    metrics = StationMetrics(clock=lambda: clock.now)
    first = await import_batch(store, "pallet-7.csv")
    await flash(store, first, 0, Outcome.FAILED)
    await metrics.refresh(store, catalog)
    await store.close_batch(first)
    second = await import_batch(store, "pallet-8.csv")  # the same GUIDs: the first is closed

    await metrics.refresh(store, catalog)
    batches = family(series(metrics.exposition().decode()), "jigd_batch_hubs")
    assert {k: v for k, v in batches.items() if ("batch", first) in k} == {
        labels(batch=first, outcome="reflashed"): 0,
        labels(batch=first, outcome="already_current"): 0,
        labels(batch=first, outcome="failed"): 1,
        labels(batch=first, outcome="not_received"): 2,
        labels(batch=first, outcome="pending"): 0,
    }
    assert batches[labels(batch=second, outcome="pending")] == 3

    clock.now += timedelta(seconds=CLOSED_BATCH_KEEP_S + 60)
    await metrics.refresh(store, catalog)
    batches = family(series(metrics.exposition().decode()), "jigd_batch_hubs")
    assert {dict(k)["batch"] for k in batches} == {second}


async def test_recently_closed_batches_are_shown_after_a_restart(
    store: SqliteStore, catalog: Catalog, clock: StepClock
) -> None:
    old = await import_batch(store, "pallet-6.csv")
    await store.close_batch(old)
    clock.now += timedelta(seconds=CLOSED_BATCH_KEEP_S + 60)
    recent = await import_batch(store, "pallet-7.csv")
    await store.close_batch(recent)

    metrics = StationMetrics(clock=lambda: clock.now)  # a new process
    await metrics.refresh(store, catalog)
    batches = family(series(metrics.exposition().decode()), "jigd_batch_hubs")
    assert {dict(k)["batch"] for k in batches} == {recent}
    assert batches[labels(batch=recent, outcome="not_received")] == 3


async def test_catalog_models_have_zero_flash_series_before_any_result(
    store: SqliteStore, catalog: Catalog
) -> None:
    """So that increase() counts a model's first failure (the failure-rate alert)."""
    metrics = StationMetrics()
    await metrics.refresh(store, catalog)
    assert family(series(metrics.exposition().decode()), "jigd_flashes_total") == {
        labels(outcome=o, model=str(MODEL)): 0 for o in ("reflashed", "already_current", "failed")
    }


async def test_without_mqtt_there_are_no_mqtt_series(store: SqliteStore, catalog: Catalog) -> None:
    metrics = StationMetrics(mqtt_enabled=False)
    await metrics.refresh(store, catalog)
    names = {name for name, _ in series(metrics.exposition().decode())}
    assert "jigd_mqtt_outbox_depth" not in names
    assert "jigd_mqtt_connected" not in names
    assert "jigd_catalog_images" in names


async def test_empty_catalog_counts_zero_images(store: SqliteStore, tmp_path: Path) -> None:
    metrics = StationMetrics()
    (tmp_path / "empty").mkdir()
    await metrics.refresh(store, Catalog.open(tmp_path / "empty"))
    assert family(series(metrics.exposition().decode()), "jigd_catalog_images") == {
        labels(status=str(s)): 0 for s in Status
    }


class WatchedStore(SqliteStore):
    """A real store that tells when `refresh_every` has read it twice: the loop went on."""

    def __init__(self, path: Path, clock: Callable[[], datetime], station: str = "") -> None:
        super().__init__(path, clock, station)
        self.read_twice = asyncio.Event()
        self._reads = 0

    async def outbox_depth(self) -> int:
        self._reads += 1
        if self._reads == 2:
            self.read_twice.set()
        return await super().outbox_depth()


async def open_watched(path: Path) -> WatchedStore:
    store = await WatchedStore.open(path)  # typed as SqliteStore, built as cls
    assert isinstance(store, WatchedStore)
    return store


async def run_refresh_every(metrics: StationMetrics, store: WatchedStore, catalog: Catalog) -> None:
    task = asyncio.create_task(metrics.refresh_every(store, lambda: catalog, interval_s=0.01))
    try:
        async with asyncio.timeout(5):
            await store.read_twice.wait()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_refresh_every_refreshes(tmp_path: Path, catalog: Catalog) -> None:
    metrics = StationMetrics()
    store = await open_watched(tmp_path / "jigd.sqlite3")
    try:
        await run_refresh_every(metrics, store, catalog)
    finally:
        await store.close()
    found = series(metrics.exposition().decode())
    assert found[("jigd_catalog_images", labels(status="production"))] == 1
    assert found[("jigd_mqtt_outbox_depth", ())] == 0


async def test_refresh_every_keeps_going_after_a_store_error(
    tmp_path: Path, catalog: Catalog, caplog: pytest.LogCaptureFixture
) -> None:
    store = await open_watched(tmp_path / "jigd.sqlite3")
    await store.close()
    await run_refresh_every(StationMetrics(), store, catalog)
    assert "metrics: the store could not be read, will retry" in caplog.text


def test_two_instances_do_not_share_counters() -> None:
    first, second = StationMetrics(), StationMetrics()
    first.observer().on_rig(1, True)
    assert ("jigd_rig_up", labels(rig="1")) in series(first.exposition().decode())
    assert ("jigd_rig_up", labels(rig="1")) not in series(second.exposition().decode())


# --- promtool -----------------------------------------------------------------------------------


async def test_promtool_check_metrics_accepts_the_exposition(exposition: str) -> None:
    checked = await promtool("check", "metrics", stdin=exposition.encode())
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert not checked.stdout.strip(), checked.stdout


async def test_promtool_check_rules_accepts_the_alert_rules() -> None:
    checked = await promtool("check", "rules", str(ALERTS))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 7 rules found" in checked.stdout


async def test_promtool_alert_unit_tests_pass() -> None:
    tested = await promtool("test", "rules", str(ALERTS_TEST))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


async def test_alert_unit_tests_cover_every_alert() -> None:
    alerts = set(re.findall(r"^\s*- alert: (\w+)$", ALERTS.read_text("utf-8"), re.MULTILINE))
    tested = set(re.findall(r"alertname: (\w+)$", ALERTS_TEST.read_text("utf-8"), re.MULTILINE))
    assert alerts == tested
    assert len(alerts) == 7


async def test_alert_rules_and_their_tests_use_real_metric_names(exposition: str) -> None:
    known = sample_names(exposition)
    for path in (ALERTS, ALERTS_TEST):
        unknown = unknown_metrics(path.read_text("utf-8"), known)
        assert not unknown, f"{path.name} names metrics jigd does not export: {unknown}"


# --- the Grafana dashboard -----------------------------------------------------------------------


def sample_names(text: str) -> set[str]:
    """The names Prometheus stores: a histogram only as _bucket/_sum/_count, a counter as _total."""
    return {name for name, _ in series(text)}


def unknown_metrics(expr: str, known: set[str]) -> set[str]:
    return set(METRIC_NAME_RE.findall(expr)) - known


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, and those nested in (collapsed) rows."""
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text("utf-8"))
    return loaded


def dashboard_exprs() -> list[tuple[str, str]]:
    """(panel title, expr) of every query of the dashboard, template variables included."""
    board = dashboard()
    exprs = [
        (panel["title"], target["expr"])
        for panel in all_panels(board["panels"])
        for target in panel.get("targets", [])
    ]
    exprs += [
        (f"variable {v['name']}", v["definition"])
        for v in board["templating"]["list"]
        if v["type"] == "query"
    ]
    return exprs


async def test_unknown_metrics_tells_real_series_from_family_names(exposition: str) -> None:
    known = sample_names(exposition)
    assert not unknown_metrics("rate(jigd_flashes_total[5m])", known)
    assert not unknown_metrics("rate(jigd_flash_duration_seconds_bucket[5m])", known)
    assert not unknown_metrics("jigd_stage_duration_seconds_sum / x", known)
    # Names Prometheus never stores: a histogram's or a counter's bare family name, a typo.
    assert unknown_metrics("jigd_flash_duration_seconds", known) == {"jigd_flash_duration_seconds"}
    assert unknown_metrics("rate(jigd_flashes[5m])", known) == {"jigd_flashes"}
    assert unknown_metrics("jigd_rigs_up == 0", known) == {"jigd_rigs_up"}


async def test_every_dashboard_query_names_only_exported_metrics(exposition: str) -> None:
    known = sample_names(exposition)
    exprs = dashboard_exprs()
    assert len(exprs) > 20
    for title, expr in exprs:
        assert METRIC_NAME_RE.search(expr), f"panel {title!r} queries no jigd metric: {expr}"
        unknown = unknown_metrics(expr, known)
        assert not unknown, f"panel {title!r} queries metrics jigd does not export: {unknown}"


async def test_dashboard_shows_every_metric(exposition: str) -> None:
    queried = {name for _, expr in dashboard_exprs() for name in METRIC_NAME_RE.findall(expr)}
    families = {n.removesuffix("_bucket").removesuffix("_sum") for n in queried}
    assert families >= CONTRACT, CONTRACT - families


async def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """promtool parses each query as a recording rule, Grafana's variables filled in."""
    grafana_vars = {"$instance": ".+", "$__rate_interval": "1m", "$__range": "6h"}
    rules = []
    for index, (_, query) in enumerate(dashboard_exprs()):
        if query.startswith("label_values("):
            continue  # a Grafana function, not PromQL
        expr = query
        for name, value in grafana_vars.items():
            expr = expr.replace(name, value)
        assert "$" not in expr, expr
        rules.append({"record": f"dashboard:query{index}", "expr": expr})
    path = tmp_path / "dashboard_rules.yml"
    # JSON is YAML: promtool reads this file as a rule file.
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}), "utf-8")
    checked = await promtool("check", "rules", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_dashboard_is_importable() -> None:
    board = dashboard()
    assert board["schemaVersion"] == 39
    assert [i["name"] for i in board["__inputs"]] == ["DS_PROMETHEUS"]
    panels = list(all_panels(board["panels"]))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
        assert all(t["datasource"]["uid"] == "${DS_PROMETHEUS}" for t in panel["targets"])
        assert panel["gridPos"]["x"] >= 0
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24


async def test_slot_service_and_selftests_are_gauges(store: SqliteStore, catalog: Catalog) -> None:
    metrics = StationMetrics()
    observer = metrics.observer()
    observer.on_slot(SlotStatus(1, 2, state=SlotState.EMPTY))
    observer.on_slot(SlotStatus(1, 3, state=SlotState.EMPTY))
    service = await store.set_slot_service(1, 3, disabled=True, reason="worn pin", by="alice")
    observer.on_service(service)
    checks = [
        SelftestCheck(None, "controller", True),
        SelftestCheck(2, "power", True),
        SelftestCheck(3, "led", False, "LED 3 RED refused"),
    ]
    run = await store.record_selftest(1, checks)
    observer.on_selftest(run)
    found = series(metrics.exposition().decode())
    assert family(found, "jigd_slot_disabled") == {
        labels(rig="1", slot="2"): 0,
        labels(rig="1", slot="3"): 1,
    }
    assert family(found, "jigd_selftest_check") == {
        labels(rig="1", slot="", check="controller"): 1,
        labels(rig="1", slot="2", check="power"): 1,
        labels(rig="1", slot="3", check="led"): 0,
    }
    assert family(found, "jigd_selftest_timestamp_seconds") == {labels(rig="1"): run.ts.timestamp()}
    observer.on_service(
        await store.set_slot_service(1, 3, disabled=False, reason="fixed", by="alice")
    )
    found = series(metrics.exposition().decode())
    assert family(found, "jigd_slot_disabled")[labels(rig="1", slot="3")] == 0
    # A restarted daemon reads the last self-test back from the store.
    again = StationMetrics()
    await again.refresh(store, catalog)
    assert family(series(again.exposition().decode()), "jigd_selftest_check") == family(
        found, "jigd_selftest_check"
    )
