"""`jigd demo --stations N` (N > 1): a site of N stations, each its own simulator and daemon, on
one PostgreSQL store and one batch, with the books checked against every bench's ground truth.

One pallet (one manifest, imported once, on station 1) is split over the N benches: station k
gets every N-th hub of it. The work directory holds what the site shares and one directory per
station:

    keys/, catalog/                the keys and the catalog every station uses
    pallet.json, pallet.manifest.csv   the whole pallet and the batch's manifest
    reports/                       the batch's reports, written once at the close
    postgres/                      the throwaway cluster, without --store (removed at the end)
    station-<k>/                   jigd.toml (`station = "demo-<k>"`, the same store URL, its
                                   own control socket run/control.sock), pallet.json (its
                                   share, for its `jigsim serve`), sim/, ground-truth.json,
                                   jigd.log, jigsim.log

The demo follows the batch through any station's control API (the store is the site's), until
every pallet hub has its outcome and every unlisted hub was rejected by some station; it closes
the batch once, writes the reports once, and checks the books against the union of the benches'
ground truths (`jigd.demo.books`: a hub moved between benches counts where it ended). A test's
`during(site)` hook can kill and restart a station's daemon or simulator and move hubs from one
bench to another (`SiteRun.move`, `jigsim move`), while the demo goes on.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar

from jigd import control_api as api
from jigd.ctl import ControlClient, ControlError
from jigd.demo.books import check_books, verdict
from jigd.demo.pgcluster import PostgresCluster
from jigd.demo.process import (
    START_TIMEOUT_S,
    Process,
    daemon_process,
    rig_paths,
    sim_process,
    wait_for_daemon,
    wait_for_paths,
)
from jigd.demo.run import POLL_S, RESTART_GRACE_S
from jigd.demo.workdir import DemoOptions, Paths, prepare_bench, write_config, write_token
from jigd.liveview import counts_text, progress_line
from jigd.model import Guid
from jigd.store import GuidBusyElsewhereError, GuidStatus
from jigd.store.postgres.urls import masked_url
from sim.move import request_move
from sim.pallet import Pallet, write_pallet
from sim.reinsert import request_reinsert

__all__ = ["SiteRun", "StationRun", "run_site"]

DATABASE: Final = "jigd_demo"  # the throwaway cluster's database
BUSY_ELSEWHERE: Final = GuidBusyElsewhereError.CODE
_T = TypeVar("_T", bound=api.ApiModel)


@dataclass
class StationRun:
    """One station of the site: its bench (simulator) and its daemon."""

    number: int
    name: str
    options: DemoOptions  # the site's, with this station's ports
    paths: Paths
    keys: Path
    pallet: Pallet  # its share of the site's pallet
    sim: Process
    daemon: Process
    client: ControlClient
    # Its daemon was killed by a `during` hook, which starts it again when it chooses: the demo
    # does not take it for a crash meanwhile.
    down_on_purpose: bool = False

    async def start_daemon(self) -> None:
        self.down_on_purpose = False
        self.daemon = daemon_process(self.paths)
        await self.daemon.start()
        await wait_for_daemon(self.client, self.daemon, START_TIMEOUT_S)

    async def kill_daemon(self) -> None:
        """SIGKILL the daemon, as a power cut of its PC does (until `start_daemon`)."""
        self.down_on_purpose = True
        await self.daemon.kill()

    async def restart_daemon(self) -> None:
        """SIGKILL the daemon and start it again (it resumes from the store)."""
        await self.kill_daemon()
        await self.start_daemon()

    async def start_sim(self) -> None:
        await self.sim.start()
        await wait_for_paths(rig_paths(self.options, self.paths), self.sim, START_TIMEOUT_S)

    async def restart_sim(self, down_s: float = 0.0) -> None:
        """SIGKILL the simulator and start it again: it resumes its bench (`sim.state`)."""
        await self.sim.kill()
        for path in rig_paths(self.options, self.paths):
            await asyncio.to_thread(path.unlink, missing_ok=True)
        await asyncio.sleep(down_s)
        self.sim = sim_process(self.options, self.paths, self.keys)
        await self.start_sim()

    @property
    def guids(self) -> list[Guid]:
        """The hubs its bench started with (its share of the pallet)."""
        return [hub.guid for hub in self.pallet.hubs]


@dataclass
class SiteRun:
    """A site demo in progress: its stations and what it knows."""

    options: DemoOptions
    paths: Paths  # the site's: shared keys, catalog, manifest, reports
    pallet: Pallet
    store_url: str
    stations: list[StationRun]
    batch_id: str = ""
    rejected_expected: set[str] = field(default_factory=set)
    seen_expected: set[str] = field(default_factory=set)
    # Refusals already acted on: (station number, GUID, when refused).
    put_back: set[tuple[int, str, str]] = field(default_factory=set)

    def station(self, number: int) -> StationRun:
        """Station `number`, from 1."""
        return self.stations[number - 1]

    async def move(self, source: int, destination: int, guids: Iterable[Guid]) -> None:
        """Have station `source`'s operator take these hubs to station `destination`'s bench
        (`jigsim move`): out of their slot whatever the LED, or off the pallet."""
        await asyncio.to_thread(
            request_move,
            self.station(source).paths.sim,
            self.station(destination).paths.sim,
            list(guids),
        )

    async def call(
        self, endpoint: api.Endpoint[_T], batch: str | None = None, body: api.ApiModel | None = None
    ) -> _T:
        """A control API call to the first station whose daemon answers (the store is the
        site's, so any station sees the site's batches); ControlError if none does."""
        failure: ControlError | None = None
        for station in self.stations:
            try:
                return await station.client.call(endpoint, batch, body)
            except ControlError as exc:
                failure = exc
        assert failure is not None  # internal invariant: a site has stations
        raise failure

    async def rejected(self) -> set[str]:
        """Every hub some station rejected (each asked that answers)."""
        found: set[str] = set()
        for station in self.stations:
            try:
                found |= {str(r.guid) for r in (await station.client.call(api.REJECTED)).rejected}
            except ControlError:
                continue  # restarting
        return found

    async def put_back_refused(self, show: Callable[[str], None]) -> None:
        """Have each station's operator re-insert the hubs its slots refused as `busy_elsewhere`
        once no station holds them any more (the holder finished or restarted), as a
        technician does who reads the slot's RED and its reason."""
        guids = (await self.call(api.BATCH_GUIDS, self.batch_id)).guids
        states = {str(g.guid): g.status for g in guids}
        for station in self.stations:
            try:
                rejected = (await station.client.call(api.REJECTED)).rejected
            except ControlError:
                continue  # restarting
            due = []
            for hub in rejected:
                key = (station.number, str(hub.guid), hub.ts.isoformat())
                free = states.get(str(hub.guid)) in (GuidStatus.PENDING, GuidStatus.INTERRUPTED)
                if hub.reason == BUSY_ELSEWHERE and key not in self.put_back and free:
                    self.put_back.add(key)
                    due.append(hub.guid)
            if due:
                await asyncio.to_thread(request_reinsert, station.paths.sim, due)
                show(
                    f"jigd demo: {station.name}: {len(due)} hub(s) refused as busy elsewhere "
                    "are free now; re-inserting them"
                )

    async def finished(self, show: Callable[[str], None], started: float) -> bool:
        batch = await self.call(api.BATCH, self.batch_id)
        rejected = await self.rejected()
        show(progress_line(time.monotonic() - started, batch, len(rejected)))
        done = batch.expected - batch.pending
        return done >= len(self.seen_expected) and self.rejected_expected <= rejected

    async def check_running(self) -> None:
        """Every process runs (but a daemon a `during` hook killed, until it starts it again);
        a hook that restarts one gets a moment to do it."""

        def stopped(station: StationRun) -> list[Process]:
            daemon = [] if station.down_on_purpose else [station.daemon]
            return [p for p in (station.sim, *daemon) if not p.running]

        if not any(stopped(s) for s in self.stations):
            return
        await asyncio.sleep(RESTART_GRACE_S)
        for station in self.stations:
            for process in stopped(station):
                raise RuntimeError(
                    f"station {station.name}: {process.name} stopped unexpectedly; "
                    f"see {process.log}"
                )


def _share(pallet: Pallet, number: int, count: int) -> Pallet:
    """Station `number`'s bench: every `count`-th hub of the pallet (the manifest's missing
    hubs are on no bench)."""
    return pallet.model_copy(update={"hubs": pallet.hubs[number - 1 :: count], "missing": []})


def _port(first: int | None, number: int) -> int | None:
    """Station `number`'s port: the option's for station 1, the next ones for the others."""
    return None if first is None else first + number - 1


def _prepare(options: DemoOptions, paths: Paths, store_url: str) -> tuple[Pallet, list[StationRun]]:
    """The shared keys, catalog and pallet, and each station's directory (blocking)."""
    for stale in paths.root.glob("station-*"):
        shutil.rmtree(stale, ignore_errors=True)
    shutil.rmtree(paths.reports, ignore_errors=True)
    pallet = prepare_bench(options, paths)
    if options.web_port is not None:
        write_token(paths.web_token)
    stations = []
    for number in range(1, options.stations + 1):
        mine = dataclasses.replace(
            options,
            store_url=store_url,
            metrics_port=_port(options.metrics_port, number),
            web_port=_port(options.web_port, number),
        )
        where = Paths(paths.root / f"station-{number}")
        share = _share(pallet, number, options.stations)
        write_pallet(share, where.pallet, where.manifest)
        where.manifest.unlink()  # the batch's manifest is the site's, imported once
        name = f"demo-{number}"
        write_config(mine, where, station=name, shared=paths)
        stations.append(
            StationRun(
                number=number,
                name=name,
                options=mine,
                paths=where,
                keys=paths.keys,
                pallet=share,
                sim=sim_process(mine, where, paths.keys),
                daemon=daemon_process(where),
                client=ControlClient(where.socket),
            )
        )
    return pallet, stations


def _cluster_directory(workdir: Path) -> Path:
    """`<workdir>/postgres`, unless the server (run as the `postgres` user when we are root)
    cannot reach the work directory: then a temporary directory."""
    wanted = workdir.resolve() / "postgres"
    if os.geteuid() != 0:
        return wanted
    reachable = subprocess.run(
        ["runuser", "-u", "postgres", "--", "test", "-x", str(workdir.resolve())],
        check=False,
        capture_output=True,
    )
    if reachable.returncode == 0:
        return wanted
    return Path(tempfile.mkdtemp(prefix="jigd-demo-pg-"))


def _start_cluster(workdir: Path) -> tuple[PostgresCluster, str]:
    """A throwaway cluster for the demo, with its database; (cluster, URL)."""
    cluster = PostgresCluster(directory=_cluster_directory(workdir))
    shutil.rmtree(cluster.directory, ignore_errors=True)
    try:
        cluster.start()
        cluster.sql(f'CREATE DATABASE "{DATABASE}"')
    except BaseException:
        cluster.remove()
        raise
    return cluster, cluster.url(DATABASE)


async def run_site(
    options: DemoOptions,
    *,
    show: Callable[[str], None] = print,
    during: Callable[[SiteRun], Any] | None = None,
) -> int:
    """Run a site demo; 0 when the books balance, 1 when they do not."""
    paths = Paths(options.workdir)
    cluster: PostgresCluster | None = None
    if options.store_url is None:
        await asyncio.to_thread(paths.root.mkdir, parents=True, exist_ok=True)
        started, url = await asyncio.to_thread(_start_cluster, paths.root)
        show(f"jigd demo: a throwaway PostgreSQL cluster in {started.directory}, {url}")
        cluster = started
    else:
        url = options.store_url
    try:
        return await _run(options, paths, url, show, during)
    finally:
        if cluster is not None:
            await asyncio.to_thread(cluster.remove)
            show("jigd demo: the throwaway PostgreSQL cluster is stopped and removed")


async def _run(
    options: DemoOptions,
    paths: Paths,
    url: str,
    show: Callable[[str], None],
    during: Callable[[SiteRun], Any] | None,
) -> int:
    show(
        f"jigd demo: preparing {paths.root}: {options.stations} stations on {masked_url(url)}, "
        f"one pallet of {options.hubs} hubs"
    )
    pallet, stations = await asyncio.to_thread(_prepare, options, paths, url)
    site = SiteRun(options, paths, pallet, url, stations)
    site.rejected_expected = {str(h.guid) for h in pallet.hubs if not h.listed}
    site.seen_expected = {str(h.guid) for h in pallet.hubs if h.listed}
    try:
        if not await _work(site, show, during):
            return 1
    finally:
        codes = [await s.daemon.stop() for s in stations]
        for station in stations:
            await station.sim.stop()
    for station, code in zip(stations, codes, strict=True):
        if code not in (0, None):
            show(f"jigd demo: {station.name}'s daemon exited with {code}; see {station.daemon.log}")
    truths = [s.paths.ground_truth for s in stations]
    problems = await asyncio.to_thread(check_books, paths, pallet, truths)
    show(f"jigd demo: reports in {paths.reports}, ground truths in {paths.root}/station-*/")
    return verdict(problems, show, "every GUID accounted for, on one bench, as its truth says")


async def _work(
    site: SiteRun, show: Callable[[str], None], during: Callable[[SiteRun], Any] | None
) -> bool:
    """Start the stations, import, follow the batch to its end, close it, write the reports;
    False if it did not end in time."""
    # One at a time: the first migrates the store, the others find it migrated.
    for station in site.stations:
        await station.start_daemon()
    await _import_batch(site, show)
    for station in site.stations:
        await station.start_sim()
    started = time.monotonic()
    extra = asyncio.ensure_future(during(site)) if during else None
    try:
        while not await _step(site, show, started):
            await asyncio.sleep(POLL_S)
            if time.monotonic() - started > site.options.timeout_s:
                show(f"jigd demo: not finished after {site.options.timeout_s:g} s; giving up")
                return False
    finally:
        if extra is not None:
            extra.cancel()
            await asyncio.gather(extra, return_exceptions=True)
    elapsed = time.monotonic() - started
    closed = await site.call(api.CLOSE_BATCH, site.batch_id)
    await _save_report(site)
    show(
        f"jigd demo: batch closed after {elapsed:.1f} s: {counts_text(closed.counts, nonzero=True)}"
    )
    if site.options.mqtt is not None:
        await _drain_outboxes(site, show)
    return True


async def _save_report(site: SiteRun) -> None:
    """The batch's reports, written once, through the first station that answers."""
    for station in site.stations:
        try:
            await station.client.save_report(site.batch_id, site.paths.reports)
        except ControlError:
            if station is site.stations[-1]:
                raise
        else:
            return


async def _import_batch(site: SiteRun, show: Callable[[str], None]) -> None:
    """Import the pallet's manifest, once, on station 1."""
    request = api.BatchImportRequest(
        manifest=await asyncio.to_thread(site.paths.manifest.read_text, encoding="utf-8"),
        source=str(site.paths.manifest),
        booking=f"DEMO-{site.options.seed}",
        party="DEMO-SUPPLIER",
    )
    imported = await site.station(1).client.call(api.IMPORT_BATCH, body=request)
    site.batch_id = imported.batch
    show(
        f"jigd demo: batch {site.batch_id} imported on {site.station(1).name} "
        f"({imported.guids} GUIDs); {len(site.stations)} stations flashing"
    )


async def _step(site: SiteRun, show: Callable[[str], None], started: float) -> bool:
    await site.check_running()
    try:
        await site.put_back_refused(show)
        return await site.finished(show, started)
    except ControlError:
        return False  # every daemon is restarting (a test may be killing them)


async def _drain_outboxes(site: SiteRun, show: Callable[[str], None]) -> None:
    """Give each station's publisher time to send what it still holds."""
    deadline = time.monotonic() + site.options.outbox_drain_s
    for station in site.stations:
        while (depth := (await station.client.call(api.STATUS)).outbox_depth) > 0:
            if time.monotonic() > deadline:
                show(f"jigd demo: {station.name}: {depth} message(s) stay in the outbox")
                break
            await asyncio.sleep(POLL_S / 4)
    show("jigd demo: every station's outbox is drained")
