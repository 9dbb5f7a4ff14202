"""A hostile hub's words through every output: `jigd run` and `jigsim serve` as processes, a real
mosquitto, `jigctl` as a process.

The hub answers every image upload with an SMP error whose `rsn` is the worst text we know: a
newline and a forged log line, a carriage return, ANSI escapes that clear and colour a terminal,
a NUL, DEL, a C1 control, a bidi override (U+202E), a spreadsheet formula, and 2 kB of it. The
hub fails; its text reaches the daemon's log, the store, results.csv and fault-analysis.csv, the
MQTT result and `jigctl batch show` / `status`, and none of them may hold a raw control
character, a forged line or an unneutralised formula (docs/reports.md, drivers/untrusted.py).
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from jigd import control_api as api
from jigd.ctl import ControlClient
from jigd.demo import DemoOptions, Paths
from jigd.demo.process import (
    START_TIMEOUT_S,
    Process,
    daemon_process,
    rig_paths,
    sim_process,
    wait_for_daemon,
    wait_for_paths,
)
from jigd.demo.workdir import prepare
from sim.faults import Faults
from sim.pallet import load_pallet, write_pallet
from tests.jigd.e2e_helpers import jigctl
from tests.jigd.mqtt_helpers import Subscriber, config_for
from tests.services import Mosquitto

pytestmark = pytest.mark.slow  # end to end with real processes: not in `make test-fast`

FORGED = "2099-01-01 00:00:00,000 ERROR   jigd.slot: rig9/slot9: forged by the hub"
HOSTILE = (
    f"boom\n{FORGED}\r\x1b[2J\x1b[31mred\x1b[0m\x00\x7f\x85\u202eevil\u202c\t=cmd|' /C calc'!A0 "
) + "X" * 2000
RAW = ("\n", "\r", "\x1b", "\x00", "\x7f", "\x85", "\u202e", "\u202c", "\t")
WAIT_S = 120.0


def _no_raw(where: str, text: str) -> None:
    found = [repr(c) for c in RAW if c in text]
    assert found == [], f"{where}: raw {', '.join(found)}"


async def _jigctl(socket: Path, *args: str) -> str:
    code, out, err = await jigctl("--socket", str(socket), *args, timeout_s=WAIT_S)
    assert code == 0, err
    return out


def _hostile_pallet(paths: Paths) -> str:
    """Make the pallet's first hub the hostile one; its GUID."""
    pallet = load_pallet(paths.pallet)
    first = pallet.hubs[0]
    hubs = [first.model_copy(update={"faults": Faults(upload_error_reason=HOSTILE)})]
    write_pallet(pallet.model_copy(update={"hubs": hubs + pallet.hubs[1:]}), paths.pallet)
    return str(first.guid)


@pytest.mark.timeout(240)
async def test_a_hostile_hubs_error_text_is_escaped_in_every_output(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    options = DemoOptions(
        hubs=2,
        rigs=1,
        slots=2,
        faults="none",
        missing=0,
        extra=0,
        current=0,
        workdir=tmp_path / "demo",
        image_size=16 * 1024,
        handling_s=0.05,
        live=False,
        mqtt=config_for(mosquitto.port),
    )
    paths = Paths(options.workdir)
    await asyncio.to_thread(prepare, options, paths)
    guid = _hostile_pallet(paths)
    sim = sim_process(options, paths)
    at = sim.argv.index("--faults")
    sim = Process(sim.name, sim.argv[:at] + sim.argv[at + 2 :], sim.log)  # the pallet's faults
    daemon = daemon_process(paths)
    client = ControlClient(paths.socket)
    async with Subscriber(mosquitto.port) as subscriber:
        try:
            await daemon.start()
            await wait_for_daemon(client, daemon, START_TIMEOUT_S)
            request = api.BatchImportRequest(
                manifest=paths.manifest.read_text(encoding="utf-8"),
                source="pallet.csv",
                booking="WO-1",
                party="P",
            )
            batch = (await client.call(api.IMPORT_BATCH, body=request)).batch
            await sim.start()
            await wait_for_paths(rig_paths(options, paths), sim, START_TIMEOUT_S)
            async with asyncio.timeout(WAIT_S):
                while (await client.call(api.BATCH, batch)).pending:  # noqa: ASYNC110 - polled
                    await asyncio.sleep(0.2)
            shown = await _jigctl(paths.socket, "batch", "show", batch)
            status = await _jigctl(paths.socket, "status")
            await client.call(api.CLOSE_BATCH, batch)
            await client.save_report(batch, paths.reports)
            await subscriber.wait_for(
                lambda s: any(m.data.get("guid") == guid for m in s.of("jigd.result/1")),
                "the hostile hub's result",
            )
        finally:
            await daemon.stop()
            await sim.stop()
    result = next(m.data for m in subscriber.of("jigd.result/1") if m.data["guid"] == guid)
    _check_outputs(paths, guid, result, shown + status)


def _check_outputs(paths: Paths, guid: str, result: dict[str, Any], jigctl: str) -> None:
    # The hub's words arrived: escaped, capped, with the rest of the message intact.
    detail = result["failure_detail"]
    assert result["outcome"] == "failed"
    assert "boom\\n2099-01-01" in detail
    assert "\\x1b[2J\\x1b[31mred" in detail
    assert "\\x00\\x7f\\x85\\u202eevil" in detail
    assert "...[" in detail  # capped: 2 kB of X do not get through
    assert len(detail) < 600
    _no_raw("MQTT result", detail)

    log = (paths.root / "jigd.log").read_text(encoding="utf-8")
    assert "boom\\n2099-01-01" in log  # the daemon logged the hub's error, escaped
    _no_raw("jigd.log", log.replace("\n", ""))  # line ends are the log's own
    assert not any(line.startswith("2099-01-01") for line in log.splitlines())

    db = sqlite3.connect(paths.store)
    try:
        stored = [
            row[0]
            for row in db.execute("SELECT error_detail FROM attempts WHERE guid = ?", (guid,))
            if row[0]
        ]
        for query in ("SELECT data FROM events", "SELECT payload FROM outbox"):
            stored += [text for (data,) in db.execute(query) for text in _strings(json.loads(data))]
    finally:
        db.close()
    assert any("boom\\n" in text for text in stored)
    for text in stored:
        _no_raw("store", text)

    for name in ("results.csv", "fault-analysis.csv"):
        text = (paths.reports / name).read_bytes().decode("utf-8")
        _no_raw(name, text.replace("\r\n", ""))  # RFC 4180 line ends only
        for row in csv.reader(io.StringIO(text, newline="")):
            assert not any(cell.startswith(("=", "+", "-", "@")) for cell in row), row
    fault_analysis = (paths.reports / "fault-analysis.csv").read_bytes().decode("utf-8")
    faults = list(csv.DictReader(io.StringIO(fault_analysis, newline="")))
    assert [r["detail"] for r in faults if r["guid"] == guid] == [detail]

    _no_raw("jigctl", jigctl.replace("\n", ""))
    assert "booking    WO-1" in jigctl
    assert "\n1/1  " in jigctl


def _strings(value: object) -> list[str]:
    """Every string in a JSON document."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []
