"""Retention and backup from the command line: `jigctl export` and `jigctl backup` against a
running daemon (the `daemon` fixture), `jigd store check` of the backup, `jigd store purge` on a
station's config, and the daemon's periodic purge."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from jigd.cli import main as jigd_main
from jigd.config import RetentionConfig
from jigd.model import Outcome
from jigd.retention import purge_every
from jigd.station import Station
from jigd.store import PurgeCounts, Store, open_store
from jigd.store.sqlite import sqlite_url
from tests.jigd.store.books import StepClock, books_of, flash, rows
from tests.jigd.test_ctl import ctl

EXPORT_FIELDS = ["id", "ts", "kind", "batch", "guid", "rig", "slot", "data"]


async def jigd(*args: str) -> int:
    """`jigd` in a thread (it runs its own event loop), like a technician's shell."""
    return await asyncio.to_thread(jigd_main, list(args))


async def two_batches(store: Store) -> list[str]:
    """A closed batch with each outcome, and an open one part flashed."""
    closed = await store.import_batch(rows(1, 2, 3, 4), "WO-1", "P", "a.csv")
    for n, outcome in enumerate([Outcome.REFLASHED, Outcome.FAILED, Outcome.ALREADY_CURRENT], 1):
        await flash(store, closed, n, outcome)
    await store.close_batch(closed)
    still_open = await store.import_batch(rows(5, 6), "WO-2", "P", "b.csv")
    await flash(store, still_open, 5, Outcome.REFLASHED)
    return [closed, still_open]


async def test_export_writes_the_batch_journal_as_json_lines(
    daemon: Station, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    closed, _ = await two_batches(daemon.store)
    out = tmp_path / "journal.jsonl"
    assert await ctl(daemon, "export", "--batch", closed, "--out", str(out)) == 0
    journal = await daemon.store.journal(batch_id=closed)
    assert f"{len(journal)} journal event(s)" in capsys.readouterr().out
    lines = out.read_text(encoding="utf-8").splitlines()
    events = [json.loads(line) for line in lines]
    assert [list(e) for e in events] == [EXPORT_FIELDS] * len(journal)
    assert [e["id"] for e in events] == [e.id for e in journal]
    assert [e["kind"] for e in events] == [e.kind for e in journal]
    assert all(list(e["data"]) == sorted(e["data"]) for e in events)
    assert await ctl(daemon, "export", "--batch", closed) == 0
    assert capsys.readouterr().out.splitlines() == lines  # to stdout, the same lines
    assert await ctl(daemon, "export", "--batch", "B999999") == 2
    assert "B999999" in capsys.readouterr().err


async def test_an_online_backup_checks_and_restores_to_identical_reports(
    daemon: Station, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    batches = await two_batches(daemon.store)
    before = await books_of(daemon.store, batches)
    backup = tmp_path / "backups" / "jigd-backup.sqlite3"
    backup.parent.mkdir()
    assert await ctl(daemon, "backup", "--out", str(backup)) == 0
    assert f"{backup}: {backup.stat().st_size} bytes" in capsys.readouterr().out
    assert await ctl(daemon, "backup", "--out", str(backup)) == 2
    assert "the file exists" in capsys.readouterr().err
    await flash(daemon.store, batches[1], 6, Outcome.FAILED)  # the daemon goes on

    assert await jigd("store", "check", str(backup)) == 0
    assert "OK" in capsys.readouterr().out
    restored = tmp_path / "restored" / "jigd.sqlite3"
    restored.parent.mkdir()
    restored.write_bytes(backup.read_bytes())
    async with await open_store(sqlite_url(restored)) as store:
        assert await books_of(store, batches) == before


def test_check_refuses_a_damaged_file_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    damaged = tmp_path / "damaged.sqlite3"
    damaged.write_bytes(b"SQLite format 3\x00" + b"\xff" * 4000)
    assert jigd_main(["store", "check", str(damaged)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {damaged}: ")
    assert err.count("\n") == 1


async def test_store_purge_from_the_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store_path = tmp_path / "state" / "jigd.sqlite3"
    clock = StepClock()
    clock.now -= timedelta(days=500)  # everything happened 500 days ago
    async with await open_store(sqlite_url(store_path), clock=clock) as store:
        batches = await two_batches(store)
        published = await store.mark_published(m.id for m in await store.outbox_pending())
        before = await books_of(store, batches)
        closed_journal = len(await store.journal(batch_id=batches[0]))
    config = tmp_path / "jigd.toml"
    config.write_text(
        f'station = "t"\ncatalog_dir = "{tmp_path}"\nstore_path = "{store_path}"\n'
        "[retention]\noutbox_published_days = 7\njournal_days = 400\n",
        encoding="utf-8",
    )
    assert await jigd("store", "purge", "--config", str(config), "--dry-run") == 0
    dry = capsys.readouterr().out
    assert dry.startswith(f"would purge {published} published outbox row(s)")
    assert f"and {closed_journal} journal event(s)" in dry
    assert await jigd("store", "purge", "--config", str(config)) == 0
    assert capsys.readouterr().out == dry.replace("would purge", "purged", 1)
    async with await open_store(sqlite_url(store_path)) as store:
        assert await store.journal(batch_id=batches[0]) == []
        assert await store.journal(batch_id=batches[1]) != []  # still open
        assert await books_of(store, batches) == before
    assert await jigd("store", "check", str(store_path)) == 0
    config.write_text('station = "t"\n[retention]\njournal_days = -1\n', encoding="utf-8")
    assert await jigd("store", "purge", "--config", str(config)) == 2
    assert "journal_days" in capsys.readouterr().err


async def test_the_daemon_purges_periodically(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = StepClock()
    async with await open_store(sqlite_url(tmp_path / "s.sqlite3"), clock=clock) as store:
        closed, _ = await two_batches(store)
        clock.now += timedelta(days=401)
        purges: asyncio.Queue[PurgeCounts] = asyncio.Queue()
        purge = store.purge

        async def purge_and_tell(**kwargs: Any) -> PurgeCounts:
            counts = await purge(**kwargs)
            purges.put_nowait(counts)
            return counts

        monkeypatch.setattr(store, "purge", purge_and_tell)
        config = RetentionConfig(journal_days=400, purge_every_h=0.0001)
        task = asyncio.create_task(purge_every(store, config, first_delay_s=0))
        try:
            async with asyncio.timeout(10):
                first, second = await purges.get(), await purges.get()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        assert first.journal > 0
        assert (second.outbox, second.journal) == (0, 0)  # again, with nothing left to purge
        assert await store.journal(batch_id=closed) == []
        assert [e.kind for e in await store.journal() if e.batch_id is None] == ["purged"]


async def test_the_daemon_runs_the_periodic_purge_by_default(daemon: Station) -> None:
    assert daemon.config.retention.purge_every_h == 24.0
    names = {task.get_name() for task in asyncio.all_tasks()}
    assert "retention" in names
