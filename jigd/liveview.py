"""What `jigctl` and `jigd demo` show of a running station: the slot table, progress lines and
batch lines, drawn from the control API's models (jigd.control_api).

Text that came from outside (a booking or party named by a client, a slot's detail quoting a
hub) is shown through `drivers.untrusted.printable`: it can neither move the cursor nor colour
the terminal nor start a line of its own."""

from __future__ import annotations

import shutil
import sys
import textwrap
import time
from collections.abc import Mapping
from datetime import UTC
from typing import Final

from drivers.untrusted import FIELD_LIMIT, printable
from jigd.control_api import (
    BatchView,
    RigView,
    SelftestView,
    SiteStationView,
    SlotView,
    StatusResponse,
)
from jigd.events import format_utc
from jigd.model import Outcome

__all__ = [
    "batch_line",
    "batch_text",
    "counts_text",
    "narrowed",
    "progress_line",
    "redraw",
    "render_status",
    "selftest_line",
    "selftest_text",
    "set_aside_lines",
    "site_lines",
    "slot_table",
    "timestamped",
]

BAR_WIDTH: Final = 20
SLOT_BAR_WIDTH: Final = 4
WIDTH: Final = 80  # the narrowest terminal the table is made for
_CLEAR: Final = "\x1b[H\x1b[2J"

# The slot table's columns: name and width (a longer value widens its row, never joins the next
# column). Wait and detail text span the stage, progress, attempt and time columns.
_COLUMNS: Final = (
    ("slot", 4),
    ("state", 9),
    ("guid", 23),
    ("stage", 13),
    ("progress", SLOT_BAR_WIDTH + 7),
    ("att", 3),
    ("time/expect", 11),
)
_STATE_WIDTH: Final = _COLUMNS[1][1]
_MODEL: Final = ("model", 13)  # after the GUID, where the terminal is wide enough
_TABLE_WIDTH: Final = sum(w for _, w in _COLUMNS) + len(_COLUMNS) - 1
_SPAN_START: Final = 3  # the stage column: where wait and detail text start


def _bar(percent: float, width: int = BAR_WIDTH) -> str:
    filled = round(width * percent / 100)
    return "#" * filled + "." * (width - filled)


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def _clock(seconds: float | None) -> str:
    """`2:05` (or `1:02:05` past an hour); `-` when not known."""
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}:{secs:02d}"
    return _eta(seconds)


def _shown(text: str) -> str:
    return printable(text, FIELD_LIMIT)


def _fit(text: str, width: int) -> str:
    """`text`, cut to `width` characters with `...` where it was cut."""
    return text if len(text) <= width else text[: max(width - 3, 0)] + "..."


def _cells(cells: list[str], widths: list[int]) -> str:
    return " ".join(f"{cell:<{w}}" for cell, w in zip(cells, widths, strict=True))


def _row(cells: list[str], widths: list[int]) -> str:
    return _cells(cells, widths).rstrip()


def _slot_cells(slot: SlotView, up: bool) -> tuple[list[str], str | None]:
    """A slot's cells, and the text (a wait, a detail) that spans the columns from the stage on
    instead, if any."""
    busy = slot.state == "busy"
    disabled = slot.disabled is not None and not busy  # a busy one finishes its hub first
    state = "offline" if not up else "disabled" if disabled else slot.state
    guid = "-" if slot.guid is None else str(slot.guid)
    progress = ""
    if busy and slot.stage == "upload":
        progress = f"{_bar(slot.progress, SLOT_BAR_WIDTH)} {slot.progress:5.1f}%"
    attempt = str(slot.attempts) if slot.attempts else ""
    elapsed = (
        "" if slot.elapsed_s is None else f"{_clock(slot.elapsed_s)}/{_clock(slot.expected_s)}"
    )
    if slot.suspect is not None:  # the yield watch suspects it (why: below the table)
        state = state[: _STATE_WIDTH - 1] + "!"  # `attention` loses its last letter
    cells = [f"{slot.rig}/{slot.slot}", state, guid, "", progress, attempt, elapsed]
    span = None
    if slot.wait is not None:
        wait = slot.wait
        span = f"waiting for {_shown(wait.what)} {wait.waited_s:.0f}/{wait.limit_s:.0f} s"
    elif slot.stage is not None:
        cells[_SPAN_START] = slot.stage
    elif slot.detail and not busy:
        outcome = f"{slot.outcome}: " if slot.outcome else ""
        span = outcome + _shown(slot.detail)
    elif slot.outcome is not None:
        cells[_SPAN_START] = slot.outcome
    if disabled and span is None and slot.disabled is not None:
        span = f"disabled: {_shown(slot.disabled.reason)}"
    return cells, span


def slot_table(rigs: list[RigView], width: int = WIDTH) -> list[str]:
    """The slot table: a header, then a row per slot, every column apart, within `width`
    columns (with the Device Model where there is room for it)."""
    columns = list(_COLUMNS)
    with_model = width >= _TABLE_WIDTH + 1 + _MODEL[1]
    if with_model:
        columns.insert(_SPAN_START, _MODEL)
    widths = [w for _, w in columns]
    start = _SPAN_START + with_model
    span_at = sum(widths[:start]) + start
    lines = [_row([name for name, _ in columns], widths)]
    for rig in rigs:
        for slot in rig.slots:
            cells, span = _slot_cells(slot, rig.up)
            if with_model:
                cells.insert(_SPAN_START, "" if slot.model is None else str(slot.model))
            if span is None:
                lines.append(_row(cells, widths))
                continue
            # The span takes the stage's and progress' room, and the attempt's and time's if
            # it needs them; they follow it when it leaves room for them.
            tail = _row(cells[start + 2 :], widths[start + 2 :])
            room = sum(widths[start : start + 2]) + 1
            text = _fit(span, max(width - span_at, room))
            if tail and len(text) <= room:
                text = f"{text:<{room}} {tail}"
            lines.append(_cells(cells[:start], widths[:start]) + " " + text)
    return lines


def render_status(status: StatusResponse, width: int = WIDTH) -> str:
    """What `jigctl status` and `watch` show: the station, open batches (two lines each), then
    the slot table; every line within `width` columns (at least 80)."""
    width = max(width, WIDTH)
    rate = "-" if status.hubs_per_hour is None else f"{status.hubs_per_hour:g}"
    lines = [
        _fit(
            f"station {_shown(status.station)}   up {_eta(status.uptime_s)}   "
            f"{rate} hubs/h   outbox {status.outbox_depth}",
            width,
        )
    ]
    for batch in status.batches:
        done = batch.expected - batch.pending
        percent = 100.0 * done / batch.expected if batch.expected else 100.0
        head = (
            f"batch {batch.batch} [{_bar(percent)}] {done}/{batch.expected}  "
            f"ETA {_eta(batch.eta_s)}"
        )
        who = f"  {_shown(batch.booking)} / {_shown(batch.party)}"
        lines.append(head + _fit(who, width - len(head)))
        counts = batch.counts
        lines.append(
            _fit(
                f"  reflashed {counts[Outcome.REFLASHED]}  current "
                f"{counts[Outcome.ALREADY_CURRENT]}  failed {counts[Outcome.FAILED]}  "
                f"busy {batch.busy_slots}  pending {batch.pending}",
                width,
            )
        )
        lines.extend(_fit(f"  {line}", width) for line in set_aside_lines(batch))
    for entry in status.catalog_rejected:  # what to fix: wrapped, never cut
        lines += textwrap.wrap(
            f"catalog: {entry.model} {entry.firmware_version} NOT FLASHED ({entry.code}): "
            f"{_shown(entry.reason)}",
            width,
            subsequent_indent="  ",
        )
        lines.append(f"  sha256 {entry.sha256}")
    lines.extend(_fit(selftest_line(rig), width) for rig in status.rigs if rig.selftest)
    lines.extend(slot_table(status.rigs, width))
    lines.extend(site_lines(status.site, width))
    for rig in status.rigs:  # what to check: wrapped, never cut
        for slot in rig.slots:
            if slot.suspect is not None:
                lines += textwrap.wrap(
                    f"{slot.rig}/{slot.slot} SUSPECT: {_shown(slot.suspect)}",
                    width,
                    subsequent_indent="  ",
                )
    return "\n".join(lines)


def site_lines(site: list[SiteStationView], width: int = WIDTH) -> list[str]:
    """The other stations of the site: a line each (host, when last heard from), then its
    slots as its heartbeat told them."""
    lines = []
    for other in site:
        lines.append(
            _fit(
                f"station {_shown(other.station)} on {_shown(other.host)}   heard from "
                f"{_eta(other.seen_s)} ago",
                width,
            )
        )
        by_rig: dict[int, list[SlotView]] = {}
        for slot in other.slots:
            by_rig.setdefault(slot.rig, []).append(slot)
        rigs = [RigView(rig=r, up=True, slots=by_rig[r]) for r in sorted(by_rig)]
        lines.extend(slot_table(rigs, width))
    return lines


def narrowed(status: StatusResponse, station: str) -> StatusResponse:
    """`jigctl status --station NAME`: only that station's slots (this one's, or another's as
    its heartbeat told); ValueError naming the stations there are if there is no such one."""
    if station == status.station:
        return status.model_copy(update={"site": []})
    wanted = [other for other in status.site if other.station == station]
    if not wanted:
        known = ", ".join([status.station, *(other.station for other in status.site)])
        raise ValueError(f"no station {station!r} on this site; there are: {known}")
    return status.model_copy(update={"rigs": [], "site": wanted})


def selftest_line(rig: RigView) -> str:
    """`rig 1 self-test 2026-...Z: 30 passed, 3 failed`: the rig's last self-test."""
    test = rig.selftest
    if test is None:
        return f"rig {rig.rig} self-test: never"
    passed = len(test.checks) - test.failed
    return f"rig {rig.rig} self-test {format_utc(test.ts)}: {passed} passed, {test.failed} failed"


def selftest_text(test: SelftestView) -> list[str]:
    """What `jigctl selftest` prints: a line per check (slot, check, PASS or FAIL and why),
    then the slots skipped because busy and those taken out of service."""
    lines = [f"rig {test.rig} self-test {format_utc(test.ts)}"]
    for check in test.checks:
        where = "ctl" if check.slot is None else f"{test.rig}/{check.slot}"
        verdict = "PASS" if check.passed else f"FAIL  {_shown(check.detail)}"
        lines.append(f"  {where:<5} {check.check:<10} {verdict}")
    for slot in test.skipped:
        lines.append(f"  {test.rig}/{slot:<3} skipped: a hub is being flashed there")
    passed = len(test.checks) - test.failed
    lines.append(f"{passed} passed, {test.failed} failed")
    lines.extend(
        f"slot {test.rig}/{slot} disabled: `jigctl slot enable {test.rig} {slot}` once fixed"
        for slot in test.disabled
    )
    return lines


def redraw(text: str, *, clip: bool) -> None:
    """Draw a frame of the live view on a terminal: clear it, then `text` (with `clip`, each
    line cut to the terminal's width)."""
    if clip:
        width = shutil.get_terminal_size().columns
        text = "\n".join(line[:width] for line in text.splitlines())
    sys.stdout.write(_CLEAR + text + "\n")


def timestamped(text: str) -> str:
    """A frame of the live view for a log or a pipe: a time line, then `text`."""
    return f"--- {time.strftime('%H:%M:%S')}\n{text}\n"


def counts_text(counts: Mapping[Outcome, int], *, nonzero: bool = False) -> str:
    """`reflashed 3, failed 1`: the outcomes in order (with `nonzero`, those with a count)."""
    return ", ".join(f"{k} {v}" for k, v in counts.items() if v or not nonzero)


def batch_line(batch: BatchView) -> str:
    """One batch, as `jigctl batch list` and `batch close` print it."""
    return (
        f"{batch.batch}  {batch.status:<6}  booking {_shown(batch.booking)}  party "
        f"{_shown(batch.party)}  expected {batch.expected}  received {batch.received}  "
        f"pending {batch.pending}  ({counts_text(batch.counts)})"
    )


def set_aside_lines(batch: BatchView) -> list[str]:
    """`set aside, re-insert: GUID (rig R slot S, seen HH:MM:SS)`, one line per hub of the batch
    put in a slot before the batch was imported and not put back since (the time is UTC)."""
    return [
        f"set aside, re-insert: {hub.guid} (rig {hub.rig} slot {hub.slot}, "
        f"seen {hub.seen_at.astimezone(UTC):%H:%M:%S})"
        for hub in batch.set_aside
    ]


def progress_line(elapsed_s: float, batch: BatchView, rejected: int) -> str:
    """The demo's progress line when it does not redraw the table."""
    done = batch.expected - batch.pending
    aside = f"  set aside {len(batch.set_aside)}" if batch.set_aside else ""
    return (
        f"  {elapsed_s:6.1f} s  {done}/{batch.expected} done  "
        f"{counts_text(batch.counts, nonzero=True)}  rejected {rejected}{aside}"
    )


def batch_text(batch: BatchView) -> list[str]:
    """One batch for a person, as `jigctl batch show` prints it: the names reports use
    (`manifest`), times in their `Z` form, the counts, then the hubs to put back in a slot."""
    closed = "-" if batch.closed_at is None else format_utc(batch.closed_at)
    lines = [
        f"batch      {batch.batch}  ({batch.status})",
        f"booking    {_shown(batch.booking)}",
        f"party      {_shown(batch.party)}",
        f"manifest   {_shown(batch.source)}",
        f"created    {format_utc(batch.created_at)}",
        f"closed     {closed}",
        f"expected   {batch.expected}   received {batch.received}   pending {batch.pending}",
    ]
    lines.extend(f"{outcome + ':':<17}{count}" for outcome, count in batch.counts.items())
    return lines + set_aside_lines(batch)
