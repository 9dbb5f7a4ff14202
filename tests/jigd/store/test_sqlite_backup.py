"""The SQLite store's online backup, its journal's guard, and `check_file` of a store file."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest

from jigd.model import Outcome
from jigd.store import BackupError, open_store
from jigd.store.sqlite import MIGRATIONS, SqliteStore, sqlite_url
from jigd.store.sqlite.check import check_file
from tests.jigd.store.books import StepClock, books_of, flash, guid, result, rows

DAY = timedelta(days=1)


async def test_an_open_batchs_journal_cannot_be_deleted(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    async with await SqliteStore.open(path) as store:
        await store.import_batch(rows(1), "WO", "P", "m.csv")
    conn = sqlite3.connect(path)
    try:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("DELETE FROM events")
    finally:
        conn.close()


async def test_a_backup_restores_to_a_sound_store_with_the_same_reports(tmp_path: Path) -> None:
    async with await SqliteStore.open(tmp_path / "live.sqlite3", clock=StepClock()) as store:
        closed = await store.import_batch(rows(1, 2, 3), "WO-1", "P", "a.csv")
        await flash(store, closed, 1, Outcome.REFLASHED)
        await flash(store, closed, 3, Outcome.FAILED)
        await store.close_batch(closed)
        still_open = await store.import_batch(rows(4, 5), "WO-2", "P", "b.csv")
        await flash(store, still_open, 5, Outcome.ALREADY_CURRENT)
        await store.begin_attempt(still_open, guid(4), 1, 2)
        before = await books_of(store, [closed, still_open])
        info = await store.backup(tmp_path / "backup.sqlite3")
        with pytest.raises(BackupError, match="exists"):
            await store.backup(tmp_path / "backup.sqlite3")
        # After the backup: not in it.
        await store.record_result(result(still_open, 4, Outcome.REFLASHED, slot=2))
    assert info.size == (tmp_path / "backup.sqlite3").stat().st_size > 0
    assert info.blocked_s >= 0
    assert check_file(tmp_path / "backup.sqlite3") == []
    restored = tmp_path / "restored" / "jigd.sqlite3"
    restored.parent.mkdir()
    restored.write_bytes((tmp_path / "backup.sqlite3").read_bytes())
    async with await open_store(sqlite_url(restored)) as store:
        assert await books_of(store, [closed, still_open]) == before
        assert await store.check_books() == []


def test_check_names_what_is_wrong(tmp_path: Path) -> None:
    assert check_file(tmp_path / "none.sqlite3") == [f"{tmp_path / 'none.sqlite3'}: no such file"]
    junk = tmp_path / "junk.sqlite3"
    junk.write_bytes(b"not a database at all" * 100)
    [problem] = check_file(junk)
    assert "not a readable jigd store" in problem


async def test_check_finds_books_that_do_not_balance(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    async with await SqliteStore.open(path) as store:
        batch_id = await store.import_batch(rows(1, 2), "WO", "P", "m.csv")
        await flash(store, batch_id, 1, Outcome.REFLASHED)
    assert check_file(path) == []
    conn = sqlite3.connect(path)
    try:
        conn.execute("UPDATE batch_counts SET reflashed = 0, pending = 2")
        conn.commit()
    finally:
        conn.close()
    [problem] = check_file(path)
    assert problem.startswith(f"batch {batch_id}: kept counts")
    conn = sqlite3.connect(path)
    try:
        conn.execute("UPDATE schema_migrations SET version = 99 WHERE version = 1")
        conn.commit()
    finally:
        conn.close()
    assert check_file(path) == [f"schema version 99, this jigd writes {len(MIGRATIONS)}"]
