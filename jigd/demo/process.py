"""The demo's child processes (`jigsim serve`, `jigd run`), run with asyncio so that waiting
for them never blocks the event loop, and the waits for them to be ready."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from jigd import control_api as api
from jigd.ctl import ControlClient, ControlError
from jigd.demo.workdir import DemoOptions, Paths
from sim.serve import USB_INFO_FILE

__all__ = [
    "Process",
    "daemon_process",
    "rig_paths",
    "sim_process",
    "wait_for_daemon",
    "wait_for_paths",
]

START_TIMEOUT_S: Final = 30.0
STOP_TIMEOUT_S: Final = 30.0


@dataclass
class Process:
    """A child process whose output goes to a log file, run without blocking the event loop."""

    name: str
    argv: list[str]
    log: Path
    proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        log = await asyncio.to_thread(self.log.open, "ab")
        with log:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                stdin=asyncio.subprocess.DEVNULL,
            )

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def signal(self, sig: int) -> None:
        if self.running and self.proc is not None:
            with contextlib.suppress(ProcessLookupError):  # it has just exited
                self.proc.send_signal(sig)

    async def wait(self, timeout_s: float | None = None) -> int:
        """Its exit code, once it has exited (TimeoutError after `timeout_s`)."""
        if self.proc is None:
            raise RuntimeError(f"{self.name} was never started")
        async with asyncio.timeout(timeout_s):
            return await self.proc.wait()

    async def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM, then SIGKILL after `timeout_s`; the exit code."""
        if self.proc is None:
            return None
        if self.proc.returncode is None:
            self.signal(signal.SIGTERM)
            try:
                await self.wait(timeout_s)
            except TimeoutError:
                await self.kill()
        return self.proc.returncode

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.signal(signal.SIGKILL)
            await self.proc.wait()


def sim_process(options: DemoOptions, paths: Paths, keys: Path | None = None) -> Process:
    """`jigsim serve` for the bench under `paths` (keys from `keys`, default `paths.keys`)."""
    argv = [
        sys.executable, "-m", "sim.cli", "serve",
        "--dir", str(paths.sim),
        "--rigs", str(options.rigs),
        "--slots", str(options.slots),
        "--pallet", str(paths.pallet),
        "--faults", options.hub_faults,
        "--seed", str(options.seed),
        "--ground-truth", str(paths.ground_truth),
        "--keys", str(keys or paths.keys),
        "--image-size", str(options.image_size),
        "--framing", options.framing,
        "--handling-s", str(options.handling_s),
        "--baud", str(options.baud),
        "--transport", options.transport,
    ]  # fmt: skip
    if options.hub_exe is not None:
        argv += ["--hub-exe", str(options.hub_exe.resolve())]
    if options.worn_slot is not None:
        argv += ["--worn-slot", "{}/{}".format(*options.worn_slot)]
    return Process("jigsim", argv, paths.root / "jigsim.log")


def daemon_process(paths: Paths) -> Process:
    argv = [sys.executable, "-m", "jigd.cli", "run", "--config", str(paths.config)]
    return Process("jigd", argv, paths.root / "jigd.log")


def rig_paths(options: DemoOptions, paths: Paths) -> list[Path]:
    """Every rig controller and slot pty the simulator publishes, and its USB bus's `usb.json`
    when some rigs are USB: the simulator is ready when all exist."""
    slots = [f"slot{slot}" for slot in range(1, options.slots + 1)]
    found = [
        paths.sim / f"rig{rig}" / name
        for rig in range(1, options.rigs + 1)
        for name in ("ctl", *([] if rig in options.usb_rigs else slots))
    ]
    return [*found, paths.sim / USB_INFO_FILE] if options.usb_rigs else found


async def wait_for_paths(paths: Sequence[Path], process: Process, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not all(p.exists() for p in paths):
        if not process.running:
            raise RuntimeError(f"{process.name} exited at start; see {process.log}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{process.name} did not start within {timeout_s:g} s")
        await asyncio.sleep(0.05)


async def wait_for_daemon(client: ControlClient, process: Process, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if not process.running:
            raise RuntimeError(f"jigd exited at start; see {process.log}")
        try:
            await client.call(api.STATUS)
        except ControlError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"jigd did not answer within {timeout_s:g} s") from None
            await asyncio.sleep(0.1)
        else:
            return
