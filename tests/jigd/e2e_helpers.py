"""What the end-to-end tests share: running a demo, polling its slots, and the invariants checked
after every run besides `jigd.demo.check_books` (which `run_demo` applies itself)."""

from __future__ import annotations

import asyncio
import csv
import json
import re
import sys
from pathlib import Path
from typing import Any

import aiohttp

from jigd.demo import DemoOptions, DemoRun, run_demo

WAIT_S = 60.0
SCRAPE_S = 20.0  # one /metrics reading, under the load of the whole suite


def results(workdir: Path) -> list[dict[str, str]]:
    with (workdir / "reports" / "results.csv").open(encoding="utf-8", newline="") as file:
        return list(csv.DictReader(file))


def truth(workdir: Path) -> dict[str, Any]:
    found: dict[str, Any] = json.loads((workdir / "ground-truth.json").read_text("utf-8"))
    return found


def no_hub_left_unbootable(workdir: Path) -> None:
    """Only a hub dealt `bricked_after_reset` or `never_boots` may be bricked, and no swap is
    left half done."""
    for hub in truth(workdir)["hubs"]:
        if hub["bricked"]:
            assert {"bricked_after_reset", "never_boots"} & set(hub["faults"]), hub
        assert not hub["swap_in_progress"], hub


async def demo(options: DemoOptions, during: Any = None) -> tuple[int, list[str]]:
    lines: list[str] = []
    code = await run_demo(options, show=lines.append, during=during)
    return code, lines


async def wait_for_slot(run: DemoRun, predicate: Any, timeout_s: float = WAIT_S) -> dict[str, Any]:
    """Poll the control API until a slot matches `predicate`; return it."""
    async with asyncio.timeout(timeout_s):
        while True:
            status = await run.client.request("GET", "/v1/status")
            for rig in status["rigs"]:
                for slot in rig["slots"]:
                    if predicate(slot):
                        return dict(slot)
            await asyncio.sleep(0.05)


def set_timeouts(config: Path, **seconds: float) -> None:
    """Change `[timeouts]` values the demo wrote in its config (for the daemon's next start)."""
    text = config.read_text("utf-8")
    for key, value in seconds.items():
        text, found = re.subn(rf"^{key} = .*$", f"{key} = {value}", text, flags=re.MULTILINE)
        assert found == 1, f"the demo config sets {key} once"
    config.write_text(text, encoding="utf-8")


async def jigctl(*args: str, timeout_s: float = WAIT_S) -> tuple[int, str, str]:
    """`jigctl ARGS` as its own process, as a technician runs it: (exit code, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "jigd.ctl",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout_s)
    assert process.returncode is not None
    return process.returncode, out.decode("utf-8"), err.decode("utf-8")


async def metrics_text(port: int) -> str:
    """The daemon's /metrics exposition on `port`, read once."""
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=SCRAPE_S)) as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        return await response.text()
