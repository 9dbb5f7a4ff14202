"""Checking a SQLite store file, a backup above all, without changing it (`jigd store check`):
schema version, SQLite's integrity check, foreign keys, and the books of every batch."""

from __future__ import annotations

import sqlite3
import urllib.parse
from pathlib import Path

from jigd.store.sqlite.retention import books_problems
from jigd.store.sqlite.worker import MIGRATIONS

__all__ = ["check_file"]


def check_file(path: Path) -> list[str]:
    """What is wrong with the store file `path`, one line each; empty if it is sound.

    Opened read-only: a check never migrates or repairs. The schema must be the version this
    jigd writes (an older store is checked once jigd has opened, and so migrated, a copy).
    """
    if not path.is_file():
        return [f"{path}: no such file"]
    uri = f"file:{urllib.parse.quote(str(path.absolute()))}?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, isolation_level=None)
    except sqlite3.Error as exc:
        return [f"{path}: cannot open it: {exc}"]
    try:
        return _problems(conn)
    except sqlite3.DatabaseError as exc:
        return [f"{path}: not a readable jigd store: {exc}"]
    finally:
        conn.close()


def _problems(conn: sqlite3.Connection) -> list[str]:
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    if "schema_migrations" not in tables:
        return ["not a jigd store (no schema_migrations table)"]
    version = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()
    if version[0] != len(MIGRATIONS):
        return [f"schema version {version[0]}, this jigd writes {len(MIGRATIONS)}"]
    integrity = [row[0] for row in conn.execute("PRAGMA integrity_check")]
    if integrity != ["ok"]:
        return [f"integrity check: {line}" for line in integrity]
    problems = [
        f"foreign key: {table} row {rowid} names a missing {parent}"
        for table, rowid, parent, _ in conn.execute("PRAGMA foreign_key_check")
    ]
    return problems + books_problems(conn)
