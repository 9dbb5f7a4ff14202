"""The live view's text (jigd.liveview): the slot table and batch lines within the terminal's
width, every column apart (issue 14 item 6), and `batch show`'s text."""

from __future__ import annotations

import re
from typing import Any

import pytest

from jigd import control_api as api
from jigd.liveview import (
    batch_text,
    render_status,
    selftest_line,
    selftest_text,
    set_aside_lines,
)

LONG = "W" * 200


def slot(n: int, **fields: Any) -> dict[str, Any]:
    base = {
        "rig": 12, "slot": n, "state": "busy", "guid": f"00-DB-12-34-56-78-90-{n:02X}",
        "batch": "B000001", "stage": "upload", "progress": 61.6, "attempts": 1,
        "outcome": None, "detail": "", "seconds_in_state": 1.0, "model": "1086/57310102",
        "elapsed_s": 754.0, "expected_s": 3599.0,
    }  # fmt: skip
    return base | fields


def status(*slots: dict[str, Any]) -> api.StatusResponse:
    counts = {"reflashed": 1000, "already_current": 20, "failed": 3, "not_received": 0}
    batch = {
        "batch": "B000001", "booking": LONG, "party": LONG, "source": "m.csv", "status": "open",
        "created_at": "2026-11-30T09:00:00+00:00", "closed_at": None, "expected": 1896,
        "received": 1100, "pending": 873, "counts": counts, "eta_s": 36000.0, "busy_slots": 8,
    }  # fmt: skip
    return api.StatusResponse.model_validate(
        {
            "station": "bench-" + "x" * 100,
            "uptime_s": 400000.0,
            "hubs_per_hour": 123.4,
            "loop_lag_ms": {"p50": 0.0, "p99": 0.0, "max": 0.0},
            "outbox_depth": 123456,
            "rigs": [{"rig": 12, "up": True, "slots": list(slots)}],
            "batches": [batch],
            "catalog_rejected": [],
        }
    )


SLOTS = (
    slot(1, attempts=3),
    slot(
        2, stage="await_boot", progress=0.0, wait={"what": "boot", "waited_s": 12.2, "limit_s": 30}
    ),
    slot(3, stage="verify", progress=0.0, attempts=2),
    slot(4, state="attention", stage=None, guid=None, model=None, detail="x" * 300, elapsed_s=None),
    slot(5, state="empty", stage=None, guid=None, model=None, attempts=0, elapsed_s=None),
)


@pytest.mark.parametrize("width", [80, 120])
def test_every_line_fits_and_every_column_is_apart(width: int) -> None:
    text = render_status(status(*SLOTS), width)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= width, text
    rows = {line.split()[0]: line for line in lines if re.match(r"\d+/\d ", line)}
    upload = rows["12/1"]
    assert re.search(r" 61\.6% +3 +12:34/59:59$", upload), upload  # was "61.6%1", cut off
    assert "waiting for boot 12/30 s" in rows["12/2"]
    assert re.search(r" s +1 +12:34/59:59$", rows["12/2"])  # the wait leaves attempt and time
    assert re.search(r" verify +2 +12:34/59:59$", rows["12/3"])
    assert rows["12/4"].endswith("xxx...")  # a long detail is cut at the edge
    assert rows["12/5"].split() == ["12/5", "empty", "-"]
    assert "ETA 10:00:00" in text  # the batch line keeps its ETA however long the booking
    assert "reflashed 1000  current 20  failed 3  busy 8  pending 873" in text
    header = next(line for line in lines if line.startswith("slot "))
    assert rows["12/4"].index("xxx") == header.index("stage")  # the detail in its column
    assert rows["12/2"].index("waiting") == header.index("stage")
    assert ("model" in header) is (width == 120)  # the Device Model where it fits
    assert ("1086/57310102" in upload) is (width == 120)


def test_a_narrower_terminal_still_gets_the_80_column_table() -> None:
    text = render_status(status(*SLOTS), 40)
    assert text == render_status(status(*SLOTS), 80)


def test_batch_text_and_its_set_aside_hubs() -> None:
    batch = api.BatchView.model_validate(
        {
            "batch": "B000002", "booking": "WO-1", "party": "P", "source": "m.csv",
            "status": "open", "created_at": "2026-11-30T09:00:00+00:00", "closed_at": None,
            "expected": 3, "received": 1, "pending": 2,
            "counts": {"reflashed": 1, "already_current": 0, "failed": 0, "not_received": 0},
            "set_aside": [
                {"guid": "00-DB-00-00-00-00-00-07", "rig": 2, "slot": 5,
                 "seen_at": "2026-11-30T08:59:01.5+00:00"},
            ],
        }
    )  # fmt: skip
    lines = batch_text(batch)
    assert lines[:7] == [
        "batch      B000002  (open)",
        "booking    WO-1",
        "party      P",
        "manifest   m.csv",
        "created    2026-11-30T09:00:00.000000Z",
        "closed     -",
        "expected   3   received 1   pending 2",
    ]
    assert "reflashed:       1" in lines
    assert lines[-1] == (
        "set aside, re-insert: 00-DB-00-00-00-00-00-07 (rig 2 slot 5, seen 08:59:01)"
    )
    assert set_aside_lines(batch) == lines[-1:]


DISABLED = {
    "rig": 12, "slot": 6, "disabled": True, "reason": "worn pogo pin", "by": "alice",
    "at": "2026-11-30T09:00:00+00:00",
}  # fmt: skip


def test_a_disabled_slot_says_so_with_its_reason_unless_it_finishes_a_hub() -> None:
    idle = slot(6, state="empty", stage=None, guid=None, model=None, attempts=0, elapsed_s=None)
    busy = slot(7, attempts=1)
    text = render_status(
        status(idle | {"disabled": DISABLED}, busy | {"disabled": DISABLED | {"slot": 7}}), 100
    )
    [row6] = [line for line in text.splitlines() if line.startswith("12/6")]
    [row7] = [line for line in text.splitlines() if line.startswith("12/7")]
    assert re.match(r"12/6 +disabled .*disabled: worn pogo pin", row6)
    assert re.match(r"12/7 +busy ", row7)  # it finishes its hub first
    assert "self-test" not in text  # the rig never had one


def test_selftest_text_names_each_failed_part_and_the_disabled_slots() -> None:
    test = api.SelftestView.model_validate(
        {
            "rig": 2,
            "ts": "2026-11-30T09:00:00+00:00",
            "failed": 1,
            "checks": [
                {"slot": None, "check": "controller", "passed": True, "detail": ""},
                {"slot": 3, "check": "power", "passed": False, "detail": "no \x1b[2J switch"},
                {"slot": 3, "check": "led", "passed": True, "detail": ""},
            ],
            "skipped": [4],
            "disabled": [3],
        }
    )
    lines = selftest_text(test)
    assert lines[0] == "rig 2 self-test 2026-11-30T09:00:00.000000Z"
    assert lines[1].split() == ["ctl", "controller", "PASS"]
    assert lines[2].split()[:3] == ["2/3", "power", "FAIL"]
    assert "\x1b" not in lines[2]  # a controller's words are shown escaped
    assert "2/4 skipped: a hub is being flashed there" in " ".join(lines[4].split())
    assert lines[-2] == "2 passed, 1 failed"
    assert lines[-1].startswith("slot 2/3 disabled: `jigctl slot enable 2 3`")
    rig = api.RigView(rig=2, up=True, slots=[], selftest=test)
    assert selftest_line(rig) == "rig 2 self-test 2026-11-30T09:00:00.000000Z: 2 passed, 1 failed"


@pytest.mark.parametrize("width", [80, 120])
def test_a_suspect_slot_is_marked_and_the_reason_shown_whole(width: int) -> None:
    reason = "4 of its last 6 hubs failed (upload:link_timeout x4) \x1b[31m" + "y" * 150
    text = render_status(
        status(
            slot(1),
            slot(2, suspect=reason, state="empty", stage=None, guid=None),
            slot(3, suspect="worn", state="attention", stage=None, detail="z" * 300),
        ),
        width,
    )
    lines = text.splitlines()
    assert all(len(line) <= width for line in lines)
    rows = [line for line in lines if re.match(r"12/\d +(busy|empty|attentio)", line)]
    assert [row.split()[1] for row in rows] == ["busy", "empty!", "attentio!"]
    below = "\n".join(lines[lines.index(rows[-1]) + 1 :])
    assert below.startswith("12/2 SUSPECT: 4 of its last 6 hubs failed")
    assert "12/3 SUSPECT: worn" in below
    assert "\x1b" not in text  # the reason is shown escaped
    assert below.replace("\n  ", " ").count("y") >= 150 - 10  # wrapped, not cut
