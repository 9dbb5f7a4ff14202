"""What `jigctl` and `jigd demo` show of a running station: the slot table, progress lines and
batch lines, drawn from the control API's models (jigd.control_api).

Text that came from outside (a booking or party named by a client, a slot's detail quoting a
hub) is shown through `drivers.untrusted.printable`: it can neither move the cursor nor colour
the terminal nor start a line of its own."""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Mapping
from typing import Final

from drivers.untrusted import FIELD_LIMIT, printable
from jigd.control_api import BatchView, StatusResponse
from jigd.model import Outcome

__all__ = ["batch_line", "counts_text", "progress_line", "redraw", "render_status", "timestamped"]

BAR_WIDTH: Final = 20
_CLEAR: Final = "\x1b[H\x1b[2J"


def _bar(percent: float) -> str:
    filled = round(BAR_WIDTH * percent / 100)
    return "#" * filled + "." * (BAR_WIDTH - filled)


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def _shown(text: str) -> str:
    return printable(text, FIELD_LIMIT)


def render_status(status: StatusResponse) -> str:
    """A text table of rigs, slots and open batches, as `jigctl status` and `watch` show it."""
    lines = [
        f"station {_shown(status.station)}   up {_eta(status.uptime_s)}   "
        f"{status.hubs_per_hour or '-'} hubs/h   "
        f"outbox {status.outbox_depth}"
    ]
    for batch in status.batches:
        counts = batch.counts
        done = batch.expected - batch.pending
        percent = 100.0 * done / batch.expected if batch.expected else 100.0
        lines.append(
            f"batch {batch.batch} ({_shown(batch.booking)}, {_shown(batch.party)}) "
            f"[{_bar(percent)}] {done}/{batch.expected}  "
            f"reflashed {counts[Outcome.REFLASHED]}  current {counts[Outcome.ALREADY_CURRENT]}  "
            f"failed {counts[Outcome.FAILED]}  ETA {_eta(batch.eta_s)}"
        )
    lines.extend(
        f"catalog: {entry.model} {entry.firmware_version} NOT FLASHED ({entry.code}): "
        f"{entry.reason} [sha256 {entry.sha256}]"
        for entry in status.catalog_rejected
    )
    lines.append(f"{'slot':<12}{'state':<10}{'guid':<25}{'stage':<14}{'progress':<28}att")
    for rig in status.rigs:
        for slot in rig.slots:
            name = f"rig{slot.rig}/slot{slot.slot}"
            state = slot.state if rig.up else "offline"
            progress = ""
            if slot.state == "busy" and slot.stage == "upload":
                progress = f"[{_bar(slot.progress)}] {slot.progress:5.1f}%"
            stage = slot.stage or slot.outcome or _shown(slot.detail)
            guid = "-" if slot.guid is None else str(slot.guid)
            lines.append(
                f"{name:<12}{state:<10}{guid:<25}{stage:<14}{progress:<28}{slot.attempts or ''}"
            )
    return "\n".join(lines)


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


def progress_line(elapsed_s: float, batch: BatchView, rejected: int) -> str:
    """The demo's progress line when it does not redraw the table."""
    done = batch.expected - batch.pending
    return (
        f"  {elapsed_s:6.1f} s  {done}/{batch.expected} done  "
        f"{counts_text(batch.counts, nonzero=True)}  rejected {rejected}"
    )
