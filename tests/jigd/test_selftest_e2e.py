"""Slots out of service and the rig self-test, end to end: `jigsim serve` and `jigd run` as
processes, `jigctl` as a process, a real mosquitto, the daemon's /metrics.

A healthy simulated rig passes `jigctl selftest`; one with a dead power switch, a dead LED and a
port that does not open (`jigsim serve --break`) fails it naming each part, and those slots end
disabled with the reason, on MQTT and in the metrics. A disabled slot starts no hub until it is
enabled again.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest

from jigd import control_api as api
from jigd.ctl import ControlClient
from jigd.demo import DemoOptions, DemoRun, Paths, run_demo
from jigd.demo.process import daemon_process, sim_process, wait_for_daemon, wait_for_paths
from jigd.demo.workdir import STATION, prepare
from jigd.store.sqlite import SqliteStore
from tests.jigd.e2e_helpers import jigctl, metrics_text, results, wait_for_slot
from tests.jigd.mqtt_helpers import Subscriber, config_for
from tests.services import Mosquitto, free_port

pytestmark = pytest.mark.slow  # real processes

WAIT_S = 60.0
BROKEN = {3: "power switch", 5: "LED", 7: "port"}  # rig 2's broken slots, as reasons name them
BREAK = "rig2/slot3:power,rig2/slot5:led,rig2/slot7:port"


async def _jigctl(socket: Path, *args: str) -> tuple[int, str]:
    """jigctl on the daemon's socket: its exit code and all it wrote."""
    code, out, err = await jigctl("--socket", str(socket), *args, timeout_s=WAIT_S)
    return code, out + err


async def _metrics(port: int) -> dict[str, float]:
    """Every sample of the daemon's /metrics, by its name and labels as written."""
    samples = {}
    for line in (await metrics_text(port)).splitlines():
        if match := re.fullmatch(r"([a-z_]+(?:\{[^}]*\})?) ([-0-9.e+]+)", line):
            samples[match.group(1)] = float(match.group(2))
    return samples


def _slots(status: api.StatusResponse, rig: int) -> dict[int, api.SlotView]:
    [found] = [r for r in status.rigs if r.rig == rig]
    return {s.slot: s for s in found.slots}


async def _until(check: Any, what: str) -> None:
    async with asyncio.timeout(WAIT_S):
        while not await check():  # noqa: ASYNC110 - the daemon's state, seen through its API
            await asyncio.sleep(0.1)
    assert what


async def test_selftest_passes_on_a_healthy_rig_and_disables_broken_parts(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    options = DemoOptions(
        hubs=0,
        rigs=2,
        slots=8,
        faults="none",
        workdir=tmp_path / "station",
        mqtt=config_for(mosquitto.port),
        metrics_port=free_port(),
    )
    paths = Paths(options.workdir)
    await asyncio.to_thread(prepare, options, paths)
    sim = sim_process(options, paths)
    sim.argv += ["--break", BREAK]
    daemon = daemon_process(paths)
    client = ControlClient(paths.socket)
    published = [paths.sim / "rig1" / "ctl", paths.sim / "rig2" / "ctl"] + [
        paths.sim / f"rig{r}" / f"slot{s}" for r in (1, 2) for s in range(1, 9) if (r, s) != (2, 7)
    ]
    async with Subscriber(mosquitto.port) as alerts:
        try:
            await daemon.start()
            await wait_for_daemon(client, daemon, WAIT_S)
            await sim.start()
            await wait_for_paths(published, sim, WAIT_S)
            assert not (paths.sim / "rig2" / "slot7").exists()

            async def rigs_up() -> bool:
                return all(r.up for r in (await client.call(api.STATUS)).rigs)

            await _until(rigs_up, "both rigs up")

            code, out = await _jigctl(paths.socket, "selftest", "1")
            assert code == 0, out
            assert "FAIL" not in out
            assert re.search(r"^\d+ passed, 0 failed$", out, re.MULTILINE), out

            code, out = await _jigctl(paths.socket, "selftest", "2")
            assert code == 1, out
            failed = [line.split() for line in out.splitlines() if " FAIL " in line]
            assert [(f[0], f[1]) for f in failed] == [
                ("2/3", "power"),
                ("2/5", "led"),
                ("2/7", "port"),
            ]
            assert "does not switch" in out
            assert "does not light" in out
            assert "3 failed" in out

            status = await client.call(api.STATUS)
            for rig in (1, 2):
                for number, slot in _slots(status, rig).items():
                    if rig == 2 and number in BROKEN:
                        assert slot.disabled is not None
                        assert slot.disabled.reason.startswith(f"selftest: {BROKEN[number]}: ")
                        assert slot.disabled.by == "selftest"
                    else:
                        assert slot.disabled is None, (rig, number)
            [rig2] = [r for r in status.rigs if r.rig == 2]
            assert rig2.selftest is not None
            assert rig2.selftest.failed == 3

            code, out = await _jigctl(paths.socket, "status")
            assert code == 0
            assert re.search(r"rig 1 self-test \S+: \d+ passed, 0 failed", out), out
            assert re.search(r"rig 2 self-test \S+: \d+ passed, 3 failed", out), out
            assert re.search(r"^2/3 +disabled .*selftest: power switch", out, re.MULTILINE), out

            samples = await _metrics(options.metrics_port or 0)
            for number in range(1, 9):
                disabled = samples[f'jigd_slot_disabled{{rig="2",slot="{number}"}}']
                assert disabled == (1.0 if number in BROKEN else 0.0), number
            assert samples['jigd_selftest_check{check="power",rig="2",slot="3"}'] == 0.0
            assert samples['jigd_selftest_check{check="led",rig="2",slot="5"}'] == 0.0
            assert samples['jigd_selftest_check{check="port",rig="2",slot="7"}'] == 0.0
            assert samples['jigd_selftest_check{check="power",rig="1",slot="3"}'] == 1.0
            assert samples['jigd_selftest_check{check="controller",rig="1",slot=""}'] == 1.0
            assert samples['jigd_selftest_timestamp_seconds{rig="2"}'] > 0

            def disabled_alerts(sub: Subscriber) -> list[dict[str, Any]]:
                return [m.data for m in sub.of("jigd.alert/1") if m.data["kind"] == "slot_disabled"]

            await alerts.wait_for(lambda s: len(disabled_alerts(s)) == 3, "3 slot_disabled")
            assert sorted((a["rig"], a["slot"]) for a in disabled_alerts(alerts)) == [
                (2, 3),
                (2, 5),
                (2, 7),
            ]

            # Disabled slots stay disabled across a restart of the daemon.
            await daemon.stop()
            daemon = daemon_process(paths)
            await daemon.start()
            await wait_for_daemon(client, daemon, WAIT_S)
            slots = _slots(await client.call(api.STATUS), 2)
            assert sorted(n for n, s in slots.items() if s.disabled is not None) == [3, 5, 7]

            code, out = await _jigctl(paths.socket, "slot", "enable", "2", "3")
            assert code == 0, out
            assert out.startswith("rig 2 slot 3 enabled: put back in service")
            code, out = await _jigctl(paths.socket, "slot", "disable", "9", "1", "--reason", "x")
            assert code == 2
            assert "rig 9 is not in the station's config" in out
            code, out = await _jigctl(paths.socket, "slot", "disable", "2", "8", "--reason", "")
            assert code == 2
            assert "reason" in out
        finally:
            await daemon.stop()
            await sim.stop()


def _attempts_in(workdir: Path, rig: int, slot: int) -> list[Any]:
    async def read() -> list[Any]:
        async with await SqliteStore.open(Paths(workdir).store, station=STATION) as store:
            found = []
            for batch in await store.list_batches():
                for state in await store.batch_results(batch.batch_id):
                    found += [
                        a
                        for a in await store.attempts(batch.batch_id, state.guid)
                        if (a.rig, a.slot) == (rig, slot)
                    ]
            return found

    return asyncio.run(read())


async def test_a_disabled_slot_starts_no_hub_until_enabled(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    options = DemoOptions(
        hubs=12,
        rigs=1,
        slots=4,
        faults="none",
        missing=0,  # every hub of the batch arrives, none other: one is left in the slot
        extra=0,
        seed=3,
        workdir=tmp_path / "demo",
        live=False,
        mqtt=config_for(mosquitto.port),
        metrics_port=free_port(),
        timeout_s=120.0,
    )
    port = options.metrics_port or 0
    window: dict[str, Any] = {}

    async def disable_then_enable(run: DemoRun) -> None:
        # Disabled while it flashes a hub: that hub is finished first.
        busy = await wait_for_slot(
            run, lambda s: (s["slot"], s["state"], s["stage"]) == (2, "busy", "upload")
        )
        window["busy_guid"] = busy["guid"]
        body = api.SlotServiceRequest(rig=1, slot=2, reason="worn pogo pin", by="test")
        answer = await run.client.call(api.DISABLE_SLOT, body=body)
        window["disabled"], window["finishing"] = answer.at, answer.finishing
        samples = await _metrics(port)
        window["gauge_disabled"] = samples['jigd_slot_disabled{rig="1",slot="2"}']
        # Every hub but the one the operator put in the disabled slot gets done; that one
        # waits there, not started, however long it is left.
        last = -1
        while True:
            batch, _ = await run.progress()
            if batch.pending == 1 and batch.pending == last:
                break
            last = batch.pending
            await asyncio.sleep(3.0)
        slot = _slots(await run.client.call(api.STATUS), 1)[2]
        window["waiting"] = (slot.state, slot.guid, slot.disabled is not None)
        body = api.SlotServiceRequest(rig=1, slot=2, reason="pin replaced", by="test")
        window["enabled"] = (await run.client.call(api.ENABLE_SLOT, body=body)).at
        samples = await _metrics(port)
        window["gauge_enabled"] = samples['jigd_slot_disabled{rig="1",slot="2"}']

    async with Subscriber(mosquitto.port) as sub:
        lines: list[str] = []
        code = await run_demo(options, show=lines.append, during=disable_then_enable)
        assert code == 0, "\n".join(lines)
        kinds = [
            (m.data["kind"], m.data["slot"])
            for m in sub.of("jigd.alert/1")
            if m.data["kind"].startswith("slot_")
        ]
        assert kinds == [("slot_disabled", 2), ("slot_enabled", 2)]
    assert window["gauge_disabled"] == 1.0
    assert window["gauge_enabled"] == 0.0
    assert window["waiting"] == ("empty", None, True)
    assert window["finishing"] is True
    finished = [r for r in results(options.workdir) if r["guid"] == window["busy_guid"]]
    assert [(r["outcome"], r["rig"], r["slot"]) for r in finished] == [("reflashed", "1", "2")]
    attempts = await asyncio.to_thread(_attempts_in, options.workdir, 1, 2)
    started_while_disabled = [
        a for a in attempts if window["disabled"] < a.started < window["enabled"]
    ]
    assert started_while_disabled == []
    assert any(a.started > window["enabled"] for a in attempts)  # enabled: it flashes again
    summary = json.loads((options.workdir / "reports" / "summary.json").read_text("utf-8"))
    assert summary["counts"]["reflashed"] + summary["counts"]["already_current"] == 12


async def test_selftest_at_start_tests_slots_holding_hubs_before_flashing(tmp_path: Path) -> None:
    options = DemoOptions(
        hubs=2, rigs=1, slots=4, faults="none", missing=0, extra=0, workdir=tmp_path / "station"
    )
    paths = Paths(options.workdir)
    await asyncio.to_thread(prepare, options, paths)
    with paths.config.open("a", encoding="utf-8") as config:
        config.write("\n[selftest]\nat_start = true\n")
    sim = sim_process(options, paths)
    daemon = daemon_process(paths)
    client = ControlClient(paths.socket)

    def inserted() -> int:
        return paths.root.joinpath("jigsim.log").read_text("utf-8").count(" inserted")

    try:
        await sim.start()  # the hubs are in their slots before jigd starts
        await wait_for_paths([paths.sim / "rig1" / "ctl"], sim, WAIT_S)

        async def hubs_in() -> bool:
            return inserted() == 2

        await _until(hubs_in, "2 hubs inserted")
        await daemon.start()
        await wait_for_daemon(client, daemon, WAIT_S)

        async def tested() -> bool:
            return (await client.call(api.STATUS)).rigs[0].selftest is not None

        await _until(tested, "the self-test at start")
        [rig] = (await client.call(api.STATUS)).rigs
        assert rig.selftest is not None
        assert rig.selftest.failed == 0, rig.selftest.checks
        echoed = [c for c in rig.selftest.checks if c.check == "echo"]
        assert len(echoed) == 2  # both hubs answered echo after their power toggle
        assert all(c.passed for c in echoed)
        checked = {(c.slot, c.check) for c in rig.selftest.checks}
        for number in range(1, 5):
            assert {(number, "power"), (number, "led"), (number, "port")} <= checked
        assert all(s.disabled is None for s in rig.slots)
    finally:
        await daemon.stop()
        await sim.stop()
