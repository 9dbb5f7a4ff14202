"""The rig supervisor against a simulated rig controller on a real pty (`sim.rig`)."""

from __future__ import annotations

import asyncio
import logging
import random
import re
from pathlib import Path
from typing import Final

import pytest

from drivers.registry import load_driver
from firmware_catalog import Catalog
from jigd import rig as rig_module
from jigd.backoff import Backoff
from jigd.config import RetryConfig, RigConfig, SlotConfig, TimeoutConfig
from jigd.rig import BACKOFF_FIRST_S, RigSupervisor
from jigd.secrets import MasterKeys
from jigd.slot import SlotDeps
from jigd.store.sqlite import SqliteStore
from sim.rig import Rig

OUTAGES: Final = 4
SEED: Final = 13
BACKOFF_MAX_S: Final = 30.0
WAIT_S: Final = 20.0


class _PingCountingRig(Rig):
    """A simulated rig that counts the health checks (PING) it answers."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory, 1, 1)
        self.pings = 0
        self.pinged = asyncio.Event()

    def command(self, raw: bytes) -> str | None:
        if raw.strip() == b"PING":
            self.pings += 1
            self.pinged.set()
        return super().command(raw)

    async def wait_pings(self, count: int) -> None:
        while self.pings < count:
            self.pinged.clear()
            await self.pinged.wait()


def _no_catalog() -> Catalog:
    raise AssertionError("no hub is flashed in this test")


async def test_a_rig_that_served_reconnects_without_a_growing_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The reconnection backoff starts afresh once a connection answered a health check: a rig
    that went away four times, each time after working again, waits the first backoff step
    each time (it used to wait longer every time, up to rig_reconnect_max_s)."""
    monkeypatch.setattr(rig_module, "HEALTH_INTERVAL_S", 0.05)
    caplog.set_level(logging.INFO, logger="jigd.rig")
    up = asyncio.Event()
    background: set[asyncio.Task[None]] = set()
    async with (
        _PingCountingRig(tmp_path / "sim") as sim_rig,
        await SqliteStore.open(tmp_path / "jigd.sqlite3") as store,
    ):

        def on_rig_state(number: int, is_up: bool) -> None:
            if is_up:
                up.set()
            else:  # the rig is back before the supervisor tries again
                task = asyncio.ensure_future(sim_rig.reappear())
                background.add(task)
                task.add_done_callback(background.discard)

        config = RigConfig(
            rig=1,
            controller=sim_rig.ctl_path,
            slots=[SlotConfig(slot=1, port=str(tmp_path / "sim" / "rig1" / "slot1"))],
        )
        deps = SlotDeps(
            store=store,
            catalog=_no_catalog,
            master_keys=MasterKeys({}, tmp_path / "keys.toml"),
            driver=load_driver("smp"),
            pilot_models=(),
            timeouts=TimeoutConfig(),
            retries=RetryConfig(),
        )
        supervisor = RigSupervisor(
            config,
            deps,
            backoff_max_s=BACKOFF_MAX_S,
            on_rig_state=on_rig_state,
            rng=random.Random(SEED),
        )
        task = asyncio.create_task(supervisor.run(), name="rig supervisor")
        try:
            async with asyncio.timeout(WAIT_S):
                for _ in range(OUTAGES):
                    await up.wait()
                    up.clear()
                    # Two health checks: the first one was answered.
                    await sim_rig.wait_pings(sim_rig.pings + 2)
                    await sim_rig.vanish()
                await up.wait()
        finally:
            task.cancel()
            await asyncio.gather(task, *background, return_exceptions=True)
    waits = [
        float(m.group(1))
        for r in caplog.records
        if (m := re.fullmatch(r"rig 1: reconnecting in ([0-9.]+) s", r.getMessage()))
    ]
    first_steps = Backoff(BACKOFF_FIRST_S, BACKOFF_MAX_S, random.Random(SEED))
    assert waits == [round(first_steps.delay(0), 2) for _ in range(OUTAGES)]
