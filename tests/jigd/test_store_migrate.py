"""`jigd store migrate`: a store of the previous schema version is brought to this jigd's, and
keeps its books; a store written by a newer jigd is refused (exit 2) and left untouched; a
password in the store URL is never shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from jigd.store import open_store, shown_url
from jigd.store.sqlite import MIGRATIONS, SqliteStore, sqlite_url
from tests.jigd.store.books import guid
from tests.jigd.store.old_schema import OLD_OUTCOMES, insert_old_batch
from tests.jigd.test_retention_cli import jigd, two_batches

NEXT = "CREATE TABLE from_a_newer_jigd (x INTEGER) STRICT;"


def _config(tmp_path: Path, store: Path) -> Path:
    config = tmp_path / "jigd.toml"
    config.write_text(
        f'station = "t"\ncatalog_dir = "{tmp_path}"\nstore_path = "{store}"\n', encoding="utf-8"
    )
    return config


async def test_a_store_of_the_previous_version_is_migrated_with_its_books(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "state" / "jigd.sqlite3"
    async with await SqliteStore.open(path, migrations=MIGRATIONS[:-1]) as old:
        assert await old.schema_version() == len(MIGRATIONS) - 1
    insert_old_batch(path, OLD_OUTCOMES)  # as the jigd of that version wrote them
    assert await jigd("store", "migrate", "--config", str(_config(tmp_path, path))) == 0
    out = capsys.readouterr().out
    assert (
        out == f"{sqlite_url(path)}: schema version {len(MIGRATIONS)}, the newest this jigd knows\n"
    )
    async with await open_store(sqlite_url(path)) as store:
        assert await store.schema_version() == len(MIGRATIONS)
        info = await store.get_batch("B000001")
        assert (info.expected, info.received, info.pending) == (7, 4, 2)
        assert [s.guid for s in await store.batch_results("B000001")] == [
            guid(n) for n in range(1, len(OLD_OUTCOMES) + 1)
        ]
        assert await store.check_books() == []
    assert await jigd("store", "check", str(path)) == 0


async def test_a_store_of_a_newer_jigd_is_refused_untouched(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "state" / "jigd.sqlite3"
    async with await SqliteStore.open(path, migrations=(*MIGRATIONS, NEXT)) as newer:
        await two_batches(newer)
    written = path.read_bytes()
    assert await jigd("store", "migrate", "--config", str(_config(tmp_path, path))) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: database schema version {len(MIGRATIONS) + 1} ")
    assert "newer than this jigd knows" in err
    assert path.read_bytes() == written


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://jigd:s3cret@db.site:5432/jigd", "postgresql://jigd:***@db.site:5432/jigd"),
        ("postgresql://:s3cret@db/jigd", "postgresql://:***@db/jigd"),
        (
            "postgresql://jigd@db/jigd?sslmode=verify-full",
            "postgresql://jigd@db/jigd?sslmode=verify-full",
        ),
        ("sqlite:///var/lib/jigd/jigd.sqlite3", "sqlite:///var/lib/jigd/jigd.sqlite3"),
        ("postgresql://u:s3cret@[not-ipv6/jigd", "(a store URL that does not parse)"),
        ("postgresql://u@db/jigd?password=s3cret", "postgresql://u@db/jigd?password=***"),
    ],
)
def test_a_password_in_a_store_url_is_never_shown(url: str, shown: str) -> None:
    assert shown_url(url) == shown
    assert "s3cret" not in shown_url(url)
