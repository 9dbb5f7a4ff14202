"""A demo run: start the daemon, import the batch, start the simulator, follow the batch to its
end through the control API (as `jigctl` does), close it, write its reports, check the books.
With `load_early`, the simulator starts first, and the hubs set aside are re-inserted."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from jigd import control_api as api
from jigd.ctl import ControlClient, ControlError
from jigd.demo.books import check_books, verdict
from jigd.demo.process import (
    START_TIMEOUT_S,
    Process,
    daemon_process,
    rig_paths,
    sim_process,
    wait_for_daemon,
    wait_for_paths,
)
from jigd.demo.workdir import DemoOptions, Paths, prepare
from jigd.liveview import counts_text, progress_line, redraw, render_status
from sim.pallet import Pallet
from sim.reinsert import request_reinsert

__all__ = ["DemoRun", "run_demo", "stop_on_signal"]

POLL_S: Final = 1.0
# A stopped daemon is taken for a crash only if no `during` hook has restarted it by then.
RESTART_GRACE_S: Final = 5.0


@dataclass
class DemoRun:
    """A demo in progress: its processes and what it knows."""

    options: DemoOptions
    paths: Paths
    pallet: Pallet
    sim: Process
    daemon: Process
    client: ControlClient
    batch_id: str = ""
    rejected_expected: set[str] = field(default_factory=set)
    seen_expected: set[str] = field(default_factory=set)
    reinserted: set[str] = field(default_factory=set)

    async def start_daemon(self) -> None:
        self.daemon = daemon_process(self.paths)
        await self.daemon.start()
        await wait_for_daemon(self.client, self.daemon, START_TIMEOUT_S)

    async def start_sim(self) -> None:
        """Start the simulator and wait until every rig port it publishes exists."""
        await self.sim.start()
        await wait_for_paths(rig_paths(self.options, self.paths), self.sim, START_TIMEOUT_S)

    async def restart_sim(self, down_s: float = 0.0) -> None:
        """SIGKILL the simulator, leave the bench dark for `down_s`, and start it again with
        the same command line: it resumes its bench from its state directory (`sim.state`),
        as a bench does after a power cut of the PC that runs its rigs."""
        await self.sim.kill()
        # The dead simulator's port symlinks point at ptys that are gone, as device nodes go
        # with the USB devices they stood for.
        await asyncio.to_thread(_unlink, rig_paths(self.options, self.paths))
        await asyncio.sleep(down_s)
        self.sim = sim_process(self.options, self.paths)
        await self.start_sim()

    async def wait_for_early_hubs(self, show: Callable[[str], None]) -> None:
        """`--load-early N`: wait until N hubs of the batch were rejected, not yet listed."""
        wanted = self.options.load_early
        deadline = time.monotonic() + self.options.timeout_s
        while True:
            await _check_running(self)
            rejected = {str(r.guid) for r in (await self.client.call(api.REJECTED)).rejected}
            early = len(rejected & self.seen_expected)
            if early >= wanted:
                show(f"jigd demo: {early} hub(s) of the batch loaded before its import: rejected")
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {early} of {wanted} hubs were loaded early")
            await asyncio.sleep(POLL_S / 4)

    async def put_back(self, show: Callable[[str], None]) -> None:
        """Tell the simulated operator to re-insert the hubs the daemon lists as set aside, as
        a technician does after `jigctl batch show`."""
        batch = await self.client.call(api.BATCH, self.batch_id)
        new = [h.guid for h in batch.set_aside if str(h.guid) not in self.reinserted]
        if not new:
            return
        await asyncio.to_thread(request_reinsert, self.paths.sim, new)
        self.reinserted.update(str(g) for g in new)
        show(f"jigd demo: {len(new)} hub(s) set aside before the import; re-inserting them")

    async def progress(self) -> tuple[api.BatchView, list[api.RejectedHubView]]:
        batch = await self.client.call(api.BATCH, self.batch_id)
        rejected = (await self.client.call(api.REJECTED)).rejected
        return batch, rejected

    async def finished(self) -> bool:
        """Every pallet hub of the batch has its outcome and every unlisted hub was rejected."""
        batch, rejected = await self.progress()
        done = batch.expected - batch.pending
        rejected_guids = {str(r.guid) for r in rejected}
        return done >= len(self.seen_expected) and self.rejected_expected <= rejected_guids


async def run_demo(
    options: DemoOptions,
    *,
    show: Callable[[str], None] = print,
    during: Callable[[DemoRun], Any] | None = None,
) -> int:
    """Run the demo; 0 when the books balance, 1 when they do not."""
    paths = Paths(options.workdir)
    show(f"jigd demo: preparing {paths.root} (keys, catalog, pallet of {options.hubs} hubs)")
    pallet = await asyncio.to_thread(prepare, options, paths)
    if options.worn_slot is not None:
        show(
            "jigd demo: rig {} slot {} is worn: its link gets worse with every hub".format(
                *options.worn_slot
            )
        )
    client = ControlClient(paths.socket)
    run = DemoRun(
        options, paths, pallet, sim_process(options, paths), daemon_process(paths), client
    )
    run.rejected_expected = {str(h.guid) for h in pallet.hubs if not h.listed}
    run.seen_expected = {str(h.guid) for h in pallet.hubs if h.listed}
    try:
        # As on a bench: the manifest is imported before the operator loads the first hub,
        # unless --load-early shows what happens to hubs loaded before it.
        await run.start_daemon()
        if options.load_early:
            await run.start_sim()
            await run.wait_for_early_hubs(show)
        await _import_batch(run, show)
        if not options.load_early:
            await run.start_sim()
        started = time.monotonic()
        extra = asyncio.ensure_future(during(run)) if during else None
        try:
            while not await _step(run, show, started):
                await asyncio.sleep(POLL_S)
                if time.monotonic() - started > options.timeout_s:
                    show(f"jigd demo: not finished after {options.timeout_s:g} s; giving up")
                    return 1
        finally:
            if extra is not None:
                extra.cancel()
                await asyncio.gather(extra, return_exceptions=True)
        elapsed = time.monotonic() - started
        closed = await client.call(api.CLOSE_BATCH, run.batch_id)
        await client.save_report(run.batch_id, paths.reports)
        show(
            f"jigd demo: batch closed after {elapsed:.1f} s: "
            f"{counts_text(closed.counts, nonzero=True)}"
        )
        if options.mqtt is not None:
            await _drain_outbox(run, show)
    finally:
        daemon_rc = await run.daemon.stop()
        await run.sim.stop()
    if daemon_rc not in (0, None):
        show(f"jigd demo: the daemon exited with {daemon_rc}; see {run.daemon.log}")
    problems = await asyncio.to_thread(check_books, paths, pallet)
    show(f"jigd demo: reports in {paths.reports}, ground truth in {paths.ground_truth}")
    return verdict(problems, show, "every GUID accounted for, ground truth agrees")


async def _import_batch(run: DemoRun, show: Callable[[str], None]) -> None:
    """Import the pallet's manifest as the demo's batch (`run.batch_id`)."""
    options, paths = run.options, run.paths
    request = api.BatchImportRequest(
        manifest=await asyncio.to_thread(paths.manifest.read_text, encoding="utf-8"),
        source=str(paths.manifest),
        booking=f"DEMO-{options.seed}",
        party="DEMO-SUPPLIER",
    )
    if options.web_port is not None:
        show(
            f"jigd demo: web station view on http://127.0.0.1:{options.web_port}/ "
            f"(to import or close, log in with the token in {paths.web_token})"
        )
    imported = await run.client.call(api.IMPORT_BATCH, body=request)
    run.batch_id = imported.batch
    show(f"jigd demo: batch {run.batch_id} imported ({imported.guids} GUIDs); flashing")


def _unlink(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


async def _check_running(run: DemoRun) -> None:
    """Both processes run; a `during` hook that restarts the daemon gets a moment to do it."""
    if run.sim.running and run.daemon.running:
        return
    await asyncio.sleep(RESTART_GRACE_S)
    for process in (run.sim, run.daemon):
        if not process.running:
            raise RuntimeError(f"{process.name} stopped unexpectedly; see {process.log}")


async def _step(run: DemoRun, show: Callable[[str], None], started: float) -> bool:
    await _check_running(run)
    try:
        if run.options.live and sys.stdout.isatty():
            redraw(render_status(await run.client.call(api.STATUS)), clip=False)
        else:
            batch, rejected = await run.progress()
            show(progress_line(time.monotonic() - started, batch, len(rejected)))
        await run.put_back(show)
        return await run.finished()
    except ControlError:
        return False  # the daemon is restarting (a test may be killing it)


async def _drain_outbox(run: DemoRun, show: Callable[[str], None]) -> None:
    """Give the publisher time to send what the batch's close queued (the final summary)."""
    deadline = time.monotonic() + run.options.outbox_drain_s
    while (depth := (await run.client.call(api.STATUS)).outbox_depth) > 0:
        if time.monotonic() > deadline:
            show(f"jigd demo: {depth} message(s) not yet published stay in the outbox")
            return
        await asyncio.sleep(POLL_S / 4)
    show("jigd demo: every result and summary is published")


def stop_on_signal() -> None:
    """Let SIGTERM end a demo the way Ctrl-C does (children are stopped in `finally`)."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)
