"""What the station does while its store cannot be reached (docs/architecture.md, "Store
outages").

`StoreWatch` is the station's one view of its store: up, or down since when. It hears it from
every store call the station makes: a call that raises StoreUnavailableError marks the store
down, one the database answered (with a value or with an error in what was asked) marks it up
again; while it is down, `probe()` reads the schema version every few seconds, so that the
station comes back by itself even when no slot has a write waiting. Each change is logged once
(naming the database, a password masked; on the way back, how long it was down) and told to
the observers (the `jigd_store_up` gauge).

`GuardedStore` is a Store that hands every call to the real one and tells the watch what it
saw. The station gives the slots one that retries (`retry=True`): a call that found the store
down waits until the store is back and is made again then (the probe alone knocks, every few
seconds: the waiting calls do not each hammer a server that is down, and a write retried is
stamped after the outage). So a slot keeps its hub and its pending write (a finished hub's
result, in memory, its LED still AMBER) until the write has committed; only then does it go
on. Everyone else (control API, metrics, publisher) gets one that only watches: while the
store is down, their calls fail at once with StoreUnavailableError instead of each waiting for
a connection. Once the watch is closed (the station stops), a call that finds the store down
raises instead of waiting: the result it held is lost from memory, and its attempt, left open
in the store, is recovered as interrupted at the next start.

A write whose connection was lost while it committed may have committed. Retrying it must not
lose or double anything:

- `record_result`: a retry that finds the GUID's outcome already recorded
  (OutcomeAlreadyRecordedError) reads the GUID's state; if it is this result (outcome,
  attempts, rig, slot and finish time), the first try committed and the call succeeds.
- `end_attempt`, `interrupt_attempt`: a retry that finds the attempt no longer running
  (UnknownAttemptError) reads the attempts; if that attempt is closed with this error code, the
  first try committed.
- `begin_attempt`: a retry after a first try that committed finds that attempt open in the same
  slot, closes it as interrupted (as the contract says) and opens the next: the GUID's history
  shows one attempt cut off, which counts against its attempt budget.
- `record_stage`, `record_rejected`, `record_alert`: a retry after a commit journals the same
  thing twice (a stage reached, a rejected hub, an alert); nothing is lost.
- `release_guid` and every read are safe to repeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Final, ParamSpec, TypeVar

from jigd.events import AlertKind, BatchStatus, GuidResult
from jigd.manifest import ManifestRow
from jigd.model import DeviceModel, FirmwareVersion, Guid, Stage
from jigd.store import (
    INTERRUPTED_CODE,
    AttemptRecord,
    BackupInfo,
    BatchInfo,
    BatchRef,
    GuidState,
    HubTimes,
    InterruptedGuid,
    JournalEvent,
    OutboxMessage,
    OutcomeAlreadyRecordedError,
    PurgeCounts,
    RejectedHub,
    SelftestCheck,
    SelftestRun,
    SetAsideHub,
    SlotService,
    StationInfo,
    Store,
    StoreClosedError,
    StoreError,
    StoreUnavailableError,
    UnknownAttemptError,
)

__all__ = ["PROBE_S", "GuardedStore", "StoreWatch"]

_LOGGER = logging.getLogger(__name__)

_P = ParamSpec("_P")
_T = TypeVar("_T")

PROBE_S: Final = 3.0  # while the store is down, it is read this often to see it back


class StoreWatch:
    """Whether the station's store can be reached; `on_change(up)` hears each change."""

    def __init__(
        self,
        where: str,
        on_change: Callable[[bool], None] = lambda up: None,
        *,
        probe_s: float = PROBE_S,
    ) -> None:
        self.where = where  # the store's URL, any password masked
        self._on_change = on_change
        self._probe_s = probe_s
        self._down_since: float | None = None
        self._closed = False
        self._draining = False
        self._news = asyncio.Event()  # set while up, and once closed: retries go on
        self._news.set()
        self._start = asyncio.Event()  # also set once draining: slots stop waiting to start
        self._start.set()
        self._down = asyncio.Event()  # set while down: the probe runs
        self.outages = 0  # since the station started
        self.retries = 0  # store calls made again because the store was down

    @property
    def up(self) -> bool:
        return self._down_since is None

    @property
    def closed(self) -> bool:
        return self._closed

    def down_for(self) -> float:
        """Seconds the store has been down (0 while it is up)."""
        return 0.0 if self._down_since is None else time.monotonic() - self._down_since

    def mark_down(self, exc: StoreUnavailableError) -> None:
        if self._down_since is not None:
            return
        self._down_since = time.monotonic()
        self.outages += 1
        self._news.clear()
        if not self._draining:
            self._start.clear()
        self._down.set()
        _LOGGER.warning(
            "store down: %s; slots finish the hub step they are in, keep their results in "
            "memory (LED amber) and start no new hub until it is back",
            exc,
        )
        self._on_change(False)

    def mark_up(self) -> None:
        if self._down_since is None:
            return
        took = time.monotonic() - self._down_since
        self._down_since = None
        self._down.clear()
        self._news.set()
        self._start.set()
        _LOGGER.warning(
            "store %s: back after %.1f s down; the results held meanwhile are committed and the "
            "slots resume",
            self.where,
            took,
        )
        self._on_change(True)

    def drain(self) -> None:
        """The station drains: slots waiting to start a hub stop waiting (they start none);
        writes waiting for the store go on waiting, until `close()`."""
        self._draining = True
        self._start.set()

    def close(self) -> None:
        """The station stops: calls that find the store down raise instead of waiting."""
        self._closed = True
        self.drain()
        self._news.set()
        self._down.set()

    async def waited(self) -> bool:
        """For a slot about to start a hub: False at once if the store is up; else wait until
        it is back, or the station drains, and return True (the slot then looks again at its
        hub, its rig and whether it is stopping)."""
        if self.up:
            return False
        while not self.up and not self._draining:
            await self._start.wait()
        return True

    async def back_or_closed(self) -> None:
        """Wait until the store is up again, or the watch is closed."""
        await self._news.wait()

    async def pause(self, seconds: float) -> None:
        """Sleep `seconds`, less if the store comes back or the watch is closed meanwhile."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._news.wait()

    async def probe(self, store: Store) -> None:
        """While the store is down, read the schema version of `store` (the real one) every few
        seconds; once it answers, the store is up. Returns once the watch is closed."""
        while not self._closed:
            await self._down.wait()
            await self.pause(self._probe_s)
            if self.up or self._closed:
                continue
            try:
                await store.schema_version()
            except StoreUnavailableError:
                continue
            except StoreError as exc:  # it answered, with an error: reachable all the same
                _LOGGER.warning("store %s: the probe's read failed: %s", self.where, exc)
            self.mark_up()

    def unavailable(self) -> StoreUnavailableError:
        """The error of a call not made because the store is down."""
        return StoreUnavailableError(
            f"{self.where}: the database is unreachable (down for {self.down_for():.0f} s; "
            f"jigd looks again every {self._probe_s:g} s)"
        )


class GuardedStore(Store):
    """`store`, each call watched by `watch`; with `retry`, a call that found the store down is
    made again until it succeeds (see the module's docstring)."""

    def __init__(self, store: Store, watch: StoreWatch, *, retry: bool) -> None:
        self._store = store
        self._watch = watch
        self._retry = retry

    @property
    def inner(self) -> Store:
        return self._store

    async def _call(
        self, operation: Callable[_P, Awaitable[_T]], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> _T:
        return await self._tries(lambda: operation(*args, **kwargs))

    async def _tries(self, call: Callable[[], Awaitable[_T]]) -> _T:
        """The value of `call()`. While the store is down, a call that only watches fails at
        once; one that retries waits until the store is back (the probe, or another call, saw
        it answer) and is made again then, so a retried write's times are after the outage."""
        while True:
            if not self._watch.up:
                if not self._retry or self._watch.closed:
                    raise self._watch.unavailable()
                self._watch.retries += 1
                await self._watch.back_or_closed()
                continue
            try:
                value = await call()
            except StoreUnavailableError as exc:
                self._watch.mark_down(exc)
                if not self._retry or self._watch.closed:
                    raise
                continue
            except StoreClosedError:
                raise
            except StoreError:
                self._watch.mark_up()  # the database answered: what was asked failed
                raise
            self._watch.mark_up()
            return value

    async def _write(
        self, call: Callable[[], Awaitable[_T]], committed: Callable[[StoreError], Awaitable[bool]]
    ) -> _T | None:
        """A write; if a retry of it fails in a way the first try's commit explains, and
        `committed` confirms that commit, it succeeded (None)."""
        failures = 0

        async def once() -> _T:
            nonlocal failures
            failures += 1
            return await call()

        try:
            value = await self._tries(once)
        except StoreError as exc:
            retried = failures > 1 and not isinstance(exc, StoreUnavailableError)
            if retried and await committed(exc):
                _LOGGER.info("a write retried after the store was down had committed: %s", exc)
                return None
            raise
        return value

    # --- lifecycle ----------------------------------------------------------------------------

    @property
    def station(self) -> str:
        return self._store.station

    @property
    def outbox_changed(self) -> asyncio.Event:
        return self._store.outbox_changed

    async def heartbeat(self, slots: str, *, host: str, pid: int, started_at: datetime) -> None:
        await self._call(
            lambda: self._store.heartbeat(slots, host=host, pid=pid, started_at=started_at)
        )

    async def stations(self) -> list[StationInfo]:
        return await self._call(self._store.stations)

    async def release_station(self, station: str, *, quiet_for: timedelta) -> list[InterruptedGuid]:
        return await self._call(lambda: self._store.release_station(station, quiet_for=quiet_for))

    async def close(self) -> None:
        """The real store is closed by its owner (the station), not through this view."""

    async def schema_version(self) -> int:
        return await self._call(self._store.schema_version)

    async def recover_interrupted(self) -> list[InterruptedGuid]:
        return await self._call(self._store.recover_interrupted)

    # --- batches ------------------------------------------------------------------------------

    async def import_batch(
        self, rows: Sequence[ManifestRow], booking: str, party: str, source: str
    ) -> str:
        return await self._call(self._store.import_batch, rows, booking, party, source)

    async def list_batches(self, status: BatchStatus | None = None) -> list[BatchInfo]:
        return await self._call(self._store.list_batches, status)

    async def get_batch(self, batch_id: str) -> BatchInfo:
        return await self._call(self._store.get_batch, batch_id)

    async def close_batch(self, batch_id: str) -> BatchInfo:
        return await self._call(self._store.close_batch, batch_id)

    async def find_open_batch(self, guid: Guid) -> BatchRef | None:
        return await self._call(self._store.find_open_batch, guid)

    async def set_aside(self, batch_id: str) -> list[SetAsideHub]:
        return await self._call(self._store.set_aside, batch_id)

    async def guid_state(self, batch_id: str, guid: Guid) -> GuidState:
        return await self._call(self._store.guid_state, batch_id, guid)

    async def batch_results(self, batch_id: str) -> list[GuidState]:
        return await self._call(self._store.batch_results, batch_id)

    async def interrupted_in_slot(self, rig: int, slot: int) -> GuidState | None:
        return await self._call(self._store.interrupted_in_slot, rig, slot)

    # --- attempts and results -----------------------------------------------------------------

    async def begin_attempt(
        self,
        batch_id: str,
        guid: Guid,
        rig: int,
        slot: int,
        *,
        model: DeviceModel | None = None,
        from_version: FirmwareVersion | None = None,
    ) -> int:
        return await self._call(
            self._store.begin_attempt,
            batch_id,
            guid,
            rig,
            slot,
            model=model,
            from_version=from_version,
        )

    async def record_stage(
        self, batch_id: str, guid: Guid, attempt: int, stage: Stage, detail: str | None = None
    ) -> None:
        await self._call(self._store.record_stage, batch_id, guid, attempt, stage, detail)

    async def end_attempt(
        self,
        batch_id: str,
        guid: Guid,
        attempt: int,
        *,
        stage: Stage,
        error_code: str,
        error_detail: str | None = None,
        locked: bool | None = None,
    ) -> None:
        await self._write(
            lambda: self._store.end_attempt(
                batch_id,
                guid,
                attempt,
                stage=stage,
                error_code=error_code,
                error_detail=error_detail,
                locked=locked,
            ),
            lambda exc: self._closed_with(exc, batch_id, guid, attempt, error_code),
        )

    async def interrupt_attempt(
        self, batch_id: str, guid: Guid, attempt: int, *, stage: Stage, reason: str
    ) -> None:
        await self._write(
            lambda: self._store.interrupt_attempt(
                batch_id, guid, attempt, stage=stage, reason=reason
            ),
            lambda exc: self._closed_with(exc, batch_id, guid, attempt, INTERRUPTED_CODE),
        )

    async def _closed_with(
        self, exc: StoreError, batch_id: str, guid: Guid, attempt: int, code: str
    ) -> bool:
        """Whether `exc` is explained by `attempt` being closed already with `code`."""
        if not isinstance(exc, UnknownAttemptError):
            return False
        history = await self.attempts(batch_id, guid)
        return any(
            a.attempt == attempt and a.finished is not None and a.error_code == code
            for a in history
        )

    async def release_guid(
        self, batch_id: str, guid: Guid, rig: int, slot: int, *, stage: Stage, reason: str
    ) -> int | None:
        return await self._call(
            self._store.release_guid, batch_id, guid, rig, slot, stage=stage, reason=reason
        )

    async def attempts(self, batch_id: str, guid: Guid) -> list[AttemptRecord]:
        return await self._call(self._store.attempts, batch_id, guid)

    async def record_result(self, result: GuidResult) -> None:
        await self._write(
            lambda: self._store.record_result(result), lambda exc: self._recorded(exc, result)
        )

    async def _recorded(self, exc: StoreError, result: GuidResult) -> bool:
        """Whether `exc` is explained by `result` being recorded already (by the first try)."""
        if not isinstance(exc, OutcomeAlreadyRecordedError):
            return False
        state = await self.guid_state(result.batch_id, result.guid)
        stored = (state.outcome, state.attempts, state.rig, state.slot, state.finished)
        return stored == (result.outcome, result.attempts, result.rig, result.slot, result.finished)

    async def hub_times(self) -> list[HubTimes]:
        return await self._call(self._store.hub_times)

    # --- rejected hubs, alerts and the journal ------------------------------------------------

    async def record_rejected(
        self, guid: Guid, rig: int, slot: int, reason: str, *, detail: str | None = None
    ) -> int:
        return await self._call(
            lambda: self._store.record_rejected(guid, rig, slot, reason, detail=detail)
        )

    async def record_alert(
        self,
        kind: AlertKind,
        *,
        detail: str,
        rig: int | None = None,
        slot: int | None = None,
        guid: Guid | None = None,
        model: DeviceModel | None = None,
        reason: str | None = None,
    ) -> str:
        return await self._call(
            self._store.record_alert,
            kind,
            detail=detail,
            rig=rig,
            slot=slot,
            guid=guid,
            model=model,
            reason=reason,
        )

    async def list_rejected(self) -> list[RejectedHub]:
        return await self._call(self._store.list_rejected)

    async def journal(
        self, *, batch_id: str | None = None, guid: Guid | None = None
    ) -> list[JournalEvent]:
        return await self._call(self._store.journal, batch_id=batch_id, guid=guid)

    # --- slot service and rig self-tests -------------------------------------------------------

    async def set_slot_service(
        self, rig: int, slot: int, *, disabled: bool, reason: str, by: str
    ) -> SlotService:
        return await self._call(
            self._store.set_slot_service, rig, slot, disabled=disabled, reason=reason, by=by
        )

    async def slot_services(self) -> list[SlotService]:
        return await self._call(self._store.slot_services)

    async def record_selftest(self, rig: int, checks: Sequence[SelftestCheck]) -> SelftestRun:
        return await self._call(self._store.record_selftest, rig, checks)

    async def last_selftests(self) -> list[SelftestRun]:
        return await self._call(self._store.last_selftests)

    # --- outbox -------------------------------------------------------------------------------

    async def outbox_pending(self, limit: int = 100) -> list[OutboxMessage]:
        return await self._call(self._store.outbox_pending, limit)

    async def mark_published(self, ids: Iterable[int]) -> int:
        return await self._call(self._store.mark_published, list(ids))

    async def outbox_depth(self) -> int:
        return await self._call(self._store.outbox_depth)

    # --- retention, backup and checks ---------------------------------------------------------

    async def purge(
        self, *, outbox_age: timedelta, journal_age: timedelta, dry_run: bool = False
    ) -> PurgeCounts:
        return await self._call(
            self._store.purge, outbox_age=outbox_age, journal_age=journal_age, dry_run=dry_run
        )

    async def backup(self, target: Path) -> BackupInfo:
        return await self._call(self._store.backup, target)

    async def check_books(self) -> list[str]:
        return await self._call(self._store.check_books)
