"""Site benchmark: M stations x S slots writing results into one shared store at once.

Run: .venv/bin/python -m bench.site                      (PostgreSQL: 8 stations x 128 slots)
     .venv/bin/python -m bench.site --sqlite             (the baseline: one station on SQLite)
     .venv/bin/python -m bench.site --store postgresql://jigd@db/jigd   (a server of yours)

Without --store the benchmark starts a throwaway PostgreSQL cluster of its own (initdb and
pg_ctl in a temporary directory, as the tests do), with the server's defaults for durability
(fsync on: a commit waits for the disk) unlike the tests' cluster.

Each station is its own process, as each station's daemon is: it opens the store through the
store contract for its own name (`open_store(url, station="bench-k")`, so its rows name it, as a
site's do) and runs one task per slot. A slot flashes hub after hub of one
shared batch as jigd/slot.py records them (begin_attempt, the upload journalled, record_result;
10% a failed first attempt and a retry), paced so that the whole site finishes `--rate` hubs a
second (each slot waits a random, exponentially distributed time between hubs: the slots are
independent), or as fast as it can with `--rate 0`. Meanwhile one more process drains the site's
outbox as the stations' publishers do, each station's events in turn (outbox_pending,
mark_published for each station's store), and counts what it drained.

Printed: results per second, the time of each `record_result` call (the result's commit: p50,
p99, max) and of every store call, the outbox drain rate and what is left undrained, and each
station's peak RSS. The target rate is 10 times the site's real peak (`PEAK_RESULTS_S`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import random
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from bench.store import MODEL, NEW, OLD, manifest_rows
from jigd.events import GuidResult
from jigd.model import Guid, Outcome, Stage
from jigd.store import Store, open_store
from jigd.store.sqlite import sqlite_url

# The site's real peak result rate: three rigs of 8 slots (the CSP's three multi-jig units),
# every slot finishing a hub every 5.4 s (the median hub of the 96-hub demo: the plan's
# per-hub time, without the operator's 20 s of handling that spreads results out in practice).
SITE_SLOTS: Final = 3 * 8
HUB_S: Final = 5.4
PEAK_RESULTS_S: Final = SITE_SLOTS / HUB_S  # 4.4 results a second
TARGET_RATE: Final = 10 * PEAK_RESULTS_S
COMMIT_P99_TARGET_MS: Final = 20.0
RSS_TARGET_MB: Final = 150.0
RETRIED: Final = 0.10
DRAINED_IDLE_S: Final = 2.0  # the publisher stops once the outbox stayed empty this long
IMAGE_BYTES: Final = 262_144


@dataclass(frozen=True)
class Plan:
    url: str
    batch: str
    first: int  # the station's first GUID number in the batch
    hubs: int  # GUIDs reserved for the station
    slots: int
    rate: float  # the station's hubs a second; 0: as fast as it can
    seconds: float
    station: str = ""  # the station this process is (`open_store(url, station=...)`)
    names: list[str] = field(default_factory=list)  # the publisher: every station's name


def _result(batch: str, guid: Guid, attempt: int, slot: int) -> GuidResult:
    now = datetime.now(UTC)
    return GuidResult(
        batch_id=batch,
        guid=guid,
        outcome=Outcome.REFLASHED,
        rig=1 + slot // 8,
        slot=1 + slot % 8,
        attempts=attempt,
        started=now - timedelta(seconds=HUB_S),
        finished=now,
        model=MODEL,
        from_version=OLD,
        to_version=NEW,
        image_sha256="ab" * 32,
    )


async def _timed(times: list[float], call: Any) -> Any:
    started = time.perf_counter()
    value = await call
    times.append(time.perf_counter() - started)
    return value


async def _slot(
    store: Store,
    plan: Plan,
    *,
    slot: int,
    guids: list[Guid],
    stop_at: float,
    times: dict[str, list[float]],
) -> int:
    """Flash the slot's hubs until the time is up; the hubs finished."""
    rng = random.Random(f"{plan.first}/{slot}")
    rig, number = 1 + slot // 8, 1 + slot % 8
    per_slot_rate = plan.rate / plan.slots
    done = 0
    for guid in guids:
        if per_slot_rate > 0:
            await asyncio.sleep(min(rng.expovariate(per_slot_rate), stop_at - time.monotonic()))
        if time.monotonic() >= stop_at:
            break
        attempt = await _timed(
            times["calls"],
            store.begin_attempt(plan.batch, guid, rig, number, model=MODEL, from_version=OLD),
        )
        if rng.random() < RETRIED:
            await _timed(
                times["calls"],
                store.record_stage(plan.batch, guid, attempt, Stage.UPLOAD, "timeout"),
            )
            await _timed(
                times["calls"],
                store.end_attempt(
                    plan.batch, guid, attempt, stage=Stage.UPLOAD, error_code="timeout", locked=True
                ),
            )
            attempt = await _timed(
                times["calls"], store.begin_attempt(plan.batch, guid, rig, number)
            )
        detail = f"uploaded {IMAGE_BYTES} bytes, resumed from offset 0"
        await _timed(
            times["calls"], store.record_stage(plan.batch, guid, attempt, Stage.UPLOAD, detail)
        )
        await _timed(times["result"], store.record_result(_result(plan.batch, guid, attempt, slot)))
        done += 1
    return done


async def station(plan: Plan) -> dict[str, Any]:
    """One station: its slots flashing for `plan.seconds`; its figures."""
    guids = [row.guid for row in manifest_rows(plan.first, plan.hubs)]
    per_slot = len(guids) // plan.slots
    times: dict[str, list[float]] = {"calls": [], "result": []}
    async with await open_store(plan.url, station=plan.station) as store:
        started = time.monotonic()
        stop_at = started + plan.seconds
        done = await asyncio.gather(
            *(
                _slot(
                    store,
                    plan,
                    slot=slot,
                    guids=guids[slot * per_slot : (slot + 1) * per_slot],
                    stop_at=stop_at,
                    times=times,
                )
                for slot in range(plan.slots)
            )
        )
        elapsed = time.monotonic() - started
    return {
        "results": sum(done),
        "elapsed": elapsed,
        "result_s": times["result"],
        "call_s": times["calls"],
        "rss_mb": _peak_rss_mb(),
    }


def _peak_rss_mb() -> float:
    """This process's peak RSS: VmHWM (Linux), which starts afresh with the program; not
    getrusage's ru_maxrss, which Linux carries over from the parent that forked it (here the
    benchmark's main process, with the whole demo package loaded)."""
    try:
        status = Path("/proc/self/status").read_text(encoding="ascii")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def drain(url: str, names: list[str], seconds: float) -> dict[str, Any]:
    """The stations' publishers, in one process: each station's store (its events) in turn,
    taking its oldest pending messages and marking them published, until the stations are done
    and every outbox is empty; what they drained."""
    drained, started = 0, time.monotonic()
    idle_since: float | None = None
    async with contextlib.AsyncExitStack() as stack:
        stores = [
            await stack.enter_async_context(await open_store(url, station=name)) for name in names
        ]
        while True:
            now, busy = time.monotonic(), False
            for store in stores:
                pending = await store.outbox_pending(500)
                if pending:
                    drained += await store.mark_published(m.id for m in pending)
                    busy = True
            if busy:
                idle_since = None
                continue
            idle_since = now if idle_since is None else idle_since
            if now - started > seconds and now - idle_since > DRAINED_IDLE_S:
                break  # the stations are done: nothing came for a while after the window
            await asyncio.sleep(0.01)
        left = sum([await store.outbox_depth() for store in stores])
        elapsed = (idle_since or time.monotonic()) - started
    return {"drained": drained, "elapsed": elapsed, "left": left}


async def _child(kind: str, plan: Plan) -> dict[str, Any]:
    """Run a station or the publisher as its own process; its JSON figures."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.site",
        "--child",
        kind,
        json.dumps(plan.__dict__),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"bench.site {kind} exited with {process.returncode}")
    found: dict[str, Any] = json.loads(out)
    return found


def _ms(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def site(url: str, stations: int, slots: int, rate: float, seconds: float) -> bool:
    """Run the site; print its figures; whether the targets held."""
    # GUIDs per station: three times what the paced rate needs; flat out, 40 per slot (a slot
    # that runs out of GUIDs stops early, which the results per second then show).
    per_slot = max(4, int(3 * rate / stations * seconds / slots)) if rate else 40
    hubs_each = slots * per_slot
    names = [f"bench-{n + 1}" for n in range(stations)]
    async with await open_store(url, station=names[0]) as store:
        batch = await store.import_batch(
            manifest_rows(0, stations * hubs_each), "SITE", "P", "site.csv"
        )
    plans = [
        Plan(url, batch, n * hubs_each, hubs_each, slots, rate / stations, seconds, names[n])
        for n in range(stations)
    ]
    publisher = dataclasses.replace(plans[0], station="", names=names)
    figures = await asyncio.gather(
        *(_child("station", plan) for plan in plans), _child("publisher", publisher)
    )
    *done, published = figures
    results = sum(f["results"] for f in done)
    elapsed = max(f["elapsed"] for f in done)
    commits = [t for f in done for t in f["result_s"]]
    calls = [t for f in done for t in f["call_s"]]
    rss = max(f["rss_mb"] for f in done)
    p99 = _ms(commits, 0.99)
    print(
        f"{stations} station(s) x {slots} slots, {url.split('://', 1)[0]}, {seconds:g} s, "
        f"target {'as fast as it can' if not rate else f'{rate:.1f} results/s'}"
    )
    print(
        f"  results:        {results} in {elapsed:.1f} s = {results / elapsed:.1f} results/s "
        f"(the site's real peak: {PEAK_RESULTS_S:.1f}/s; x{results / elapsed / PEAK_RESULTS_S:.0f})"
    )
    print(
        f"  record_result:  p50 {_ms(commits, 0.5):.1f} ms, p99 {p99:.1f} ms, "
        f"max {1000 * max(commits, default=0):.1f} ms (target p99 < {COMMIT_P99_TARGET_MS:g} ms)"
    )
    print(
        f"  every call:     p50 {_ms(calls, 0.5):.1f} ms, p99 {_ms(calls, 0.99):.1f} ms "
        f"({len(calls) + len(commits)} calls)"
    )
    print(
        f"  outbox drained: {published['drained']} messages in {published['elapsed']:.1f} s = "
        f"{published['drained'] / published['elapsed']:.0f}/s, {published['left']} left"
    )
    print(
        f"  station RSS:    max {rss:.0f} MB (target < {RSS_TARGET_MB:g} MB; "
        f"median {statistics.median(f['rss_mb'] for f in done):.0f} MB)"
    )
    return p99 < COMMIT_P99_TARGET_MS and rss < RSS_TARGET_MB


async def main(args: argparse.Namespace) -> int:
    if args.child:
        plan = Plan(**json.loads(args.plan))
        work = (
            station(plan) if args.child == "station" else drain(plan.url, plan.names, plan.seconds)
        )
        print(json.dumps(await work))
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-site-") as directory:
        if args.sqlite:
            url = sqlite_url(Path(directory) / "site.sqlite3")
            ok = await site(url, 1, args.slots, args.rate, args.seconds)
            return 0 if ok else 1
        if args.store:
            return (
                0
                if await site(args.store, args.stations, args.slots, args.rate, args.seconds)
                else 1
            )
        # Imported here: jigd.demo loads the whole demo (aiohttp, the control client), which
        # the station processes, store clients only, must not carry in their RSS.
        from jigd.demo.pgcluster import PostgresCluster

        cluster = PostgresCluster(durable=args.durable)
        cluster.start()
        try:
            url = cluster.new_database()
            ok = await site(url, args.stations, args.slots, args.rate, args.seconds)
        finally:
            cluster.remove()
    return 0 if ok else 1


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.site", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--stations", type=int, default=8)
    parser.add_argument("--slots", type=int, default=128, help="per station")
    parser.add_argument(
        "--rate", type=float, default=TARGET_RATE, help="site results/s; 0: flat out"
    )
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--sqlite", action="store_true", help="one station on SQLite instead")
    parser.add_argument(
        "--no-fsync",
        dest="durable",
        action="store_false",
        help="the throwaway cluster without fsync: how much of a commit is the disk",
    )
    parser.add_argument("--store", help="a PostgreSQL URL to use instead of a throwaway cluster")
    parser.add_argument("--child", choices=["station", "publisher"], help=argparse.SUPPRESS)
    parser.add_argument("plan", nargs="?", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse())))
