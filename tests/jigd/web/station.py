"""A station with the web view for tests and bench/web.py: the demo's daemon and simulator as
real processes (jigd.demo), its first batch imported, serving the view on a free port."""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final

import pytest

from jigd import control_api as api
from jigd.ctl import ControlClient
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
from tests.services import free_port

CHROMIUM: Final = Path("/usr/bin/chromium")
CHROMIUM_ARGS: Final = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
OUTPUT: Final = Path(__file__).resolve().parents[3] / "test-output" / "web"


def chromium() -> Path:
    """Debian's chromium; skip (fail under CI) when it is missing."""
    if CHROMIUM.is_file():
        return CHROMIUM
    reason = f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason)
    pytest.skip(reason)


@dataclass
class WebStation:
    paths: Paths
    client: ControlClient
    daemon: Process
    sim: Process
    batch: str
    url: str

    @property
    def token(self) -> str:
        return self.paths.web_token.read_text("utf-8").strip()


@asynccontextmanager
async def web_station(options: DemoOptions) -> AsyncIterator[WebStation]:
    """The demo's station with the web view on a free port, batch imported, hubs loading."""
    port = free_port()
    options = replace(options, web_port=port, live=False)
    paths = Paths(options.workdir)
    await asyncio.to_thread(prepare, options, paths)
    client = ControlClient(paths.socket)
    daemon = daemon_process(paths)
    sim = sim_process(options, paths)
    try:
        await daemon.start()
        await wait_for_daemon(client, daemon, START_TIMEOUT_S)
        request = api.BatchImportRequest(
            manifest=paths.manifest.read_text("utf-8"),
            source=paths.manifest.name,
            booking="WO-WEB-1",
            party="PARTY-<b>A</b>",  # rendered as text, never as markup
        )
        imported = await client.call(api.IMPORT_BATCH, body=request)
        await sim.start()
        await wait_for_paths(rig_paths(options, paths), sim, START_TIMEOUT_S)
        yield WebStation(paths, client, daemon, sim, imported.batch, f"http://127.0.0.1:{port}")
    finally:
        await sim.stop()
        await daemon.stop()


def short_dir() -> tempfile.TemporaryDirectory[str]:
    """A work directory whose control socket path fits a Unix socket address."""
    return tempfile.TemporaryDirectory(prefix="jw-")
