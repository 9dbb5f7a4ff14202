"""Run a Zephyr native_sim executable (a reference SMP peer) and find its SMP pty.

A native_sim build with two UARTs prints `uart_1 connected to pseudotty: /dev/pts/N` for the
second one, which carries MCUmgr's UART transport in Zephyr's `smp_svr` sample. Tests and
benchmarks talk to that pty directly; `sim.exe_hub` puts such processes behind a slot's port.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = [
    "NATIVE_SIM_START_TIMEOUT_S",
    "NATIVE_SIM_STOP_TIMEOUT_S",
    "PEERS_ENV",
    "SMP_PTY_LINE",
    "NativeSim",
    "flash_copy",
    "native_sim",
    "zephyr_peers_dir",
]

SMP_PTY_LINE: Final = re.compile(rb"^uart_1 connected to pseudotty: (\S+)")
NATIVE_SIM_START_TIMEOUT_S: Final = 10.0  # process start to its "uart_1 connected" line
NATIVE_SIM_STOP_TIMEOUT_S: Final = 5.0  # SIGTERM to exit, before SIGKILL
_POLL_S: Final = 0.02
PEERS_ENV: Final = "JIGD_ZEPHYR_PEERS"


def zephyr_peers_dir() -> Path:
    """Where Zephyr's reference peers are: `$JIGD_ZEPHYR_PEERS`, else `../shared/peers/zephyr`
    beside the checkout (they are never copied into the repository)."""
    configured = os.environ.get(PEERS_ENV)
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[2] / "shared" / "peers" / "zephyr"


def flash_copy(template: Path, target: Path) -> Path:
    """A writable copy of a flash file at `target` (an executable writes its flash in place)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, target)
    target.chmod(0o644)
    return target


@dataclass
class NativeSim:
    """A running native_sim executable: its SMP pty and its process."""

    pty: str
    process: asyncio.subprocess.Process


@asynccontextmanager
async def native_sim(
    exe: Path, flash: Path, *args: str, log: Path | None = None
) -> AsyncIterator[NativeSim]:
    """Run `exe` on the flash file `flash` until the block ends (or it exits after a reset).

    Its own output goes to `log` (default: the flash file's name with `.log`), where the SMP
    pty's path is read from. The process is stopped and awaited on every way out.
    """
    log = log or flash.with_suffix(".log")
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            str(exe),
            f"-flash={flash}",
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
        )
    try:
        pty = await _smp_pty(log, process)
        yield NativeSim(pty, process)
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), NATIVE_SIM_STOP_TIMEOUT_S)
            except TimeoutError:
                process.kill()
                await process.wait()


async def _smp_pty(log: Path, process: asyncio.subprocess.Process) -> str:
    try:
        async with asyncio.timeout(NATIVE_SIM_START_TIMEOUT_S):
            while True:
                output = await asyncio.to_thread(log.read_bytes)
                for line in output.splitlines():
                    match = SMP_PTY_LINE.match(line)
                    if match:
                        return match.group(1).decode()
                if process.returncode is not None:
                    raise RuntimeError(
                        f"{log}: the executable exited ({process.returncode}) before its SMP "
                        f"pty was up: {output.decode(errors='replace')[-500:]}"
                    )
                await asyncio.sleep(_POLL_S)
    except TimeoutError:
        raise RuntimeError(
            f"{log}: no 'uart_1 connected to pseudotty' line within "
            f"{NATIVE_SIM_START_TIMEOUT_S:g} s"
        ) from None
