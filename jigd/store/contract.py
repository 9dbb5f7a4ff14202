"""The store contract: what the station, control API, MQTT publisher and reports need from a
store (docs/architecture.md, "Store"). The one place each operation is described; a backend
(jigd.store.sqlite, jigd.store.postgres) implements every abstract method and is tested by
tests/jigd/store/test_contract.py.

Every write is atomic: a result, its journal entry and its outbox events commit together or not
at all, and a write is durable when its call returns. A call whose caller is cancelled may still
complete; re-reading tells. Errors are StoreError subclasses (jigd.store.errors).
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Self

from jigd.events import AlertKind, BatchStatus, GuidResult
from jigd.manifest import ManifestRow
from jigd.model import DeviceModel, FirmwareVersion, Guid, Stage
from jigd.store.values import (
    AttemptRecord,
    BackupInfo,
    BatchInfo,
    BatchRef,
    GuidState,
    HubTimes,
    InterruptedGuid,
    JournalEvent,
    OutboxMessage,
    PurgeCounts,
    RejectedHub,
    SelftestCheck,
    SelftestRun,
    SetAsideHub,
    SlotService,
    StationInfo,
)

__all__ = ["Clock", "Store", "utc_now"]

# What a backend reads the time from (tests give a clock of their own).
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class Store(abc.ABC):
    """A station's durable books: batches, per-GUID state and attempts, journal, outbox.

    Use as `async with await open_store(url, station=...) as store:`, or call `close()`.

    One store may be shared by the stations of a site (docs/architecture.md, "Site"): batches,
    GUID states, results and the journal are site-wide; what a store is opened for is one
    `station`, whose name every row it writes records. A GUID is held by the station that has
    an attempt open on it; slots, rejections, self-tests and the events to publish are the
    station's own.
    """

    @property
    @abc.abstractmethod
    def station(self) -> str:
        """The station this store writes for ('' for a tool that only reads or maintains it)."""

    # --- lifecycle ----------------------------------------------------------------------------

    @property
    @abc.abstractmethod
    def outbox_changed(self) -> asyncio.Event:
        """Set whenever a commit adds to the outbox; the publisher clears it before reading."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release the store (connections, threads); idempotent. Later calls raise
        StoreClosedError."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @abc.abstractmethod
    async def schema_version(self) -> int:
        """The version of the schema the store is at (the newest this jigd knows, once open)."""

    @abc.abstractmethod
    async def recover_interrupted(self) -> list[InterruptedGuid]:
        """Mark every GUID this station left in progress in a previous run interrupted (and any
        left by a jigd older than schema 6); returns them.

        Each open attempt is closed with error code `interrupted` and journalled; the GUID
        resumes, as its next attempt, when its hub is seen again, on any station. GUIDs other
        stations hold are not touched.
        """

    # --- the site -----------------------------------------------------------------------------

    @abc.abstractmethod
    async def heartbeat(self, slots: str, *, host: str, pid: int, started_at: datetime) -> None:
        """Record that this station's daemon (`host`, `pid`, started at `started_at`) is alive
        now, with its slots as JSON text (shown by `jigctl status` on any station)."""

    @abc.abstractmethod
    async def stations(self) -> list[StationInfo]:
        """Every station that has sent a heartbeat, by name."""

    @abc.abstractmethod
    async def release_station(self, station: str, *, quiet_for: timedelta) -> list[InterruptedGuid]:
        """Let go of what a station that is gone for good holds: as its own restart would,
        each GUID it left in progress becomes interrupted (its open attempt closed as
        `interrupted`, journalled) and may be flashed by any station; its events not yet
        published are handed to this station's publisher (their topics keep its name).

        StationActiveError if `station` is this one, or was heard from (a heartbeat, or its
        last attempt) less than `quiet_for` ago, or this store has no station.
        """

    # --- batches ------------------------------------------------------------------------------

    @abc.abstractmethod
    async def import_batch(
        self, rows: Sequence[ManifestRow], booking: str, party: str, source: str
    ) -> str:
        """Store a validated manifest as a new open batch, atomically; returns its id.

        Ids are `B000001`, `B000002`, ... in import order (safe in paths and topic levels).
        Queues the batch's first summary event, and a `hub_set_aside` alert for each of its
        GUIDs rejected as `not_in_batch` before the import (see `set_aside`). Refused with
        ManifestError (nothing stored) if booking or party is empty, the rows are empty or
        repeat a GUID, or (GuidInOpenBatchError) a GUID is in another open batch.
        """

    @abc.abstractmethod
    async def list_batches(self, status: BatchStatus | None = None) -> list[BatchInfo]:
        """Every batch (or those with `status`), oldest first, with counts."""

    @abc.abstractmethod
    async def get_batch(self, batch_id: str) -> BatchInfo:
        """The batch with counts per outcome and pending; UnknownBatchError if there is none."""

    @abc.abstractmethod
    async def close_batch(self, batch_id: str) -> BatchInfo:
        """Close the batch: never-seen GUIDs become not_received, the final summary is queued.

        The final summary carries the GUID lists per outcome. A GUID interrupted by a restart
        and not seen again becomes `failed` (code `interrupted`, at the stage it reached), with
        its result event. Refused while a hub of the batch is being flashed (BatchBusyError),
        for an unknown (UnknownBatchError) or closed batch (BatchClosedError).
        """

    @abc.abstractmethod
    async def find_open_batch(self, guid: Guid) -> BatchRef | None:
        """The open batch listing this GUID (the oldest, if several), or None (the hub is then
        rejected)."""

    @abc.abstractmethod
    async def set_aside(self, batch_id: str) -> list[SetAsideHub]:
        """The batch's GUIDs seen in a slot before the batch was imported (rejected then as
        `not_in_batch`, also by a slot that looked just before the import committed) that have
        had no attempt since, sorted by GUID, each with the rig, slot and time of its last such
        rejection: the hubs to re-insert. A GUID leaves the list when its hub is put back (its
        first attempt); in a closed batch the list is the set-aside GUIDs that ended
        `not_received`. UnknownBatchError if there is no such batch."""

    @abc.abstractmethod
    async def guid_state(self, batch_id: str, guid: Guid) -> GuidState:
        """Everything recorded about the GUID in the batch (UnknownBatchError,
        UnknownGuidError if not listed)."""

    @abc.abstractmethod
    async def batch_results(self, batch_id: str) -> list[GuidState]:
        """Every GUID of the batch with its state, sorted by GUID."""

    @abc.abstractmethod
    async def interrupted_in_slot(self, rig: int, slot: int) -> GuidState | None:
        """The GUID of an open batch whose last attempt, in this station's rig and slot, was
        interrupted: the hub jigd was flashing there when it stopped or lost the rig (latest
        first)."""

    # --- attempts and results -----------------------------------------------------------------

    @abc.abstractmethod
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
        """Start an attempt on the GUID in rig/slot; returns its number (1, 2, ...).

        `model` and `from_version` are what the hub identified as; the first ones recorded for
        the GUID are kept, so after an interruption the batch still knows the firmware the hub
        arrived with. Refused for a GUID with an outcome (OutcomeAlreadyRecordedError), in a
        closed batch (BatchClosedError), with an attempt running in another slot of this
        station (GuidBusyError) or open on another station (GuidBusyElsewhereError); an attempt
        left open in the same slot is closed as interrupted.
        """

    @abc.abstractmethod
    async def record_stage(
        self, batch_id: str, guid: Guid, attempt: int, stage: Stage, detail: str | None = None
    ) -> None:
        """Journal that the attempt reached `stage` (and remember it as the stage reached);
        UnknownAttemptError if there is no such attempt."""

    @abc.abstractmethod
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
        """Close an attempt that failed at `stage` and will be retried (no outcome yet),
        journalling whether the hub was left locked (`locked`, None: not known);
        UnknownAttemptError if it is not running."""

    @abc.abstractmethod
    async def interrupt_attempt(
        self, batch_id: str, guid: Guid, attempt: int, *, stage: Stage, reason: str
    ) -> None:
        """Close a running attempt cut short by something other than the hub (its rig went away,
        it was pulled, jigd is stopping): the GUID becomes `interrupted` and resumes when seen."""

    @abc.abstractmethod
    async def release_guid(
        self, batch_id: str, guid: Guid, rig: int, slot: int, *, stage: Stage, reason: str
    ) -> int | None:
        """The slot `rig`/`slot` lets go of the GUID without an outcome: its work on the hub was
        cut short or failed, at whatever point (during begin_attempt, between attempts, while
        recording). The attempt left open in that slot, if any, is closed as interrupted at
        `stage`, and the GUID, if it is in progress in that slot, becomes `interrupted` (it
        resumes when its hub is seen again), journalled with `reason`; returns the attempt
        closed, or None. Nothing changes for a GUID with an outcome or one being flashed in
        another slot, so it is safe whatever was or was not begun.
        """

    @abc.abstractmethod
    async def attempts(self, batch_id: str, guid: Guid) -> list[AttemptRecord]:
        """Every attempt on the GUID in the batch, first first."""

    @abc.abstractmethod
    async def record_result(self, result: GuidResult) -> None:
        """Record the GUID's one final outcome; durable when this returns.

        In one transaction: the per-GUID state (with, for a failed hub, whether it was left
        locked), the attempt row closed, a journal event, the result event and an updated batch
        summary event in the outbox. A second result for the
        same GUID raises OutcomeAlreadyRecordedError and changes nothing.
        """

    @abc.abstractmethod
    async def hub_times(self) -> list[HubTimes]:
        """Every GUID of every batch with an outcome of its own (reflashed, already_current,
        failed) and a recorded Device Model, in the order they finished: when its first and
        last attempts started, when the last attempt's upload ended (None if it uploaded
        nothing) and when it finished. What the capacity plan measures (jigd.plan)."""

    # --- rejected hubs, alerts and the journal ------------------------------------------------

    @abc.abstractmethod
    async def record_rejected(
        self, guid: Guid, rig: int, slot: int, reason: str, *, detail: str | None = None
    ) -> int:
        """Record a hub this station refused (journal + alert event); returns its row id.

        `reason` is a code: `not_in_batch` (no open batch lists it) or `busy_elsewhere`
        (another station holds it); `detail`, if given, says more in the alert's message.

        InvalidRecordError for a rig/slot out of range or an empty reason.
        """

    @abc.abstractmethod
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
        """Journal an alert (`rig_offline`, `no_firmware`, `unidentified_hub`, `slot_suspect`,
        `catalog_entry_rejected`) and queue its alert event in one transaction, so it is as
        durable as a result; returns its event_id.

        A rejected hub is recorded with record_rejected, which also keeps it on the station's
        record of rejected hubs; `hub_set_aside` alerts come from import_batch.
        InvalidRecordError when the fields do not fit the kind.
        """

    @abc.abstractmethod
    async def list_rejected(self) -> list[RejectedHub]:
        """Every hub this station rejected, oldest first."""

    @abc.abstractmethod
    async def journal(
        self, *, batch_id: str | None = None, guid: Guid | None = None
    ) -> list[JournalEvent]:
        """Journal events in order, optionally only those of a batch and/or GUID."""

    # --- slot service and rig self-tests -------------------------------------------------------

    @abc.abstractmethod
    async def set_slot_service(
        self, rig: int, slot: int, *, disabled: bool, reason: str, by: str
    ) -> SlotService:
        """Take slot `rig`/`slot` out of service (`disabled`) or put it back, durably, with why
        and by whom; in the same transaction a `slot_disabled` or `slot_enabled` alert is
        journalled and queued. InvalidRecordError for a rig/slot out of range or an empty
        reason or `by`."""

    @abc.abstractmethod
    async def slot_services(self) -> list[SlotService]:
        """Every slot of this station ever taken out of service, as it is now (disabled or put
        back), by rig and slot."""

    @abc.abstractmethod
    async def record_selftest(self, rig: int, checks: Sequence[SelftestCheck]) -> SelftestRun:
        """Store a rig self-test's checks, stamped now; InvalidRecordError for no checks, a rig
        out of range or a slot out of range."""

    @abc.abstractmethod
    async def last_selftests(self) -> list[SelftestRun]:
        """The latest self-test of each of this station's rigs that has had one, by rig."""

    # --- outbox -------------------------------------------------------------------------------

    @abc.abstractmethod
    async def outbox_pending(self, limit: int = 100) -> list[OutboxMessage]:
        """Up to `limit` undelivered events this station publishes, oldest first
        (InvalidRecordError if limit < 1).

        Each GUID's events and each batch's come in the order their writes committed (a GUID's
        result before the summary that counts it, a batch's summaries as its counts grew).
        Events of different batches whose writes committed at once may come in either order,
        and on a backend whose writers commit in parallel (PostgreSQL) such an event may appear
        after later ones were read: a reader marks what it published (`mark_published`)
        rather than keeping its place."""

    @abc.abstractmethod
    async def mark_published(self, ids: Iterable[int]) -> int:
        """Mark events the broker acknowledged as delivered; returns how many were pending."""

    @abc.abstractmethod
    async def outbox_depth(self) -> int:
        """How many events wait for this station to deliver them."""

    # --- retention, backup and checks ---------------------------------------------------------

    @abc.abstractmethod
    async def purge(
        self, *, outbox_age: timedelta, journal_age: timedelta, dry_run: bool = False
    ) -> PurgeCounts:
        """Delete what retention lets go (docs/install.md, "Retention"): outbox rows published
        more than `outbox_age` ago, the journal of each batch closed more than `journal_age`
        ago, and journal events outside every batch (rejections, alerts) older than that.

        Never touches a batch's books (batches, GUID states, attempts, counts, rejected hubs):
        every report reads the same after. Done in short transactions so slots wait little; a
        purge that removed anything is itself journalled. `dry_run` only counts.
        """

    @abc.abstractmethod
    async def backup(self, target: Path) -> BackupInfo:
        """Write a consistent copy of the whole store to the new file `target` while the store
        is in use (a single self-contained file that opens as a store). BackupError if
        `target` exists or cannot be written; a backend that cannot copy itself (a database
        server) says what to use instead."""

    @abc.abstractmethod
    async def check_books(self) -> list[str]:
        """Problems with the books, one line each (none: they balance): per batch, the kept
        counts equal a recount of its GUID states, and expected equals pending plus the
        outcomes (no GUID pending once closed)."""
