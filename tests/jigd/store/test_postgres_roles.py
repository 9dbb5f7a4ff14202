"""A PostgreSQL store with least privilege, as docs/install.md ("A PostgreSQL store") sets it
up: the database's owner migrates it (`jigd store migrate`), the station's role only reads and
writes rows. The statements below are the guide's, run against the throwaway cluster."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from jigd.model import Outcome
from jigd.store import StoreError, open_store
from jigd.store.postgres import MIGRATIONS, PostgresStore
from tests.jigd.store.books import StepClock, flash, rows
from tests.jigd.test_retention_cli import jigd
from tests.postgres import PostgresCluster

# docs/install.md, "A PostgreSQL store": as the server's superuser, then CREATE DATABASE ...
# OWNER jigd_owner.
ROLES = ("CREATE ROLE jigd_owner LOGIN", "CREATE ROLE jigd_station LOGIN")
# ... then in the new database.
GRANTS = (
    "REVOKE ALL ON DATABASE {db} FROM PUBLIC",
    "GRANT CONNECT ON DATABASE {db} TO jigd_station",
    "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
    "GRANT USAGE ON SCHEMA public TO jigd_station",
    "ALTER DEFAULT PRIVILEGES FOR ROLE jigd_owner IN SCHEMA public "
    "GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO jigd_station",
    "ALTER DEFAULT PRIVILEGES FOR ROLE jigd_owner IN SCHEMA public "
    "GRANT USAGE, SELECT ON SEQUENCES TO jigd_station",
)


@pytest.fixture
def site_db(postgres_cluster: PostgresCluster) -> str:
    """A database set up as the guide says (the roles are made once per cluster)."""
    if "jigd_owner" not in postgres_cluster.sql("SELECT rolname FROM pg_roles"):
        for statement in ROLES:
            postgres_cluster.sql(statement)
    db = postgres_cluster.new_database(owner="jigd_owner").rsplit("/", 1)[1]
    for statement in GRANTS:
        postgres_cluster.sql(statement.format(db=db), database=db)
    return db


async def test_the_owner_migrates_and_the_station_role_keeps_the_books(
    postgres_cluster: PostgresCluster, site_db: str, tmp_path: Path
) -> None:
    owner = postgres_cluster.url(site_db, "jigd_owner")
    station = postgres_cluster.url(site_db, "jigd_station")
    config = tmp_path / "jigd.toml"
    config.write_text(
        f'station = "t"\ncatalog_dir = "{tmp_path}"\n[store]\nurl = "{owner}"\n', "utf-8"
    )
    assert await jigd("store", "migrate", "--config", str(config)) == 0
    async with await open_store(station, clock=StepClock()) as store:
        assert await store.schema_version() == len(MIGRATIONS)
        batch = await store.import_batch(rows(1, 2, 3), "WO", "P", "m.csv")
        await flash(store, batch, 1, Outcome.REFLASHED)
        await store.close_batch(batch)
        await store.mark_published(m.id for m in await store.outbox_pending())
        await store.set_slot_service(1, 2, disabled=True, reason="worn pin", by="t")
        purged = await store.purge(outbox_age=timedelta(0), journal_age=timedelta(0))
        assert purged.outbox > 0
        assert purged.journal > 0
        info = await store.get_batch(batch)
        assert (info.expected, info.counts[Outcome.REFLASHED]) == (3, 1)
        assert await store.check_books() == []
    # Least privilege: the station's role cannot change the schema.
    with pytest.raises(RuntimeError, match="permission denied for schema public"):
        postgres_cluster.sql("SET ROLE jigd_station; CREATE TABLE t (x int)", database=site_db)


async def test_a_station_role_cannot_migrate_and_says_who_can(
    postgres_cluster: PostgresCluster, site_db: str
) -> None:
    owner = postgres_cluster.url(site_db, "jigd_owner")
    async with await PostgresStore.open(owner, migrations=MIGRATIONS[:-1]):
        pass
    with pytest.raises(StoreError) as raised:
        await open_store(postgres_cluster.url(site_db, "jigd_station"))
    message = str(raised.value)
    assert f"the schema is at version {len(MIGRATIONS) - 1}" in message
    assert f"this jigd needs {len(MIGRATIONS)}" in message
    assert "run `jigd store migrate` with the URL of the role that owns the database" in message
