"""Batch reports: the files the CSP hands over for a batch (docs/architecture.md, "Batch reports").

A contract, documented in docs/reports.md: `summary.json`, `results.csv`, `smi-update.csv`
(GUID -> new Firmware Version, only for hubs whose firmware changed) and `fault-analysis.csv`
(one row per failed hub). Rows are sorted by GUID; CSV is UTF-8 without BOM, RFC 4180 (CRLF line
ends, quoting only where needed), with a header row. Each file is written atomically (temporary
file, fsync, rename), so a reader never sees half a report.
"""

from __future__ import annotations

import asyncio
import csv
import io
import logging
import os
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from drivers.untrusted import csv_cell
from jigd.events import BatchStatus, GuidLists, OutcomeCounts, UtcDateTime, format_utc
from jigd.model import GuidField, Outcome
from jigd.store import GuidState, Store

__all__ = [
    "FAULT_ANALYSIS_COLUMNS",
    "REPORT_FILES",
    "RESULTS_COLUMNS",
    "SMI_UPDATE_COLUMNS",
    "SUMMARY_SCHEMA",
    "SetAsideEntry",
    "SummaryReport",
    "write_reports",
]

_LOGGER = logging.getLogger(__name__)

SUMMARY_SCHEMA: Final = "jigd.batch-report/1"
SUMMARY_FILE = "summary.json"
RESULTS_FILE = "results.csv"
SMI_UPDATE_FILE = "smi-update.csv"
FAULT_ANALYSIS_FILE = "fault-analysis.csv"
REPORT_FILES = (SUMMARY_FILE, RESULTS_FILE, SMI_UPDATE_FILE, FAULT_ANALYSIS_FILE)

RESULTS_COLUMNS = (
    "guid",
    "outcome",
    "from_version",
    "to_version",
    "image_sha256",
    "rig",
    "slot",
    "attempts",
    "started",
    "finished",
    "failure_stage",
    "failure_code",
    "device_model",  # appended last (issue 14): readers that use positions keep working
    "station",  # appended last (the site, schema 6): the station that recorded the result
)
SMI_UPDATE_COLUMNS = ("guid", "firmware_version")
FAULT_ANALYSIS_COLUMNS = (
    "guid",
    "stage",
    "code",
    "detail",
    "attempts",
    "last_link_errors",
    "locked",
)
LINK_ERRORS_SEPARATOR = " | "


class SetAsideEntry(BaseModel):
    """A GUID put in a slot before its batch was imported and not put back since."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    guid: GuidField
    rig: int = Field(description="where it was last rejected (`not_in_batch`)")
    slot: int
    seen_at: UtcDateTime


class SummaryReport(BaseModel):
    """`summary.json`: the batch's books, for the party and the logistics system."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    schema_name: Literal["jigd.batch-report/1"] = Field(default=SUMMARY_SCHEMA, alias="schema")
    batch: str
    booking: str
    party: str
    manifest: str = Field(description="the manifest the batch was imported from")
    status: BatchStatus
    created_at: UtcDateTime
    closed_at: UtcDateTime | None
    first_started: UtcDateTime | None = Field(description="first hub put in a slot")
    last_finished: UtcDateTime | None = Field(description="last hub finished")
    generated_at: UtcDateTime
    expected: int = Field(description="GUIDs listed in the manifest")
    received: int = Field(description="listed GUIDs seen in a slot")
    pending: int = Field(description="GUIDs without an outcome yet (0 once closed)")
    counts: OutcomeCounts
    guids: GuidLists
    pending_guids: list[GuidField]
    set_aside: list[SetAsideEntry] = Field(
        description="GUIDs seen in a slot before the batch was imported and not put back: "
        "pending while the batch is open, not_received once it is closed"
    )


async def write_reports(store: Store, batch_id: str, out_dir: Path) -> list[Path]:
    """Write the four report files of the batch into `out_dir`; returns their paths.

    Works for an open batch too (an interim report): GUIDs without an outcome then have an
    empty outcome in results.csv and are listed in summary.json's `pending_guids`. Hubs seen
    before the batch was imported and not put back are listed in summary.json's `set_aside`
    (among the pending GUIDs while open, among the not_received once closed).
    """
    files = await render_reports(store, batch_id)
    paths = await asyncio.to_thread(write_report_files, out_dir, files)
    _LOGGER.info("batch %s: reports written to %s", batch_id, out_dir)
    return paths


def write_report_files(out_dir: Path, files: dict[str, str]) -> list[Path]:
    """Write rendered reports (name -> text) atomically into `out_dir`."""
    return _write_files(out_dir, files)


async def render_reports(
    store: Store, batch_id: str, *, now: datetime | None = None
) -> dict[str, str]:
    """The four report files of the batch, file name -> text (as `write_reports` writes them);
    `now` is the time they say they were generated at (default: the current time)."""
    info = await store.get_batch(batch_id)
    states = await store.batch_results(batch_id)
    aside = await store.set_aside(batch_id)
    now = now or datetime.now(UTC)
    started = [s.started for s in states if s.started is not None]
    finished = [s.finished for s in states if s.finished is not None]
    guids = {o: [s.guid for s in states if s.outcome is o] for o in Outcome}
    summary = SummaryReport(
        batch=info.batch_id,
        booking=info.booking,
        party=info.party,
        manifest=info.source,
        status=info.status,
        created_at=info.created_at,
        closed_at=info.closed_at,
        first_started=min(started, default=None),
        last_finished=max(finished, default=None),
        generated_at=now,
        expected=info.expected,
        received=info.received,
        pending=info.pending,
        counts=OutcomeCounts(**{o.value: len(guids[o]) for o in Outcome}),
        guids=GuidLists(**{o.value: guids[o] for o in Outcome}),
        pending_guids=[s.guid for s in states if s.outcome is None],
        set_aside=[
            SetAsideEntry(guid=h.guid, rig=h.rig, slot=h.slot, seen_at=h.seen_at) for h in aside
        ],
    )
    return {
        SUMMARY_FILE: summary.model_dump_json(by_alias=True, indent=2) + "\n",
        RESULTS_FILE: _csv(RESULTS_COLUMNS, (_result_row(s) for s in states)),
        SMI_UPDATE_FILE: _csv(
            SMI_UPDATE_COLUMNS,
            ((str(s.guid), str(s.to_version)) for s in states if s.outcome is Outcome.REFLASHED),
        ),
        FAULT_ANALYSIS_FILE: _csv(
            FAULT_ANALYSIS_COLUMNS,
            (_fault_row(s) for s in states if s.outcome is Outcome.FAILED),
        ),
    }


def _text(value: object | None) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return format_utc(value)
    return str(value)


def _result_row(state: GuidState) -> list[str]:
    return [
        _text(v)
        for v in (
            state.guid,
            state.outcome,
            state.from_version,
            state.to_version,
            state.image_sha256,
            state.rig,
            state.slot,
            state.attempts,
            state.started,
            state.finished,
            state.failure_stage,
            state.failure_code,
            state.model,
            state.station,
        )
    ]


def _fault_row(state: GuidState) -> list[str]:
    return [
        str(state.guid),
        _text(state.failure_stage),
        _text(state.failure_code),
        _text(state.failure_detail),
        str(state.attempts),
        LINK_ERRORS_SEPARATOR.join(state.last_link_errors),
        "yes" if state.locked else "no",  # not known (None) is not "yes": check the hub
    ]


def _csv(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """RFC 4180 text; every cell printable, capped and never a spreadsheet formula (a hub's
    error text ends up in `detail`): drivers/untrusted.py."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)  # RFC 4180: CRLF line ends, minimal quoting
    writer.writerow(header)
    writer.writerows([csv_cell(cell) for cell in row] for row in rows)
    return buffer.getvalue()


def _write_files(out_dir: Path, files: dict[str, str]) -> list[Path]:
    """Each file via a temporary sibling, fsync and rename; then fsync the directory."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, content in files.items():
        path = out_dir / name
        tmp = out_dir / f".{name}.{os.getpid()}.tmp"
        try:
            with tmp.open("w", encoding="utf-8", newline="") as handle:
                handle.write(content)
                handle.flush()
                os.fsync(handle.fileno())
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)
        paths.append(path)
    directory = os.open(out_dir, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return paths
