"""The PostgreSQL store while its server is stopped and started again (issue 15, the database
outage): a call raises StoreUnavailableError naming the database without its password, the same
store object works again once the server is back, and the station's guarded store
(jigd.store_outage) holds a write until it commits, without doubling a result whose first try
had committed.

These tests stop their server: they use a cluster of their own, not the session's."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest

from jigd.events import EventKind
from jigd.model import Outcome
from jigd.store import (
    GuidStatus,
    OutcomeAlreadyRecordedError,
    Store,
    StoreUnavailableError,
    open_store,
)
from jigd.store.postgres import masked_url
from jigd.store_outage import GuardedStore, StoreWatch
from tests.jigd.store.books import guid, result, rows
from tests.postgres import PostgresCluster

pytestmark = pytest.mark.slow  # each stop waits out the pool's 10 s: not in `make test-fast`

PASSWORD = "outage-pw-1"  # trust authentication: the server ignores it, messages must not show it
WAIT_S = 60.0


@pytest.fixture(scope="module")
def cluster() -> Iterator[PostgresCluster]:
    own = PostgresCluster()
    own.start()
    try:
        yield own
    finally:
        own.remove()


def _running(cluster: PostgresCluster) -> None:
    if not (cluster.data / "postmaster.pid").exists():
        cluster.start()


@pytest.fixture
def url(cluster: PostgresCluster) -> Iterator[str]:
    _running(cluster)
    yield cluster.new_database().replace("jigd_test@", f"jigd_test:{PASSWORD}@")
    _running(cluster)  # a failed test must not leave the next one without a server


async def test_a_call_while_the_server_is_stopped_is_unavailable_then_works_again(
    cluster: PostgresCluster, url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with await open_store(url) as store:
        batch = await store.import_batch(rows(1, 2), "WO-1", "P", "m.csv")
        await asyncio.to_thread(cluster.stop)
        with caplog.at_level(logging.DEBUG), pytest.raises(StoreUnavailableError) as caught:
            await store.get_batch(batch)
        text = str(caught.value)
        assert text.startswith(masked_url(url)), text
        assert "unreachable" in text
        assert PASSWORD not in text
        assert PASSWORD not in caplog.text
        await asyncio.to_thread(cluster.start)
        async with asyncio.timeout(WAIT_S):  # the pool reconnects by itself
            while True:
                try:
                    info = await store.get_batch(batch)
                except StoreUnavailableError:
                    await asyncio.sleep(0.5)
                    continue
                break
        assert info.expected == 2
        attempt = await store.begin_attempt(batch, guid(1), 1, 1)
        await store.record_result(result(batch, 1, Outcome.REFLASHED, attempts=attempt))
        assert (await store.get_batch(batch)).counts[Outcome.REFLASHED] == 1


class Changes:
    """What a StoreWatch told: each change (False: down), and an event set once it went down."""

    def __init__(self) -> None:
        self.seen: list[bool] = []
        self.went_down = asyncio.Event()

    def __call__(self, up: bool) -> None:
        self.seen.append(up)
        if not up:
            self.went_down.set()

    async def down(self) -> None:
        async with asyncio.timeout(WAIT_S):
            await self.went_down.wait()


async def test_a_guarded_write_waits_for_the_server_and_commits_once(
    cluster: PostgresCluster, url: str, caplog: pytest.LogCaptureFixture
) -> None:
    changes = Changes()
    watch = StoreWatch(masked_url(url), changes)
    async with await open_store(url) as store:
        guarded = GuardedStore(store, watch, retry=True)
        batch = await store.import_batch(rows(1), "WO-1", "P", "m.csv")
        attempt = await store.begin_attempt(batch, guid(1), 1, 1)
        await asyncio.to_thread(cluster.stop)
        with caplog.at_level(logging.INFO):
            recording = asyncio.create_task(
                guarded.record_result(result(batch, 1, Outcome.REFLASHED, attempts=attempt))
            )
            await changes.down()
            assert not recording.done()  # held, not failed
            probe = asyncio.create_task(watch.probe(store))
            try:
                await asyncio.to_thread(cluster.start)
                async with asyncio.timeout(WAIT_S):
                    await recording  # the probe saw the server back, the write went again
            finally:
                watch.close()
                await probe
        assert changes.seen == [False, True]
        assert watch.up
        assert watch.outages == 1
        assert watch.retries >= 1
        state = await store.guid_state(batch, guid(1))
        assert (state.status, state.outcome) == (GuidStatus.FINAL, Outcome.REFLASHED)
        assert [r.kind for r in await store.outbox_pending()].count(EventKind.RESULT) == 1
    assert f"store down: {masked_url(url)}: the database is unreachable" in caplog.text
    assert f"store {masked_url(url)}: back after" in caplog.text
    assert PASSWORD not in caplog.text


async def _retried_after_a_commit(
    cluster: PostgresCluster, url: str, recorded: Outcome, retried: Outcome
) -> tuple[asyncio.Task[None], Store, str]:
    """A guarded record_result of `retried` that found the server stopped, and while it waits
    to retry, the GUID's result `recorded` committed by another store object: what a first try
    that committed as its connection died looks like to the retry."""
    changes = Changes()
    watch = StoreWatch(masked_url(url), changes)
    store = await open_store(url)
    # No probe runs: the retry waits until the test says the store is back.
    guarded = GuardedStore(store, watch, retry=True)
    batch = await store.import_batch(rows(1), "WO-1", "P", "m.csv")
    attempt = await store.begin_attempt(batch, guid(1), 1, 1)
    await asyncio.to_thread(cluster.stop)
    task = asyncio.create_task(guarded.record_result(result(batch, 1, retried, attempts=attempt)))
    await changes.down()
    await asyncio.to_thread(cluster.start)
    async with await open_store(url) as other:
        await other.record_result(result(batch, 1, recorded, attempts=attempt))
    watch.mark_up()  # another call saw it back: the retry goes at once
    return task, store, batch


async def test_a_retried_result_that_had_committed_is_not_recorded_twice(
    cluster: PostgresCluster, url: str
) -> None:
    task, store, batch = await _retried_after_a_commit(
        cluster, url, Outcome.REFLASHED, Outcome.REFLASHED
    )
    async with store:
        async with asyncio.timeout(WAIT_S):
            await task  # OutcomeAlreadyRecordedError, explained by the first try: success
        assert (await store.guid_state(batch, guid(1))).outcome is Outcome.REFLASHED
        assert [r.kind for r in await store.outbox_pending()].count(EventKind.RESULT) == 1


async def test_a_retried_result_that_finds_another_outcome_is_refused(
    cluster: PostgresCluster, url: str
) -> None:
    task, store, batch = await _retried_after_a_commit(
        cluster, url, Outcome.ALREADY_CURRENT, Outcome.REFLASHED
    )
    async with store:
        with pytest.raises(OutcomeAlreadyRecordedError, match="outcome already_current"):
            async with asyncio.timeout(WAIT_S):
                await task
        assert (await store.guid_state(batch, guid(1))).outcome is Outcome.ALREADY_CURRENT
