"""Store benchmark: `record_result` time against batch size, and the store's growth per hub and
over a simulated year, with and without the retention purge.

Run: .venv/bin/python -m bench.store [--results N] [--hubs N]

Everything goes through the SQLite store's contract on a real file (WAL, synchronous=FULL) in a
temporary directory (on this container, the same ext4 disk as the working directory), as a
station's store would be.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from jigd.events import GuidResult
from jigd.manifest import ManifestRow
from jigd.model import DeviceModel, FirmwareVersion, Guid, Outcome, Stage
from jigd.store.sqlite import SqliteStore

MODEL = DeviceModel(0x1086, 0x57310102)
OLD = FirmwareVersion(0x03000001)
NEW = FirmwareVersion(0x04000007)
BATCH_SIZES = (1_000, 10_000)
HUBS_PER_YEAR = 300_000
PALLET = 896  # hubs per pallet, one batch each
IMAGE_BYTES = 262_144
RETRIED = 0.10  # share of hubs whose first attempt fails and is retried
FAILED = 0.02  # share of hubs that end failed
OLD_RECOUNT_SQL = (
    "SELECT outcome, COUNT(*), SUM(attempts > 0) FROM guid_states "
    "WHERE batch_id = ? GROUP BY outcome"
)


class Clock:
    """The store's clock: moves `step` per reading, from a fixed start."""

    def __init__(self, step: timedelta) -> None:
        self.now = datetime(2026, 1, 5, 7, 0, tzinfo=UTC)
        self.step = step

    def __call__(self) -> datetime:
        self.now += self.step
        return self.now


def manifest_rows(first: int, count: int) -> list[ManifestRow]:
    return [
        ManifestRow(i + 2, Guid(0x00DB_0000_0000_0000 + first + i), MODEL, OLD)
        for i in range(count)
    ]


def _result(batch_id: str, guid: Guid, attempt: int, outcome: Outcome, now: datetime) -> GuidResult:
    failed = outcome is Outcome.FAILED
    return GuidResult(
        batch_id=batch_id,
        guid=guid,
        outcome=outcome,
        rig=1,
        slot=1 + guid.value % 8,
        attempts=attempt,
        started=now - timedelta(minutes=3),
        finished=now,
        model=MODEL,
        from_version=OLD,
        to_version=None if failed else NEW,
        image_sha256=None if failed else "ab" * 32,
        failure_stage=Stage.VERIFY if failed else None,
        failure_code="boot_reverted" if failed else None,
        failure_detail="the hub booted its old image" if failed else None,
    )


async def record_result_times(directory: Path, results: int) -> dict[int, tuple[float, float]]:
    """Per batch size: the median seconds of one `record_result` (`results` GUIDs chosen at
    random), and of the full recount each result made before schema 0005. The batches share
    one store and take turns, so the disk's and the machine's noise falls on both alike."""
    path = directory / "batches.sqlite3"
    times: dict[int, list[float]] = {size: [] for size in BATCH_SIZES}
    async with await SqliteStore.open(path) as store:
        batches, samples, first = {}, {}, 0
        for size in BATCH_SIZES:
            manifest = manifest_rows(first, size)
            first += size
            batches[size] = await store.import_batch(manifest, "WO", "P", f"{size}.csv")
            samples[size] = random.Random(size).sample(manifest, results)
        for turn in range(results):
            for size in BATCH_SIZES:
                batch_id, guid = batches[size], samples[size][turn].guid
                attempt = await store.begin_attempt(batch_id, guid, 1, 1)
                result = _result(batch_id, guid, attempt, Outcome.REFLASHED, datetime.now(UTC))
                started = time.perf_counter()
                await store.record_result(result)
                times[size].append(time.perf_counter() - started)
    conn = sqlite3.connect(path)
    try:
        recounts: dict[int, list[float]] = {size: [] for size in BATCH_SIZES}
        for _ in range(200):
            for size in BATCH_SIZES:
                started = time.perf_counter()
                conn.execute(OLD_RECOUNT_SQL, (batches[size],)).fetchall()
                recounts[size].append(time.perf_counter() - started)
    finally:
        conn.close()
    return {
        size: (statistics.median(times[size]), statistics.median(recounts[size]))
        for size in BATCH_SIZES
    }


async def flash_hub(store: SqliteStore, batch_id: str, guid: Guid, rng: random.Random) -> None:
    """One hub as the daemon records it (jigd/slot.py): the attempt, its upload journalled,
    the result; for some a failed first attempt (its stage journalled, the attempt ended)."""
    attempt = await store.begin_attempt(batch_id, guid, 1, 1, model=MODEL, from_version=OLD)
    if rng.random() < RETRIED:
        await store.record_stage(batch_id, guid, attempt, Stage.UPLOAD, "timeout")
        await store.end_attempt(
            batch_id, guid, attempt, stage=Stage.UPLOAD, error_code="timeout", locked=True
        )
        attempt = await store.begin_attempt(batch_id, guid, 1, 1)
    detail = f"uploaded {IMAGE_BYTES} bytes, resumed from offset 0"
    await store.record_stage(batch_id, guid, attempt, Stage.UPLOAD, detail)
    outcome = Outcome.FAILED if rng.random() < FAILED else Outcome.REFLASHED
    now = datetime.now(UTC)
    await store.record_result(_result(batch_id, guid, attempt, outcome, now))


def _size(path: Path) -> int:
    """The store's size on disk once checkpointed (its file, no WAL), after a VACUUM."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("VACUUM")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return path.stat().st_size


async def growth(directory: Path, hubs: int) -> dict[str, float]:
    """Bytes per hub in the books, the journal and the published outbox, from `hubs` hubs in
    pallets, each batch closed and its messages published; and the backup's hold time."""
    path = directory / "growth.sqlite3"
    rng = random.Random(1)
    clock = Clock(timedelta(seconds=1))
    async with await SqliteStore.open(path, clock=clock) as store:
        empty = _size(path)
        for first in range(0, hubs, PALLET):
            manifest = manifest_rows(first, min(PALLET, hubs - first))
            batch_id = await store.import_batch(manifest, "WO", "P", "pallet.csv")
            for row in manifest:
                await flash_hub(store, batch_id, row.guid, rng)
            await store.close_batch(batch_id)
            await store.mark_published(m.id for m in await store.outbox_pending(10_000))
        full = _size(path)
        backup = await store.backup(directory / "backup.sqlite3")
        await store.purge(outbox_age=timedelta(0), journal_age=timedelta(days=400))
        no_outbox = _size(path)
        await store.purge(outbox_age=timedelta(0), journal_age=timedelta(0))
        books = _size(path)
    return {
        "empty": empty,
        "total": (full - empty) / hubs,
        "outbox": (full - no_outbox) / hubs,
        "journal": (no_outbox - books) / hubs,
        "books": (books - empty) / hubs,
        "full_mib": full / 2**20,
        "backup_s": backup.blocked_s,
    }


async def main(results: int, hubs: int) -> None:
    with tempfile.TemporaryDirectory(prefix="jigd-bench-store-") as tmp:
        directory = Path(tmp)
        print(f"record_result, {results} results per batch (median; WAL, synchronous=FULL):")
        measured = await record_result_times(directory, results)
        for size, (median, recount) in measured.items():
            print(
                f"  {size:>6} GUIDs: {median * 1e3:.2f} ms per result "
                f"(the recount each result did before schema 0005: {recount * 1e3:.2f} ms)"
            )
        ratio = measured[BATCH_SIZES[1]][0] / measured[BATCH_SIZES[0]][0]
        print(f"  ratio {BATCH_SIZES[1]} / {BATCH_SIZES[0]}: {ratio:.2f} (flat: about 1)")

        started = time.perf_counter()
        per_hub = await growth(directory, hubs)
        took = time.perf_counter() - started
    print(
        f"store growth, {hubs} hubs in pallets of {PALLET} ({took:.0f} s; {RETRIED:.0%} retried, "
        f"{FAILED:.0%} failed; as jigd/slot.py journals an attempt):"
    )
    for part in ("books", "journal", "outbox", "total"):
        print(f"  {part:>8}: {per_hub[part]:7.0f} bytes per hub")
    books, journal, outbox = (per_hub[p] for p in ("books", "journal", "outbox"))
    year_without = HUBS_PER_YEAR * (books + journal + outbox) + per_hub["empty"]
    year_with = HUBS_PER_YEAR * (books + journal + outbox * 7 / 365) + per_hub["empty"]
    # At the end of year 2: two years of books, the journal of batches closed in the last 400
    # days, a week of delivered messages.
    steady = HUBS_PER_YEAR * (2 * books + journal * 400 / 365 + outbox * 7 / 365)
    print(f"one year at {HUBS_PER_YEAR} hubs (bytes per hub x hubs):")
    print(f"  without the purge: {year_without / 2**20:.0f} MiB")
    print(
        f"  with the purge (outbox 7 days, journal 400 days after close): "
        f"{year_with / 2**20:.0f} MiB"
    )
    print(
        f"  with the purge, at the end of year 2 (journal of the last 400 days only): "
        f"{steady / 2**20:.0f} MiB (the books grow {HUBS_PER_YEAR * books / 2**20:.0f} MiB "
        "a year, kept for good)"
    )
    print(
        f"backup of the {per_hub['full_mib']:.1f} MiB store: the store held "
        f"{per_hub['backup_s'] * 1e3:.0f} ms"
        f" ({per_hub['backup_s'] / per_hub['full_mib'] * 1e3:.1f} ms per MiB)"
    )


if __name__ == "__main__":
    load = " ".join(Path("/proc/loadavg").read_text(encoding="ascii").split()[:3])
    print(f"# bench.store, {time.strftime('%Y-%m-%d %H:%M:%S')}, load average {load}")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=int, default=1000, help="results timed per batch")
    parser.add_argument(
        "--hubs", type=int, default=10 * PALLET, help="hubs flashed to measure the growth"
    )
    args = parser.parse_args()
    asyncio.run(main(args.results, args.hubs))
