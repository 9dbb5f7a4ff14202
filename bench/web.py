"""Web view load benchmark: 20 browsers on a 16-rig x 8-slot station.

Run: .venv/bin/python -m bench.web            (about four minutes)

The demo's station (`jigsim serve` and `jigd run` as separate processes, tests/jigd/web) with
16 rigs x 8 slots at 115200 baud flashes a pallet with no faults, large enough to keep the slots
busy throughout. Once the slots are busy, three windows of WINDOW_S each, one after the other:

- 0 clients: nobody connected to the web view (before, and again after, the 20 clients: the
  station's own load may drift, so the rise is taken against the mean of the two);
- 20 clients: a separate process (`python -m bench.web --clients URL N SECONDS`) loads the
  station page, a batch page and the static files as a browser does, then holds N Server-Sent
  Events streams open, reading every event (20 headless chromium pages on the 2-core machine
  would measure chromium, not the daemon; the daemon's work per client is the same: the pages
  once, then the stream).

For each window: the hubs finished in it (the station's own load), the daemon's event-loop lag
p99 (`loop_lag_ms` from /v1/status, its LoopLagMonitor over the last 60 s, read at the window's
end, so it covers that window only) and its CPU (utime + stime of its process in
/proc/<pid>/stat over the window). Targets: p99 under 10 ms with 20 clients, CPU rise under 5%
of a core. Exit status 1 if a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Final

import aiohttp

from jigd.demo.workdir import DemoOptions
from tests.jigd.web.station import WebStation, web_station

WINDOW_S: Final = 65.0  # longer than the lag monitor's 60 s window
WARMUP_S: Final = 25.0
CLIENTS: Final = 20
LAG_TARGET_MS: Final = 10.0
CPU_RISE_TARGET: Final = 0.05  # of one core


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _done(station: WebStation) -> int:
    batch = await station.client.request("GET", f"/v1/batches/{station.batch}")
    return int(batch["expected"]) - int(batch["pending"])


async def window(station: WebStation, pid: int, label: str) -> tuple[float, float]:
    """Print and return the daemon's CPU share of one core and loop lag p99 (ms)."""
    d0, c0, t0 = await _done(station), cpu_seconds(pid), time.monotonic()
    await asyncio.sleep(WINDOW_S)
    c1, t1 = cpu_seconds(pid), time.monotonic()
    status = await station.client.request("GET", "/v1/status")
    busy = sum(s["state"] == "busy" for r in status["rigs"] for s in r["slots"])
    cpu, lag = (c1 - c0) / (t1 - t0), float(status["loop_lag_ms"]["p99"])
    print(
        f"{label}: CPU {cpu:.1%} of a core, loop lag p99 {lag} ms; "
        f"{await _done(station) - d0} hubs finished, {busy} slots busy at the end",
        flush=True,
    )
    return cpu, lag


async def clients(url: str, count: int, seconds: float) -> None:
    """Load the pages as a browser does, then read `count` event streams for `seconds`."""
    async with aiohttp.ClientSession() as session:
        status = await (await session.get(f"{url}/api/v1/status")).json()
        batch = status["batches"][0]["batch"]
        for path in (
            "/",
            "/static/style.css",
            "/static/app.js",
            "/static/station.js",
            f"/batches/{batch}",
            "/static/batch.js",
            f"/api/v1/batches/{batch}",
            f"/api/v1/batches/{batch}/guids",
            "/api/v1/session",
        ):
            async with session.get(url + path) as response:
                assert response.status == 200, (path, response.status)
                await response.read()
        counts = [0] * count

        async def stream(i: int) -> None:
            async with session.get(url + "/api/v1/events", timeout=None) as response:
                async for line in response.content:
                    if line.startswith(b"event:"):
                        counts[i] += 1

        tasks = [asyncio.create_task(stream(i)) for i in range(count)]
        await asyncio.sleep(1.0)
        print("connected", flush=True)
        await asyncio.sleep(seconds)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        print(f"events per client: min {min(counts)}, max {max(counts)}", flush=True)


async def main() -> int:
    with tempfile.TemporaryDirectory(prefix="jw-") as tmp:
        options = DemoOptions(
            hubs=3000, rigs=16, faults="none", seed=7, baud=115200, workdir=Path(tmp) / "d"
        )
        async with web_station(options) as station:
            assert station.daemon.proc is not None
            pid = station.daemon.proc.pid
            print(f"16 rigs x 8 slots; web view on {station.url}; warming up {WARMUP_S:g} s")
            await asyncio.sleep(WARMUP_S)
            cpu_before, _ = await window(station, pid, "0 clients ")
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.web", "--clients", station.url, str(CLIENTS),
                str(WINDOW_S + 5), stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            assert proc.stdout is not None
            line = await proc.stdout.readline()
            if line.strip() != b"connected":
                print(f"the clients did not connect: {line!r}")
                return 1
            cpu20, lag20 = await window(station, pid, f"{CLIENTS} clients")
            print((await proc.stdout.read()).decode().strip())
            await proc.wait()
            cpu_after, _ = await window(station, pid, "0 clients ")
    rise = cpu20 - (cpu_before + cpu_after) / 2
    print(
        f"loop lag p99 with {CLIENTS} clients: {lag20} ms, {lag20 / LAG_TARGET_MS:.0%} of the "
        f"{LAG_TARGET_MS:g} ms target"
    )
    print(
        f"CPU rise: {rise:+.1%} of a core, {rise / CPU_RISE_TARGET:.0%} of the "
        f"{CPU_RISE_TARGET:.0%} target"
    )
    return 0 if lag20 < LAG_TARGET_MS and rise < CPU_RISE_TARGET else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", nargs=3, metavar=("URL", "N", "SECONDS"))
    args = parser.parse_args()
    if args.clients:
        url, n, seconds = args.clients
        asyncio.run(clients(url, int(n), float(seconds)))
        sys.exit(0)
    sys.exit(asyncio.run(main()))
