"""The capacity plan (jigd.plan, `jigctl plan`): its arithmetic on a store whose hubs took known
times (built through the store contract with a clock the test sets), the model mix and what-if
inputs, and the command against a running daemon and offline."""

from __future__ import annotations

import asyncio
import importlib.util
import json
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from jigd.ctl import main as jigctl
from jigd.model import DeviceModel, Outcome, Stage
from jigd.plan import (
    BaudWhatIf,
    PlanError,
    PlanInputs,
    make_plan,
    measure,
    parse_mix,
    parse_what_if,
    wire_s,
)
from jigd.station import Station
from jigd.store import HubTimes, open_store
from jigd.store.contract import utc_now
from jigd.store.sqlite import sqlite_url
from sim.timing import Timing, physical_bound
from tests.jigd.store.books import (
    MODEL,
    T0,
    UPLOADED,
    SetClock,
    guid,
    result,
    rows,
    timed_flash,
)

OTHER = DeviceModel(0x1086, 0x57310201)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _inputs(**more: Any) -> PlanInputs:
    """300,000 hubs a year over 250 days of 7.5 hours, and `more`."""
    return PlanInputs(hubs_per_year=300_000, days=250, hours_per_day=7.5, **more)


async def _known_hubs(url: str) -> list[HubTimes]:
    """MODEL: four hubs reflashed, uploads 10/12/12/14 s, then 5/5/5/6 s to the result, one of
    them after a failed attempt of 8 s. OTHER (on rig 2): one reflashed (20 s + 10 s), one
    already current (1 s), the latter in the next clock hour."""
    clock = SetClock()
    async with await open_store(url, clock=clock) as store:
        batch = await store.import_batch(rows(*range(1, 7)), "WO", "P", "m.csv")
        for n, (upload, activate) in enumerate([(10, 5), (12, 5), (12, 5), (14, 6)], start=1):
            await timed_flash(
                store,
                clock,
                batch,
                n,
                start=T0 + timedelta(minutes=n),
                upload_s=upload,
                activate_s=activate,
                failed_s=(8,) if n == 4 else (),
            )
        await timed_flash(
            store, clock, batch, 5, start=T0, upload_s=20, activate_s=10, model=OTHER, rig=2
        )
        await timed_flash(
            store,
            clock,
            batch,
            6,
            start=T0 + timedelta(hours=1),
            upload_s=0,
            activate_s=1,
            model=OTHER,
            outcome=Outcome.ALREADY_CURRENT,
            rig=2,
        )
        return await store.hub_times()


@pytest.fixture
async def hubs(tmp_path: Path) -> list[HubTimes]:
    return await _known_hubs(sqlite_url(tmp_path / "plan.sqlite3"))


def test_measured_times_per_model(hubs: list[HubTimes]) -> None:
    times = measure(hubs, rigs=3, slots_per_rig=8, image_bytes={MODEL: 262_144})
    a, b = times.models
    assert (a.model, a.hubs, a.reflashed, a.first_pass, a.retries) == (MODEL, 4, 4, 3, 1)
    assert a.retry_s == 2.0  # 8 s before the last attempt, over 4 hubs
    assert a.upload is not None
    assert (a.upload.count, a.upload.median_s, a.upload.p90_s) == (4, 12.0, 13.4)
    assert a.activate is not None
    assert (a.activate.median_s, a.activate.p90_s) == (5.0, 5.7)
    assert (a.check, a.failing, a.image_bytes) == (None, None, 262_144)
    assert (b.model, b.reflashed, b.already_current, b.first_pass) == (OTHER, 1, 1, 2)
    assert b.check is not None
    assert b.check.median_s == 1.0
    assert b.image_bytes is None
    assert [(h.rig, h.hour, h.hubs) for h in times.hourly] == [
        (1, T0, 4),
        (2, T0, 1),
        (2, T0 + timedelta(hours=1), 1),
    ]


def test_plan_arithmetic_on_known_times(hubs: list[HubTimes]) -> None:
    times = measure(hubs, rigs=3, slots_per_rig=1)
    plan = make_plan(times, _inputs(handling_s=20, utilisation=0.85))
    a, b = plan.models
    # MODEL: 12 + 5 s a hub, 2 s of retries, 20 s handling; OTHER: half 30 s, half 1 s.
    assert (a.hub_s, a.busy_s) == (17.0, 39.0)
    assert (b.hub_s, b.busy_s) == (30.0, 35.5)
    assert a.share == pytest.approx(4 / 6)
    assert plan.hub_s == pytest.approx(4 / 6 * 17 + 2 / 6 * 30)
    assert plan.busy_s == pytest.approx(4 / 6 * 39 + 2 / 6 * 35.5)
    assert plan.busy_p90_s == pytest.approx(4 / 6 * (13.4 + 5.7 + 2 + 20) + 2 / 6 * 35.5)
    assert plan.required_hubs_per_hour == 160.0  # 300,000 / (250 * 7.5)
    assert plan.hubs_per_slot_hour == pytest.approx(3600 / plan.busy_s)
    slots = 160 * plan.busy_s / 3600 / 0.85  # 1.98
    assert plan.slots_needed == pytest.approx(slots)
    assert (plan.rigs_needed, plan.rigs_needed_p90) == (2, 3)  # rigs of one slot
    assert a.first_pass_yield == 0.75
    assert any("300000 hubs a year over 250 days of 7.5" in line for line in plan.assumptions)


def test_a_given_mix_replaces_the_measured_one(hubs: list[HubTimes]) -> None:
    times = measure(hubs, rigs=1, slots_per_rig=8)
    plan = make_plan(times, _inputs(mix={MODEL: 0.25, OTHER: 0.75}))
    assert plan.busy_s == pytest.approx(0.25 * 39 + 0.75 * 35.5)
    assert any("Device Model mix (given)" in line for line in plan.assumptions)
    unknown = DeviceModel(0x1086, 0x1)
    with pytest.raises(PlanError, match="no hub of Device Model 1086/00000001"):
        make_plan(times, _inputs(mix={unknown: 1.0}))


def test_what_if_uploads_at_the_physical_bound_of_the_bench(hubs: list[HubTimes]) -> None:
    size = 262_144
    for framing in ("raw", "console"):
        bound = physical_bound(size, Timing(baud=115_200, buf_size=2048), framing)
        assert wire_s(size, BaudWhatIf(baud=115_200, framing=framing)) == bound.framed_wire_s
    times = measure(hubs, rigs=1, slots_per_rig=8, image_bytes={MODEL: size, OTHER: size})
    what_if = BaudWhatIf(baud=115_200)
    plan = make_plan(times, _inputs(handling_s=0, what_if=what_if))
    a, _ = plan.models
    wire = physical_bound(size, Timing(baud=115_200)).framed_wire_s  # 23.06 s
    assert a.upload_s == pytest.approx(wire)
    assert a.busy_s == pytest.approx(wire + 5 + 2)
    assert any("115200 baud" in line for line in plan.assumptions)
    missing = measure(hubs, rigs=1, slots_per_rig=8)
    with pytest.raises(PlanError, match="no image in the catalog"):
        make_plan(missing, _inputs(what_if=what_if))


def test_nothing_to_plan_from_an_empty_store() -> None:
    with pytest.raises(PlanError, match="no hub with an outcome"):
        make_plan(measure([], rigs=1, slots_per_rig=8), _inputs())


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("model,share\n", "line 1: the header must be device_model,share"),
        ("device_model,share\n1086/57310102,0.5\n1086/57310201,0.4\n", "sum to 0.9, not 1"),
        ("device_model,share\n1086/57310102,1\n1086/57310102,0\n", "line 3: share '0'"),
        ("device_model,share\n1086/57310102,half\n", "line 2: share 'half' is not a number"),
        ("device_model,share\n10/86,1\n", "line 2: device_model"),
        ("device_model,share\n1086/57310102,0.5,x\n", "line 2: expected 2 fields, found 3"),
        ("device_model,share\n", "no Device Model listed"),
    ],
)
def test_a_bad_mix_is_refused_naming_the_line(text: str, error: str) -> None:
    with pytest.raises(PlanError, match=error) as caught:
        parse_mix(text, "mix.csv")
    assert str(caught.value).startswith("mix.csv: ")


def test_mix_and_what_if_parse() -> None:
    text = "device_model,share\n1086/57310102,0.3\n\n1086/57310201,0.7\n"
    assert parse_mix(text, "m.csv") == {MODEL: 0.3, OTHER: 0.7}
    assert parse_what_if([]) is None
    assert parse_what_if(["baud=115200", "framing=console"]) == BaudWhatIf(
        baud=115_200, framing="console"
    )
    for bad in (["speed=1"], ["framing=raw"], ["baud=fast"], ["baud=0"], ["baud=9600", "frame=8"]):
        with pytest.raises(PlanError, match="--what-if"):
            parse_what_if(bad)


# --- jigctl plan ----------------------------------------------------------------------------------

PLAN_ARGS = ["plan", "--hubs-per-year", "300000", "--days", "250", "--hours-per-day", "7.5"]


async def _fill(station: Station) -> None:
    """Hubs recorded in the running daemon's store (real times: a few milliseconds each)."""
    store = station.store
    batch = await store.import_batch(rows(1, 2), "WO", "P", "m.csv")
    for n in (1, 2):
        attempt = await store.begin_attempt(batch, guid(n), 1, n, model=MODEL)
        await store.record_stage(batch, guid(n), attempt, Stage.UPLOAD, UPLOADED)
        state = await store.guid_state(batch, guid(n))
        done = result(batch, n, Outcome.REFLASHED, attempts=attempt, slot=n)
        assert state.started is not None
        await store.record_result(replace(done, started=state.started, finished=utc_now()))


async def test_online_and_offline_plans_agree(
    daemon: Station, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await _fill(daemon)
    socket = str(daemon.config.control_socket)
    code = await asyncio.to_thread(jigctl, ["--socket", socket, *PLAN_ARGS, "--json"])
    online = json.loads(capsys.readouterr().out)
    assert code == 0
    config = tmp_path / "jigd.toml"
    config.write_text(daemon.config.to_toml(), encoding="utf-8")
    code = await asyncio.to_thread(
        jigctl, [*PLAN_ARGS, "--json", "--offline", "--config", str(config)]
    )
    assert code == 0
    assert json.loads(capsys.readouterr().out) == online
    assert online["measured"]["models"][0]["hubs"] == 2
    assert online["plan"]["rigs_needed"] >= 1
    code = await asyncio.to_thread(jigctl, ["--socket", socket, *PLAN_ARGS])
    text = capsys.readouterr().out
    assert code == 0
    assert "rigs needed: " in text
    assert "Assumptions:" in text
    assert "operator handling: 20 s per hub" in text


async def test_chart_is_a_png(daemon: Station, tmp_path: Path) -> None:
    await _fill(daemon)
    chart = tmp_path / "plan.png"
    socket = str(daemon.config.control_socket)
    code = await asyncio.to_thread(jigctl, ["--socket", socket, *PLAN_ARGS, "--chart", str(chart)])
    assert code == 0
    assert chart.read_bytes().startswith(PNG_SIGNATURE)
    from PIL import Image  # matplotlib's own dependency

    with Image.open(chart) as image:
        image.verify()
        assert image.size == (900, 450)


@pytest.mark.parametrize(
    ("extra", "error"),
    [
        (["--model-mix", "{tmp}/mix.csv"], "mix.csv: line 3: Device Model 1086/57310102 repeats"),
        (["--model-mix", "{tmp}/none.csv"], "none.csv: cannot read: No such file or directory"),
        (["--what-if", "baud"], "--what-if 'baud': write baud=N"),
        (["--utilisation", "1.5"], "plan: --utilisation: Input should be less than or equal to 1"),
        (["--offline", "--config", "{tmp}/jigd.toml"], "no store at"),
    ],
)
def test_bad_plan_input_is_exit_2_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], error: str
) -> None:
    (tmp_path / "mix.csv").write_text("device_model,share\n1086/57310102,0.5\n1086/57310102,0.5\n")
    (tmp_path / "jigd.toml").write_text(
        f'station = "t"\nstore_path = "{tmp_path}/none.sqlite3"\ncatalog_dir = "{tmp_path}"\n'
    )
    args = [a.replace("{tmp}", str(tmp_path)) for a in extra]
    where = [] if "--offline" in args else ["--socket", str(tmp_path / "nobody.sock")]
    code = jigctl([*where, *PLAN_ARGS, *args])
    assert code == 2
    assert error in capsys.readouterr().err
    assert not (tmp_path / "none.sqlite3").exists()  # offline never makes a store


def test_chart_without_matplotlib_is_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "matplotlib" else real(name, *a),
    )
    code = jigctl(["--socket", str(tmp_path / "s"), *PLAN_ARGS, "--chart", str(tmp_path / "c.png")])
    assert code == 2
    assert "--chart needs matplotlib: pip install 'jigd[plan]'" in capsys.readouterr().err


def test_no_time_and_no_handling_is_refused(hubs: list[HubTimes]) -> None:
    instant = [
        replace(h, last_started=h.finished, started=h.finished, uploaded=h.finished) for h in hubs
    ]
    with pytest.raises(PlanError, match="took no time"):
        make_plan(measure(instant, rigs=1, slots_per_rig=8), _inputs(handling_s=0))


def test_offline_needs_a_config_not_a_socket(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        jigctl(["--socket", str(tmp_path / "s"), *PLAN_ARGS, "--offline"])
    assert exited.value.code == 2
    assert "give --config, not --socket" in capsys.readouterr().err
