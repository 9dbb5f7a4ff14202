"""SIGTERM during a batch: `jigd run` (a separate process, against `jigsim serve`) drains, exits 0
within its bound, and once restarted completes the batch with the books balanced and every
invariant of the station end-to-end tests holding.

Draining (jigd.slot, jigd.station): hubs in the activation sequence (mark test, reset, swap and
boot, verify, confirm, lock) finish and are recorded before the daemon exits; other attempts are
recorded `interrupted` by the stopping daemon itself (detail `jigd stopping`), and their uploads
resume from the hub's offset after the restart. Past `timeouts.shutdown_s`, the rest is cut, and
resumes the same way.
"""

from __future__ import annotations

import asyncio
import re
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import pytest

from jigd.config import TimeoutConfig
from jigd.demo import DemoOptions, DemoRun, Paths
from jigd.demo.workdir import STATION
from jigd.store import JournalEvent
from jigd.store.sqlite import SqliteStore
from tests.jigd.e2e_helpers import WAIT_S, demo, no_hub_left_unbootable, set_timeouts

pytestmark = pytest.mark.slow  # end to end with real processes: not in `make test-fast`

ACTIVATION: Final = frozenset({"mark_test", "reset", "await_boot", "verify", "confirm", "lock"})
SWAPPING: Final = frozenset({"reset", "await_boot"})
DEFAULT_BOUND_S: Final = TimeoutConfig().shutdown_s
EXIT_MARGIN_S: Final = 10.0  # process start-up and teardown around the drain itself


@dataclass
class Stop:
    """One SIGTERM: what the slots were doing, how the daemon ended, what its store said."""

    finishing: set[str] = field(default_factory=set)
    uploading: set[str] = field(default_factory=set)
    seconds: float = 0.0
    code: int | None = None
    events: list[JournalEvent] = field(default_factory=list)


async def _slots(run: DemoRun) -> list[dict[str, Any]]:
    status = await run.client.request("GET", "/v1/status")
    return [slot for rig in status["rigs"] for slot in rig["slots"]]


def _mid_upload(slot: dict[str, Any]) -> bool:
    return bool(slot["stage"] == "upload" and 5 < slot["progress"] < 80)


async def _moment(run: DemoRun, stages: frozenset[str], *, uploading: bool) -> list[dict[str, Any]]:
    """Busy slots at a moment when a hub is at one of `stages` (and another mid-upload)."""
    async with asyncio.timeout(WAIT_S):
        while True:
            slots = await _slots(run)
            busy = [s for s in slots if s["state"] == "busy" and s["guid"]]
            if any(s["stage"] in stages for s in busy) and (
                not uploading or any(_mid_upload(s) for s in busy)
            ):
                return busy
            await asyncio.sleep(0.05)


async def _sigterm(
    run: DemoRun, stop: Stop, stages: frozenset[str] = ACTIVATION, *, uploading: bool
) -> None:
    """SIGTERM at a chosen moment; wait for the exit; read the store; start a new daemon."""
    busy = await _moment(run, stages, uploading=uploading)
    stop.finishing = {s["guid"] for s in busy if s["stage"] in ACTIVATION}
    # Hubs far from the end of their upload: one near it may finish the upload, and go on to
    # its activation (let finish), between this reading and the SIGTERM.
    stop.uploading = {s["guid"] for s in busy if _mid_upload(s)}
    proc = run.daemon.proc
    assert proc is not None
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    stop.code = await run.daemon.wait(DEFAULT_BOUND_S + EXIT_MARGIN_S)
    stop.seconds = time.monotonic() - started
    async with await SqliteStore.open(run.paths.store) as store:
        stop.events = await store.journal()
    await run.start_daemon()


def _by_guid(events: list[JournalEvent], kind: str) -> dict[str, list[JournalEvent]]:
    found: dict[str, list[JournalEvent]] = {}
    for event in events:
        if event.kind == kind and event.guid is not None:
            found.setdefault(str(event.guid), []).append(event)
    return found


@pytest.mark.timeout(300)
async def test_sigterm_mid_batch_drains_exits_0_and_the_batch_completes(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    stops = [Stop(), Stop()]

    async def stop_twice(run: DemoRun) -> None:
        for stop in stops:
            await _sigterm(run, stop, uploading=True)

    options = DemoOptions(
        hubs=24, rigs=1, slots=8, faults="none", seed=13, workdir=workdir,
        image_size=128 * 1024, handling_s=0.1,
    )  # fmt: skip
    code, lines = await demo(options, during=stop_twice)
    assert code == 0, "\n".join(lines[-60:])
    no_hub_left_unbootable(workdir)

    for stop in stops:
        assert stop.code == 0, stop
        assert stop.seconds < DEFAULT_BOUND_S, stop
        results = _by_guid(stop.events, "result")
        interrupted = _by_guid(stop.events, "interrupted")
        # A hub in the activation sequence finished before the daemon exited: recorded with
        # its outcome, or (a retryable failure of the stage) closed resumable, not retried.
        for guid in stop.finishing:
            stopped_after = [
                e
                for e in interrupted.get(guid, [])
                if str(e.data.get("detail", "")).startswith("jigd stopping after ")
            ]
            assert guid in results or stopped_after, (guid, stop)
        # A hub mid-upload was recorded interrupted by the stopping daemon itself.
        assert stop.uploading
        for guid in stop.uploading:
            details = [e.data.get("detail") for e in interrupted.get(guid, [])]
            assert "jigd stopping" in details, (guid, details)
            assert guid not in results

    async with await SqliteStore.open(Paths(workdir).store, station=STATION) as store:
        events = await store.journal()
    cut = set().union(*(stop.uploading for stop in stops))
    resumed = {str(e.guid) for e in events if e.kind == "attempt_started" and e.data["resumed"]}
    assert cut <= resumed
    offsets = [
        int(m.group(1))
        for e in events
        if e.kind == "stage"
        and str(e.guid) in cut
        and (m := re.search(r"resumed from offset (\d+)", str(e.data.get("detail")))) is not None
    ]
    assert any(offset > 0 for offset in offsets), offsets
    log = (workdir / "jigd.log").read_text("utf-8")
    assert log.count("station demo: drained") >= len(stops)


@pytest.mark.timeout(300)
async def test_sigterm_past_the_bound_cuts_the_swap_and_the_hub_resumes(tmp_path: Path) -> None:
    """With a bound shorter than a swap, the hub's attempt is cut, exit is still 0, and the hub
    finishes after the restart (already swapped: verified, confirmed, locked)."""
    workdir = tmp_path / "demo"
    bound_s = 0.05
    first, cut = Stop(), Stop()

    async def shrink_bound_then_stop(run: DemoRun) -> None:
        set_timeouts(run.paths.config, shutdown_s=bound_s)
        await _sigterm(run, first, uploading=False)  # restarts with the short bound
        await _sigterm(run, cut, SWAPPING, uploading=False)

    options = DemoOptions(
        hubs=12, rigs=1, slots=4, faults="none", seed=17, workdir=workdir,
        image_size=64 * 1024, handling_s=0.1,
    )  # fmt: skip
    code, lines = await demo(options, during=shrink_bound_then_stop)
    assert code == 0, "\n".join(lines[-60:])
    no_hub_left_unbootable(workdir)
    assert first.code == 0
    assert cut.code == 0
    assert cut.seconds < bound_s + EXIT_MARGIN_S
    log = (workdir / "jigd.log").read_text("utf-8")
    assert f"still busy after {bound_s:g} s" in log
    cut_swaps = {
        str(e.guid)
        for e in cut.events
        if e.kind == "interrupted"
        and e.data.get("detail") == "jigd stopping"
        and e.data.get("stage") in SWAPPING
    }
    assert cut_swaps, "no hub was cut during its swap"
    async with await SqliteStore.open(Paths(workdir).store, station=STATION) as store:
        events = await store.journal()
    outcomes = {str(e.guid): e.data.get("outcome") for e in events if e.kind == "result"}
    assert all(outcomes.get(guid) == "reflashed" for guid in cut_swaps), outcomes


@pytest.mark.timeout(300)
async def test_a_second_sigterm_cuts_the_drain_short(tmp_path: Path) -> None:
    """An operator who will not wait: the second SIGTERM ends the drain at once, the daemon
    still exits 0, and the hubs it cut finish after the restart."""
    workdir = tmp_path / "demo"
    stop = Stop()

    async def stop_twice_at_once(run: DemoRun) -> None:
        # A long bound, so that only the second signal can explain a quick exit.
        set_timeouts(run.paths.config, shutdown_s=120.0)
        proc = run.daemon.proc
        assert proc is not None
        proc.send_signal(signal.SIGTERM)  # restart with the long bound first
        assert await run.daemon.wait(DEFAULT_BOUND_S + EXIT_MARGIN_S) == 0
        await run.start_daemon()
        busy = await _moment(run, SWAPPING, uploading=False)
        stop.finishing = {s["guid"] for s in busy if s["stage"] in ACTIVATION}
        proc = run.daemon.proc
        assert proc is not None
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        stop.code = await run.daemon.wait(EXIT_MARGIN_S)
        stop.seconds = time.monotonic() - started
        await run.start_daemon()

    options = DemoOptions(
        hubs=8, rigs=1, slots=4, faults="none", seed=19, workdir=workdir,
        image_size=64 * 1024, handling_s=0.1,
    )  # fmt: skip
    code, lines = await demo(options, during=stop_twice_at_once)
    assert code == 0, "\n".join(lines[-60:])
    no_hub_left_unbootable(workdir)
    assert stop.code == 0
    assert stop.seconds < EXIT_MARGIN_S  # not the 120 s bound
    log = (workdir / "jigd.log").read_text("utf-8")
    assert "stopped again; not waiting for hubs" in log
    assert stop.finishing
