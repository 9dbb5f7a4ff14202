"""Loading a backend's schema migrations: the numbered SQL files of jigd/store/sql/<backend>
(`0001_initial.sql`, ...). Every backend numbers its versions alike, so a version means the
same schema whatever the backend, and `Store.schema_version()` agrees between them."""

from __future__ import annotations

import importlib.resources
import re

from jigd.store.errors import StoreError

__all__ = ["load_migrations"]

_MIGRATION_NAME = re.compile(r"(\d{4})_[a-z0-9_]+\.sql")


def load_migrations(directory: str) -> tuple[str, ...]:
    """The SQL scripts in `directory` of the jigd.store package data, `0001_*.sql` first;
    numbered 1, 2, ... with no gaps.

    A script must not contain BEGIN/COMMIT. Append new versions; never edit a released one.
    """
    scripts: dict[int, str] = {}
    for entry in importlib.resources.files("jigd.store").joinpath(directory).iterdir():
        match = _MIGRATION_NAME.fullmatch(entry.name)
        if match:
            version = int(match.group(1))
            if version in scripts:  # two branches merged with the same number
                raise StoreError(f"jigd.store {directory}: two migrations numbered {version}")
            scripts[version] = entry.read_text(encoding="utf-8")
    if sorted(scripts) != list(range(1, len(scripts) + 1)):
        raise StoreError(
            f"jigd.store {directory}: migrations are not numbered 1..n: {sorted(scripts)}"
        )
    return tuple(scripts[version] for version in sorted(scripts))
