"""Batch reports say exactly what the books say: the SMI update lists only reflashed hubs."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from jigd.events import GuidResult
from jigd.manifest import ManifestRow
from jigd.model import DeviceModel, FirmwareVersion, Guid, Outcome, Stage
from jigd.reports import (
    FAULT_ANALYSIS_COLUMNS,
    RESULTS_COLUMNS,
    SummaryReport,
    write_reports,
)
from jigd.store.sqlite import SqliteStore

MODEL = DeviceModel(0x1086, 0x57310102)
OLD = FirmwareVersion(0x03000001)
NEW = FirmwareVersion(0x04000007)
SHA = "0f" * 32
T0 = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)

REFLASHED = (5, 1)
ALREADY_CURRENT = (3,)
FAILED = (6, 2)
NOT_RECEIVED = (4,)


def guid(n: int) -> Guid:
    return Guid(0x00DB_0000_0000_0000 + n)


def outcome_fields(outcome: Outcome, n: int) -> dict[str, object]:
    if outcome is Outcome.REFLASHED:
        return {"from_version": OLD, "to_version": NEW, "image_sha256": SHA}
    if outcome is Outcome.ALREADY_CURRENT:
        return {"from_version": NEW, "to_version": NEW, "image_sha256": SHA}
    return {
        "from_version": OLD,
        "failure_stage": Stage.UPLOAD,
        "failure_code": f"link_lost_{n}",
        "failure_detail": f'hub {n} stopped answering, detail with a comma, and "quotes"',
        "last_link_errors": ("timeout after 2.0 s", f"bad CRC at offset {n}"),
        "locked": n == 2,  # hub 6 could not be locked again after its failure
    }


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    async with await SqliteStore.open(tmp_path / "jigd.sqlite3") as opened:
        yield opened


async def make_batch(store: SqliteStore) -> str:
    """Six GUIDs listed in a shuffled order, each ending with a different story."""
    numbers = (6, 1, 4, 3, 2, 5)
    rows = [ManifestRow(i + 2, guid(n), MODEL, OLD) for i, n in enumerate(numbers)]
    batch_id = await store.import_batch(rows, "WO-77", "SUPPLIER-A", "pallet.csv")
    for outcome, group in (
        (Outcome.REFLASHED, REFLASHED),
        (Outcome.ALREADY_CURRENT, ALREADY_CURRENT),
        (Outcome.FAILED, FAILED),
    ):
        for n in group:
            attempt = await store.begin_attempt(batch_id, guid(n), 1, n)
            if outcome is Outcome.FAILED:
                await store.end_attempt(
                    batch_id, guid(n), attempt, stage=Stage.UPLOAD, error_code="link_lost"
                )
                attempt = await store.begin_attempt(batch_id, guid(n), 1, n)
            await store.record_result(
                GuidResult(
                    batch_id=batch_id,
                    guid=guid(n),
                    outcome=outcome,
                    rig=1,
                    slot=n,
                    attempts=attempt,
                    started=T0 + timedelta(minutes=n),
                    finished=T0 + timedelta(minutes=n + 3),
                    model=MODEL,
                    **outcome_fields(outcome, n),  # type: ignore[arg-type]  # mixed field types
                )
            )
    return batch_id


def read_csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"), newline="")))


def sorted_guids(numbers: tuple[int, ...]) -> list[str]:
    return sorted(str(guid(n)) for n in numbers)


async def test_closed_batch_reports_match_the_books(store: SqliteStore, tmp_path: Path) -> None:
    batch_id = await make_batch(store)
    await store.close_batch(batch_id)
    out = tmp_path / "reports" / batch_id
    paths = await write_reports(store, batch_id, out)
    await asyncio.to_thread(check_closed_reports, out, paths, batch_id)


def check_closed_reports(out: Path, paths: list[Path], batch_id: str) -> None:
    assert [p.name for p in paths] == [
        "summary.json",
        "results.csv",
        "smi-update.csv",
        "fault-analysis.csv",
    ]
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in paths)  # no temp files

    smi = (out / "smi-update.csv").read_bytes()
    expected_smi = "guid,firmware_version\r\n" + "".join(
        f"{g},04000007\r\n" for g in sorted_guids(REFLASHED)
    )
    assert smi == expected_smi.encode()

    faults = read_csv(out / "fault-analysis.csv")
    assert tuple(faults[0]) == FAULT_ANALYSIS_COLUMNS
    assert [f["guid"] for f in faults] == sorted_guids(FAILED)
    assert faults[0] == {
        "guid": str(guid(2)),
        "stage": "upload",
        "code": "link_lost_2",
        "detail": 'hub 2 stopped answering, detail with a comma, and "quotes"',
        "attempts": "2",
        "last_link_errors": "timeout after 2.0 s | bad CRC at offset 2",
        "locked": "yes",
    }
    assert faults[1]["locked"] == "no"

    results = read_csv(out / "results.csv")
    assert tuple(results[0]) == RESULTS_COLUMNS
    assert [r["guid"] for r in results] == sorted_guids((1, 2, 3, 4, 5, 6))
    by_guid = {r["guid"]: r for r in results}
    assert by_guid[str(guid(5))] == {
        "guid": str(guid(5)),
        "outcome": "reflashed",
        "from_version": "03000001",
        "to_version": "04000007",
        "image_sha256": SHA,
        "rig": "1",
        "slot": "5",
        "attempts": "1",
        "started": "2025-03-01T08:05:00.000000Z",
        "finished": "2025-03-01T08:08:00.000000Z",
        "failure_stage": "",
        "failure_code": "",
        "device_model": "1086/57310102",  # as the hub reported it, like the MQTT result
        "station": "",  # this test's store was opened for no station
    }
    # Appended: the older columns keep their places.
    assert RESULTS_COLUMNS[-2:] == ("device_model", "station")
    assert by_guid[str(guid(4))]["outcome"] == "not_received"
    assert by_guid[str(guid(4))]["rig"] == ""
    assert by_guid[str(guid(4))]["device_model"] == ""  # never seen: not known
    assert by_guid[str(guid(6))]["failure_code"] == "link_lost_6"

    raw = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert raw["schema"] == "jigd.batch-report/1"
    summary = SummaryReport.model_validate(raw)
    assert (summary.batch, summary.booking, summary.party, summary.manifest) == (
        batch_id,
        "WO-77",
        "SUPPLIER-A",
        "pallet.csv",
    )
    assert summary.counts.model_dump() == {
        "reflashed": 2,
        "already_current": 1,
        "failed": 2,
        "not_received": 1,
    }
    assert [str(g) for g in summary.guids.reflashed] == sorted_guids(REFLASHED)
    assert [str(g) for g in summary.guids.already_current] == sorted_guids(ALREADY_CURRENT)
    assert [str(g) for g in summary.guids.failed] == sorted_guids(FAILED)
    assert [str(g) for g in summary.guids.not_received] == sorted_guids(NOT_RECEIVED)
    assert (summary.expected, summary.received, summary.pending) == (6, 5, 0)
    assert summary.pending_guids == []
    assert summary.closed_at is not None
    assert summary.first_started == T0 + timedelta(minutes=1)
    assert summary.last_finished == T0 + timedelta(minutes=9)


async def test_open_batch_gives_an_interim_report(store: SqliteStore, tmp_path: Path) -> None:
    batch_id = await make_batch(store)
    out = tmp_path / "interim"
    await write_reports(store, batch_id, out)
    # Writing again replaces the files whole.
    await write_reports(store, batch_id, out)
    results, summary_text = await asyncio.to_thread(
        lambda: (read_csv(out / "results.csv"), (out / "summary.json").read_text("utf-8"))
    )
    assert {r["guid"]: r["outcome"] for r in results}[str(guid(4))] == ""
    summary = SummaryReport.model_validate_json(summary_text)
    assert summary.status == "open"
    assert summary.pending == 1
    assert summary.pending_guids == [guid(4)]
    assert summary.guids.not_received == []


async def test_set_aside_hubs_are_reported_apart_until_put_back(
    store: SqliteStore, tmp_path: Path
) -> None:
    # Hubs 7 and 8 were put in before their batch was imported; 7 is put back and flashed.
    await store.record_rejected(guid(7), 1, 2, "not_in_batch")
    await store.record_rejected(guid(8), 1, 3, "not_in_batch")
    rows = [ManifestRow(i + 2, guid(n), MODEL, OLD) for i, n in enumerate((7, 8, 9))]
    batch_id = await store.import_batch(rows, "WO-78", "SUPPLIER-A", "pallet.csv")

    async def summary() -> SummaryReport:
        out = tmp_path / "reports"
        await write_reports(store, batch_id, out)
        text = await asyncio.to_thread((out / "summary.json").read_text, "utf-8")
        return SummaryReport.model_validate_json(text)

    interim = await summary()
    assert [(e.guid, e.rig, e.slot) for e in interim.set_aside] == [
        (guid(7), 1, 2),
        (guid(8), 1, 3),
    ]
    assert interim.pending_guids == [guid(7), guid(8), guid(9)]

    attempt = await store.begin_attempt(batch_id, guid(7), 1, 5)
    await store.record_result(
        GuidResult(
            batch_id=batch_id,
            guid=guid(7),
            outcome=Outcome.REFLASHED,
            rig=1,
            slot=5,
            attempts=attempt,
            started=T0,
            finished=T0 + timedelta(minutes=3),
            model=MODEL,
            **outcome_fields(Outcome.REFLASHED, 7),  # type: ignore[arg-type]  # mixed field types
        )
    )
    assert [e.guid for e in (await summary()).set_aside] == [guid(8)]

    await store.close_batch(batch_id)
    final = await summary()
    assert [e.guid for e in final.set_aside] == [guid(8)]
    assert final.guids.not_received == [guid(8), guid(9)]
    assert final.guids.reflashed == [guid(7)]
    assert final.expected == sum(final.counts.model_dump().values())
