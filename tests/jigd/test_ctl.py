"""jigctl against a running daemon (in this process, no rigs: the `daemon` fixture of
conftest.py) over its real Unix socket."""

from __future__ import annotations

import asyncio
import csv
import json
import stat
from pathlib import Path

import aiohttp
import pytest

from jigd import control_api as api
from jigd.ctl import main as jigctl
from jigd.liveview import render_status
from jigd.station import Station

GOOD = """guid,manufacturer,model,firmware_version
00-DB-00-00-00-00-00-01,1086,57310102,04000006
00db000000000002,1086,57310102,04000006
00:db:00:00:00:00:00:03,1086,57310102,
"""

THREE_MISTAKES = """guid,manufacturer,model,firmware_version
00-DB-00-00-00-00-00-11,1086,57310102,04000006
00-DB-00-00-00-00-0X-12,1086,57310102,04000006
00-DB-00-00-00-00-00-11,1086,57310102,04000006
00-DB-00-00-00-00-00-13,1086,5731010,04000006
"""


async def ctl(station: Station, *args: str) -> int:
    """jigctl in a thread (it runs its own event loop), like a technician's shell."""
    socket = str(station.config.control_socket)
    return await asyncio.to_thread(jigctl, ["--socket", socket, *args])


async def test_socket_is_group_writable_only(daemon: Station) -> None:
    mode = stat.S_IMODE(daemon.config.control_socket.stat().st_mode)
    assert mode == 0o660


async def test_manifest_with_three_mistakes_lists_all_by_line_and_stores_nothing(
    daemon: Station, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = tmp_path / "pallet-7.csv"
    manifest.write_text(THREE_MISTAKES, encoding="utf-8")
    code = await ctl(daemon, "batch", "import", str(manifest), "--booking", "WO-1", "--party", "P")
    assert code == 2
    err = capsys.readouterr().err
    assert f"{manifest}:3: guid:" in err
    assert "'00-DB-00-00-00-00-0X-12'" in err
    assert f"{manifest}:4: guid:" in err
    assert "on lines 2 and 4" in err  # the duplicate names the first line too
    assert f"{manifest}:5: model:" in err
    assert err.count(f"{manifest}:") == 4  # the headline and one line per mistake
    assert await daemon.store.list_batches() == []


async def test_batch_lifecycle_and_reports(
    daemon: Station, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = tmp_path / "pallet.csv"
    manifest.write_text(GOOD, encoding="utf-8")
    code = await ctl(daemon, "batch", "import", str(manifest), "--booking", "WO-2", "--party", "P")
    assert code == 0
    batch = capsys.readouterr().out.strip()
    assert batch.startswith("B")
    # The same GUIDs again while the first batch is open: refused, exit 2.
    code = await ctl(daemon, "batch", "import", str(manifest), "--booking", "WO-3", "--party", "P")
    assert code == 2
    assert batch in capsys.readouterr().err
    assert await ctl(daemon, "batch", "list") == 0
    assert f"{batch}  open" in capsys.readouterr().out
    assert await ctl(daemon, "status") == 0
    assert f"batch {batch}" in capsys.readouterr().out
    assert await ctl(daemon, "batch", "close", batch) == 0
    assert "closed" in capsys.readouterr().out
    assert await ctl(daemon, "batch", "close", batch) == 1  # a conflict, not bad input
    assert "closed" in capsys.readouterr().err
    assert await ctl(daemon, "batch", "show", "B999999") == 2
    out = tmp_path / "reports"
    assert await ctl(daemon, "report", batch, "--out", str(out)) == 0
    summary = json.loads((out / "summary.json").read_text("utf-8"))
    assert summary["counts"]["not_received"] == 3
    with (out / "results.csv").open(encoding="utf-8", newline="") as file:
        rows = list(csv.DictReader(file))
    assert [r["guid"] for r in rows] == [
        "00-DB-00-00-00-00-00-01",
        "00-DB-00-00-00-00-00-02",
        "00-DB-00-00-00-00-00-03",
    ]
    assert (out / "smi-update.csv").read_text("utf-8").strip() == "guid,firmware_version"


async def test_unreachable_daemon_is_an_operational_failure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = await asyncio.to_thread(jigctl, ["--socket", str(tmp_path / "none.sock"), "status"])
    assert code == 1
    assert "cannot reach jigd" in capsys.readouterr().err


async def test_daemon_serves_metrics(daemon: Station) -> None:
    url = f"http://127.0.0.1:{daemon.config.metrics_port}/metrics"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200
        text = await response.text()
    assert 'jigd_build_info{version="' in text
    assert "jigd_catalog_images" in text
    assert "jigd_mqtt_connected" not in text  # MQTT is not enabled in this config


HOSTILE_MANIFEST = (
    "guid,manufacturer,model,\x1b[2Jfirmware\u202e\n"
    "=cmd|' /C calc'!A0\n2099-01-01 00:00:00 ERROR forged," + "X" * 10_000 + ",57310102,\n"
)


async def test_hostile_text_reaches_the_terminal_escaped_and_capped(
    daemon: Station, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A manifest's header and cells, and a booking with a line break, come back in jigctl's
    error output as one printable line each."""
    path = tmp_path / "hostile\x1b[31m.csv"
    path.write_text(HOSTILE_MANIFEST, encoding="utf-8")
    assert await ctl(daemon, "batch", "import", str(path), "--booking", "B", "--party", "P") == 2
    err = capsys.readouterr().err
    assert err.replace("\n", "").isprintable()
    assert "\x1b" not in err
    assert "\u202e" not in err
    lines = err.splitlines()
    assert lines[0].endswith("/hostile\\x1b[31m.csv: the manifest was not imported"), lines
    assert "\\x1b[2Jfirmware\\u202e" in err
    assert not any(line.startswith(("2099", "=")) for line in lines)
    assert max(len(line) for line in lines) < 5000  # 10 kB cells are cut
    booking = "WO\n2099-01-01 00:00:00 ERROR forged"
    good = tmp_path / "good.csv"
    good.write_text(GOOD, encoding="utf-8")
    assert (
        await ctl(daemon, "batch", "import", str(good), "--booking", booking, "--party", "P") == 2
    )
    assert capsys.readouterr().err == "error: control characters in: booking\n"
    assert await daemon.store.list_batches() == []


def test_the_slot_table_shows_a_hubs_words_escaped() -> None:
    slot = {
        "rig": 1, "slot": 1, "state": "attention", "guid": None, "batch": None, "stage": None,
        "progress": 0.0, "attempts": 0, "outcome": None, "seconds_in_state": 1.0,
        "detail": "boom\n2099-01-01 00:00:00 ERROR forged\x1b[2J\u202e",
    }  # fmt: skip
    status = api.StatusResponse.model_validate(
        {
            "station": "s\x1b[31m",
            "uptime_s": 1.0,
            "hubs_per_hour": None,
            "loop_lag_ms": {"p50": 0.0, "p99": 0.0, "max": 0.0},
            "outbox_depth": 0,
            "rigs": [{"rig": 1, "up": True, "slots": [slot]}],
            "batches": [],
            "catalog_rejected": [],
        }
    )
    text = render_status(status, width=120)
    assert "\x1b" not in text
    assert "\u202e" not in text
    assert len(text.splitlines()) == 3
    assert "boom\\n2099-01-01 00:00:00 ERROR forged\\x1b[2J\\u202e" in text
    assert text.startswith("station s\\x1b[31m ")


async def test_slot_and_selftest_name_what_the_station_lacks(
    daemon: Station, capsys: pytest.CaptureFixture[str]
) -> None:
    # The fixture's station has no rigs: every rig is unknown, exit 2 with one line naming it.
    assert await ctl(daemon, "slot", "disable", "1", "3", "--reason", "worn pin") == 2
    assert capsys.readouterr().err == ("error: rig 1 is not in the station's config (rigs: none)\n")
    assert await ctl(daemon, "slot", "enable", "4", "1") == 2
    assert "rig 4 is not in the station's config" in capsys.readouterr().err
    assert await ctl(daemon, "selftest", "2") == 2
    assert "rig 2 is not in the station's config" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:  # a disable needs its reason
        await ctl(daemon, "slot", "disable", "1", "3")
    assert exited.value.code == 2
    assert "--reason" in capsys.readouterr().err
    assert await daemon.store.outbox_depth() == 0  # nothing was stored or alerted
