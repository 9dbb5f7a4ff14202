"""Station benchmark: the daemon driving simulated rigs, as `jigd demo` runs it.

Run: .venv/bin/python -m bench.station              (all three scenarios; about two minutes)
     .venv/bin/python -m bench.station --only b     (one of them; --only may be repeated)

Every scenario is a `jigd demo` run (`jigd.demo.run_demo`: `jigsim serve` and `jigd run` as
separate processes, the batch imported and followed through the control API, the books checked
against the simulator's ground truth at the end) with no faults and a pallet of exactly the
listed hubs (none missing, none unlisted, none already on the latest firmware), so every hub
needs one full flash. Hub times come from the daemon's store once it has stopped; the daemon's
CPU time and memory from /proc while it runs.

a) Parallel against one after another: 8 hubs on 1 rig x 8 slots, and the same 8 hubs (same
   seed, same pallet) on 1 rig x 1 slot, flashed one after another as the 1-to-1 bench does.
   Wall time from the simulator's rig coming up (the batch is already imported; the operator
   starts loading hubs) to the last result recorded. Also shown from the batch import, which
   adds the simulator's own start-up (building and signing the hubs' images) to both.
b) Efficiency: 24 hubs on 3 rigs x 8 slots at 921600 baud. Each hub's time in the flash
   procedure (the store's attempt start to its recorded result) against
   `sim.timing.physical_bound` of its image with the simulator's timing; and the daemon's CPU
   time over the flashing window divided by the slot-seconds spent in attempts.
c) Scale: 128 hubs on 16 rigs x 8 slots at 115200 baud. GET /v1/status every second for the
   event-loop lag (`loop_lag_ms`: the daemon's LoopLagMonitor over its last 60 s); the target is
   judged on the first sample after the last result, which covers the whole run (the daemon's
   start included). And the daemon's resident memory (VmRSS sampled, VmHWM the kernel's peak).

The simulator and the daemon share the host's CPUs, so other work on the host slows both; the
load average, and the CPU the host's other processes used while the hubs were flashed, are
printed with each run. Exit status 1 if a scenario did not complete or a target was not met.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

from firmware_catalog import Catalog
from jigd.demo import DemoOptions, DemoRun, Paths, run_demo
from jigd.looplag import LAG_WINDOW_S
from jigd.model import Outcome
from jigd.store import AttemptRecord, BatchInfo, GuidState
from jigd.store.sqlite import SqliteStore
from sim.timing import Timing, physical_bound

SEED: Final = 1
HANDLING_S: Final = 0.05  # the simulated operator's time to insert or to pull one hub
IMAGE_SIZE: Final = 256 * 1024  # jigd demo's default
SMALL_IMAGE_SIZE: Final = 64 * 1024  # for (c) if the default image would make it too long
LONG_RUN_S: Final = 180.0
FAST_BAUD: Final = 921_600
SLOW_BAUD: Final = 115_200
FRAMING: Final = "raw"
SCALE_HUBS: Final = 128
SPEEDUP_TARGET: Final = 7.3
EFFICIENCY_TARGET: Final = 0.90
LAG_P99_TARGET_MS: Final = 20.0
RSS_TARGET_MB: Final = 200.0
PROC_SAMPLE_S: Final = 0.1
STATUS_SAMPLE_S: Final = 1.0
RUN_TIMEOUT_S: Final = 900.0
CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Settings:
    """What the command line sets; printed with each scenario so that it can be run again."""

    image_size: int
    seed: int
    handling_s: float
    workdir: Path
    keep: bool  # the work directory outlives the run

    def command(self, only: str) -> str:
        return (
            f".venv/bin/python -m bench.station --only {only} --image-size {self.image_size} "
            f"--seed {self.seed} --handling-s {self.handling_s:g}"
        )


@dataclass(frozen=True)
class Figure:
    """One measured figure; `met` is None for a figure without a target."""

    name: str
    value: str
    met: bool | None = None

    def line(self) -> str:
        if self.met is None:
            return f"{self.name}: {self.value}"
        return f"{self.name}: {self.value}: {_verdict(self.met)}"


@dataclass(frozen=True)
class CpuSample:
    """CPU time used so far, by a process or by the whole host."""

    at: float  # time.time()
    cpu_s: float  # user + system (all threads, or all CPUs for the host)


@dataclass(frozen=True)
class ProcSample(CpuSample):
    """One look at a process in /proc."""

    rss_kib: int
    hwm_kib: int


@dataclass
class Observed:
    """One demo run, measured."""

    options: DemoOptions
    code: int
    lines: list[str]
    ready_at: float  # wall clock (time.time()) when the simulator's rigs were up
    batch: BatchInfo
    hubs: list[GuidState]
    attempts: dict[str, list[AttemptRecord]]
    image_sizes: dict[str, int]  # by sha256, from the catalog the demo built
    daemon: list[ProcSample] = field(default_factory=list)
    sim: list[ProcSample] = field(default_factory=list)
    bench: list[ProcSample] = field(default_factory=list)
    host: list[CpuSample] = field(default_factory=list)
    lag: list[tuple[float, dict[str, float]]] = field(default_factory=list)

    @property
    def flashed(self) -> list[GuidState]:
        return [h for h in self.hubs if h.outcome is Outcome.REFLASHED]

    @property
    def first_start(self) -> float:
        return min(a.started.timestamp() for runs in self.attempts.values() for a in runs)

    @property
    def last_finish(self) -> float:
        return max(h.finished.timestamp() for h in self.hubs if h.finished is not None)

    @property
    def window_s(self) -> float:
        """From the first attempt's start to the last result."""
        return self.last_finish - self.first_start

    @staticmethod
    def hub_seconds(hub: GuidState) -> float:
        """The hub's first attempt's start to its recorded result."""
        if hub.started is None or hub.finished is None:
            raise RuntimeError(f"{hub.guid} has no start or finish time")
        return (hub.finished - hub.started).total_seconds()


def _verdict(met: bool) -> str:
    return "target met" if met else "target NOT met"


def _host() -> str:
    one, five, _ = os.getloadavg()
    return f"host: {os.cpu_count()} CPU(s), load average {one:.2f} (1 min) {five:.2f} (5 min)"


# -- measuring a process ---------------------------------------------------------------------


def _proc_sample(pid: int) -> ProcSample:
    stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": field 3 onwards
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15
    memory = {}
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            memory[name] = int(value.split()[0])
    return ProcSample(time.time(), (utime + stime) / CLOCK_TICKS, memory["VmRSS"], memory["VmHWM"])


def _host_sample() -> CpuSample:
    """Busy time of all the host's CPUs (/proc/stat: all but idle and iowait)."""
    with Path("/proc/stat").open(encoding="ascii") as stat:
        ticks = [int(v) for v in stat.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = ticks[:8]
    busy = user + nice + system + irq + softirq + steal
    return CpuSample(time.time(), busy / CLOCK_TICKS)


def _cpu_at(samples: Sequence[CpuSample], at: float) -> float:
    """CPU seconds used by `at`, interpolated between samples (clamped to the sampled span)."""
    if at <= samples[0].at:
        return samples[0].cpu_s
    for before, after in itertools.pairwise(samples):
        if before.at <= at <= after.at:
            share = (at - before.at) / (after.at - before.at) if after.at > before.at else 0.0
            return before.cpu_s + share * (after.cpu_s - before.cpu_s)
    return samples[-1].cpu_s


def _cpu_between(samples: Sequence[CpuSample], start: float, end: float) -> float:
    return _cpu_at(samples, end) - _cpu_at(samples, start)


def _others_share(observed: Observed) -> float:
    """CPU share (of one core) the rest of the host used while the hubs were flashed."""
    start, end = observed.first_start, observed.last_finish
    ours = sum(
        _cpu_between(samples, start, end)
        for samples in (observed.daemon, observed.sim, observed.bench)
    )
    return max(0.0, _cpu_between(observed.host, start, end) - ours) / observed.window_s


# -- running one demo ------------------------------------------------------------------------


def _options(settings: Settings, name: str, **changes: Any) -> DemoOptions:
    base = DemoOptions(
        faults="none",
        seed=settings.seed,
        workdir=settings.workdir / name,
        image_size=settings.image_size,
        framing=FRAMING,
        handling_s=settings.handling_s,
        timeout_s=RUN_TIMEOUT_S,
        missing=0,
        extra=0,
        current=0,
        live=False,
    )
    return replace(base, **changes)


def _describe(options: DemoOptions) -> str:
    return (
        f"{options.rigs} rig(s) x {options.slots} slot(s), {options.hubs} hubs, "
        f"{options.baud} baud, {options.framing} framing, image {options.image_size} B, "
        f"faults {options.faults}, seed {options.seed}, missing/extra/current 0/0/0, "
        f"operator handling {options.handling_s:g} s"
    )


async def _observe(
    settings: Settings, options: DemoOptions, *, poll_status: bool = False
) -> Observed:
    """Run the demo, sampling the daemon (and the simulator) while the hubs are flashed."""
    print(f"  {_describe(options)}; {_host()}")
    daemon: list[ProcSample] = []
    sim: list[ProcSample] = []
    bench: list[ProcSample] = []
    host: list[CpuSample] = []
    lag: list[tuple[float, dict[str, float]]] = []
    ready: list[float] = []
    problems: list[BaseException] = []

    async def during(run: DemoRun) -> None:
        ready.append(time.time())
        if run.daemon.proc is None or run.sim.proc is None:
            problems.append(RuntimeError("the demo's processes are not running"))
            return
        try:
            next_status = time.monotonic()
            while True:
                daemon.append(_proc_sample(run.daemon.proc.pid))
                sim.append(_proc_sample(run.sim.proc.pid))
                bench.append(_proc_sample(os.getpid()))
                host.append(_host_sample())
                if poll_status and time.monotonic() >= next_status:
                    status = await run.client.request("GET", "/v1/status")
                    lag.append((time.time(), status["loop_lag_ms"]))
                    next_status += STATUS_SAMPLE_S
                await asyncio.sleep(PROC_SAMPLE_S)
        except Exception as exc:
            problems.append(exc)  # run_demo discards what `during` raises; report it
            raise

    lines: list[str] = []
    # The demo appends to its logs: a fresh directory keeps each run's own.
    await asyncio.to_thread(shutil.rmtree, options.workdir, ignore_errors=True)
    started = time.monotonic()
    # run_demo stops both processes in its own `finally`, whatever happens.
    code = await run_demo(options, show=lines.append, during=during)
    print(f"  ran in {time.monotonic() - started:.1f} s (set-up and checking the books included)")
    if problems:
        raise RuntimeError(f"sampling failed: {problems[0]!r}") from problems[0]
    if not ready or len(daemon) < 2:
        raise RuntimeError("the demo ended before the hubs were flashed:\n" + "\n".join(lines))
    paths = Paths(options.workdir)
    store = await SqliteStore.open(paths.store)
    try:
        (batch,) = await store.list_batches()
        hubs = await store.batch_results(batch.batch_id)
        attempts = {str(h.guid): await store.attempts(batch.batch_id, h.guid) for h in hubs}
    finally:
        await store.close()
    catalog = await asyncio.to_thread(Catalog.open, paths.catalog)
    sizes = {e.sha256: e.size for e in catalog.entries()}
    observed = Observed(options, code, lines, ready[0], batch, hubs, attempts, sizes)
    observed.daemon, observed.sim, observed.lag = daemon, sim, lag
    observed.bench, observed.host = bench, host
    _check_run(settings, observed)
    if not observed.flashed:
        raise RuntimeError("no hub was reflashed: there is nothing to measure")
    print(
        f"  while the hubs were flashed ({observed.window_s:.1f} s), other processes on the "
        f"host used {_others_share(observed) * 100:.0f}% of one of its {os.cpu_count()} CPU(s)"
    )
    return observed


def _check_run(settings: Settings, observed: Observed) -> None:
    """Every hub reflashed and the books balanced, or the figures mean little: say so."""
    counts = {str(k): v for k, v in observed.batch.counts.items() if v}
    reflashed = sum(1 for h in observed.hubs if h.outcome is Outcome.REFLASHED)
    retried = sum(1 for h in observed.hubs if h.attempts > 1)
    books = "balance" if observed.code == 0 else "do NOT balance"
    print(f"  outcomes {counts}; {retried} hub(s) needed more than one attempt; the books {books}")
    if observed.code != 0 or reflashed != len(observed.hubs) or retried:
        kept = "" if settings.keep else " (give --workdir to keep it)"
        where = f"{observed.options.workdir}{kept}"
        print(f"  WARNING: not every hub was reflashed at the first attempt; see {where}")
        for line in observed.lines[-20:]:
            print(f"    {line}")


def _efficiencies(observed: Observed) -> list[tuple[GuidState, float, float, float]]:
    """(hub, seconds, bound seconds, efficiency) per hub, by rig and slot."""
    timing = Timing(baud=observed.options.baud)  # `jigsim serve --baud`, other timing defaults
    rows = []
    for hub in sorted(observed.flashed, key=lambda h: (h.rig or 0, h.slot or 0)):
        size = observed.image_sizes[hub.image_sha256 or ""]
        bound = physical_bound(size, timing, observed.options.framing).total_s
        seconds = observed.hub_seconds(hub)
        rows.append((hub, seconds, bound, bound / seconds))
    return rows


def _cpu_per_slot(observed: Observed) -> tuple[float, float, float]:
    """(daemon CPU share of one core in the window, mean active slots, share per active slot)."""
    cpu = _cpu_between(observed.daemon, observed.first_start, observed.last_finish)
    slot_seconds = sum(observed.hub_seconds(h) for h in observed.flashed)
    return cpu / observed.window_s, slot_seconds / observed.window_s, cpu / slot_seconds


@dataclass(frozen=True)
class LagFigures:
    """The daemon's loop lag as GET /v1/status reported it (each sample covers its last 60 s).

    `run` is the first sample taken after the last result: it covers the whole run when the
    daemon has lived less than 60 s. `worst_p99_ms` is the highest p99 of any sample taken while
    hubs were flashed; the early ones cover only the daemon's first seconds (its start-up, and
    few samples, so their p99 is nearly their max).
    """

    samples: int
    worst_p99_ms: float
    worst_max_ms: float
    run: dict[str, float]
    run_covers_s: float

    def describe(self) -> str:
        return (
            f"loop lag over the last {self.run_covers_s:.0f} s up to the last result: p50 "
            f"{self.run['p50']:.2f} ms, p99 {self.run['p99']:.2f} ms, max {self.run['max']:.2f}"
            f" ms (GET /v1/status every {STATUS_SAMPLE_S:g} s, {self.samples} samples while "
            f"flashing: p99 at worst {self.worst_p99_ms:.2f} ms, max {self.worst_max_ms:.2f} ms)"
        )


def _lag(observed: Observed) -> LagFigures:
    start, end = observed.first_start, observed.last_finish
    during = [(at, lag) for at, lag in observed.lag if start <= at <= end + STATUS_SAMPLE_S]
    if not during:
        raise RuntimeError("no loop-lag sample was taken while the hubs were flashed")
    after = [(at, lag) for at, lag in during if at >= end] or during[-1:]
    at, run = after[0]
    # The daemon started just before the batch import; its monitor keeps the last 60 s.
    covers_s = min(at - observed.batch.created_at.timestamp(), LAG_WINDOW_S)
    return LagFigures(
        samples=len(during),
        worst_p99_ms=max(lag["p99"] for _, lag in during),
        worst_max_ms=max(lag["max"] for _, lag in during),
        run=run,
        run_covers_s=covers_s,
    )


# -- the scenarios ---------------------------------------------------------------------------


async def scenario_a(settings: Settings) -> list[Figure]:
    print("a) 8 hubs on one rig of 8 slots, against the same 8 hubs one after another")
    print(f"   reproduce: {settings.command('a')}")
    parallel = _options(settings, "a-parallel", hubs=8, rigs=1, slots=8, baud=FAST_BAUD)
    one_by_one = replace(parallel, slots=1, workdir=settings.workdir / "a-one-by-one")
    walls: dict[int, float] = {}
    from_import: dict[int, float] = {}
    for options in (parallel, one_by_one):
        observed = await _observe(settings, options)
        walls[options.slots] = observed.last_finish - observed.ready_at
        from_import[options.slots] = observed.last_finish - observed.batch.created_at.timestamp()
        per_hub = statistics.median(observed.hub_seconds(h) for h in observed.flashed)
        print(
            f"  {options.slots} slot(s): rig up -> last result {walls[options.slots]:.2f} s "
            f"(first attempt -> last result {observed.window_s:.2f} s; batch import -> last "
            f"result {from_import[options.slots]:.2f} s); {per_hub:.2f} s per hub (median)"
        )
    ratio = walls[1] / walls[8]
    met = ratio >= SPEEDUP_TARGET
    print(f"  speed-up {ratio:.2f}x; target >= {SPEEDUP_TARGET}x: {_verdict(met)}")
    print(
        f"  (counted from the batch import, i.e. with the simulator's start-up in both: "
        f"{from_import[1] / from_import[8]:.2f}x)"
    )
    return [
        Figure("a: 8 hubs on 1 x 8 slots, rig up -> last result", f"{walls[8]:.2f} s"),
        Figure("a: 8 hubs on 1 x 1 slot, rig up -> last result", f"{walls[1]:.2f} s"),
        Figure("a: speed-up", f"{ratio:.2f}x (target >= {SPEEDUP_TARGET}x)", met),
    ]


async def scenario_b(settings: Settings) -> list[Figure]:
    print("b) 3 rigs x 8 slots at 921600 baud: efficiency against the physical bound, CPU")
    print(f"   reproduce: {settings.command('b')}")
    options = _options(settings, "b-efficiency", hubs=24, rigs=3, slots=8, baud=FAST_BAUD)
    observed = await _observe(settings, options, poll_status=True)
    rows = _efficiencies(observed)
    print("  rig/slot  GUID                     flash s  bound s  efficiency")
    for hub, seconds, bound, efficiency in rows:
        print(
            f"  {hub.rig}/{hub.slot:<7} {hub.guid}  {seconds:7.2f}  {bound:7.2f}  "
            f"{efficiency:10.3f}"
        )
    values = [row[3] for row in rows]
    low, median = min(values), statistics.median(values)
    met = low >= EFFICIENCY_TARGET
    print(
        f"  efficiency min {low:.3f}, median {median:.3f}, max {max(values):.3f}; "
        f"target >= {EFFICIENCY_TARGET} for each slot: {_verdict(met)}"
    )
    share, active, per_slot = _cpu_per_slot(observed)
    sim_share = _cpu_between(observed.sim, observed.first_start, observed.last_finish)
    print(
        f"  daemon CPU over the flashing window ({observed.window_s:.1f} s): {share * 100:.1f}% "
        f"of one core for {active:.1f} active slots on average = {per_slot * 100:.2f}% of one "
        f"core per active slot (simulator: {sim_share / observed.window_s * 100:.1f}%)"
    )
    print(f"  for context: {_lag(observed).describe()}")
    return [
        Figure(
            "b: efficiency per slot, min / median",
            f"{low:.3f} / {median:.3f} (target >= {EFFICIENCY_TARGET})",
            met,
        ),
        Figure("b: daemon CPU per active slot", f"{per_slot * 100:.2f}% of one core"),
    ]


def _scale_image_size(settings: Settings) -> int:
    """The image for (c): the default unless 128 hubs at 115200 baud would take too long."""
    loading_s = 2 * SCALE_HUBS * settings.handling_s  # the operator handles one hub at a time
    bound = physical_bound(settings.image_size, Timing(baud=SLOW_BAUD), FRAMING)
    estimate = bound.total_s + loading_s
    if estimate <= LONG_RUN_S:
        print(
            f"  image {settings.image_size} B: {bound.total_s:.1f} s per hub at best, the run "
            f"about {estimate:.0f} s (one hub per slot), so no smaller image is needed"
        )
        return settings.image_size
    print(
        f"  image {settings.image_size} B would make the run about {estimate:.0f} s; using "
        f"{SMALL_IMAGE_SIZE} B instead"
    )
    return SMALL_IMAGE_SIZE


async def scenario_c(settings: Settings) -> list[Figure]:
    print("c) 16 rigs x 8 slots at 115200 baud: event-loop lag and resident memory")
    print(f"   reproduce: {settings.command('c')}")
    image_size = _scale_image_size(settings)
    options = _options(
        settings,
        "c-scale",
        hubs=SCALE_HUBS,
        rigs=16,
        slots=8,
        baud=SLOW_BAUD,
        image_size=image_size,
    )
    observed = await _observe(settings, options, poll_status=True)
    lag = _lag(observed)
    lag_met = lag.run["p99"] < LAG_P99_TARGET_MS
    print(f"  {lag.describe()}")
    print(f"  loop lag p99 target < {LAG_P99_TARGET_MS:g} ms: {_verdict(lag_met)}")
    rss_mb = max(s.rss_kib for s in observed.daemon) / 1024
    hwm_mb = observed.daemon[-1].hwm_kib / 1024
    rss_met = hwm_mb < RSS_TARGET_MB
    print(
        f"  daemon resident memory: VmRSS up to {rss_mb:.1f} MB sampled, VmHWM (peak) "
        f"{hwm_mb:.1f} MB; target < {RSS_TARGET_MB:g} MB: {_verdict(rss_met)}"
    )
    share, active, per_slot = _cpu_per_slot(observed)
    values = [row[3] for row in _efficiencies(observed)]
    print(
        f"  for context: daemon CPU {share * 100:.1f}% of one core for {active:.1f} active slots "
        f"on average ({per_slot * 100:.2f}% per slot); efficiency min {min(values):.3f}, "
        f"median {statistics.median(values):.3f}"
    )
    return [
        Figure(
            f"c: loop lag p99 over the run ({lag.run_covers_s:.0f} s)",
            f"{lag.run['p99']:.2f} ms (target < {LAG_P99_TARGET_MS:g} ms)",
            lag_met,
        ),
        Figure(
            "c: loop lag p50 / max over the run; worst p99 of a 1 s sample",
            f"{lag.run['p50']:.2f} / {lag.run['max']:.2f} ms; {lag.worst_p99_ms:.2f} ms",
        ),
        Figure(
            "c: daemon peak resident memory (VmHWM)",
            f"{hwm_mb:.1f} MB (target < {RSS_TARGET_MB:g} MB)",
            rss_met,
        ),
    ]


SCENARIOS: Final[dict[str, Callable[[Settings], Awaitable[list[Figure]]]]] = {
    "a": scenario_a,
    "b": scenario_b,
    "c": scenario_c,
}


async def _bench(settings: Settings, only: list[str]) -> int:
    figures: list[Figure] = []
    incomplete = []
    for name in only:
        try:
            figures += await SCENARIOS[name](settings)
        except RuntimeError as exc:
            incomplete.append(name)
            print(f"  scenario {name} did not complete: {exc}")
        print()
    print("Summary:")
    for figure in figures:
        print(f"  {figure.line()}")
    if incomplete:
        print(f"  scenario(s) {', '.join(incomplete)} did not complete")
    missed = [f for f in figures if f.met is False]
    return 1 if incomplete or missed else 0


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.station",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--only", choices=sorted(SCENARIOS), action="append", help="a, b or c")
    parser.add_argument("--image-size", type=int, default=IMAGE_SIZE, metavar="BYTES")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--handling-s", type=float, default=HANDLING_S, metavar="S")
    parser.add_argument(
        "--workdir", type=Path, help="keep each run's demo directory here (default: a temp dir)"
    )
    args = parser.parse_args()
    only = sorted(set(args.only or SCENARIOS))
    with tempfile.TemporaryDirectory(prefix="jigd-bench-station-") as scratch:
        settings = Settings(
            image_size=args.image_size,
            seed=args.seed,
            handling_s=args.handling_s,
            workdir=args.workdir or Path(scratch),
            keep=args.workdir is not None,
        )
        code = asyncio.run(_bench(settings, only))
    sys.exit(code)


if __name__ == "__main__":
    main()
