"""The station's durable store: batches, per-GUID state and attempts, journal, event outbox.

The contract is `Store` (jigd.store.contract): the one description of each operation. Backends
implement it and are opened by URL through `open_store` (jigd.store.registry): `sqlite:`
(jigd.store.sqlite.SqliteStore, a station's own file) and `postgresql:` (jigd.store.postgres.
PostgresStore, a site database stations can share). Both give the same values, errors, journal
and payloads for the same operations; what they share without a database is in
jigd.store.records, their migration loading in jigd.store.migrations. The values a store
returns are in jigd.store.values, its errors in jigd.store.errors; the events it journals and
queues are jigd.events. The store knows nothing of how its events are delivered
(docs/architecture.md, "Store").
"""

from __future__ import annotations

from jigd.store.contract import Store
from jigd.store.errors import (
    BackupError,
    BatchBusyError,
    BatchClosedError,
    GuidBusyElsewhereError,
    GuidBusyError,
    GuidInOpenBatchError,
    InvalidRecordError,
    OutcomeAlreadyRecordedError,
    SchemaVersionError,
    StationActiveError,
    StoreClosedError,
    StoreError,
    StoreUnavailableError,
    StoreUrlError,
    UnknownAttemptError,
    UnknownBatchError,
    UnknownGuidError,
)
from jigd.store.registry import BACKENDS, open_store, resolve_store_url, shown_url
from jigd.store.values import (
    INTERRUPTED_CODE,
    AttemptRecord,
    BackupInfo,
    BatchInfo,
    BatchRef,
    GuidState,
    GuidStatus,
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
    summary_event,
)

__all__ = [
    "BACKENDS",
    "INTERRUPTED_CODE",
    "AttemptRecord",
    "BackupError",
    "BackupInfo",
    "BatchBusyError",
    "BatchClosedError",
    "BatchInfo",
    "BatchRef",
    "GuidBusyElsewhereError",
    "GuidBusyError",
    "GuidInOpenBatchError",
    "GuidState",
    "GuidStatus",
    "HubTimes",
    "InterruptedGuid",
    "InvalidRecordError",
    "JournalEvent",
    "OutboxMessage",
    "OutcomeAlreadyRecordedError",
    "PurgeCounts",
    "RejectedHub",
    "SchemaVersionError",
    "SelftestCheck",
    "SelftestRun",
    "SetAsideHub",
    "SlotService",
    "StationActiveError",
    "StationInfo",
    "Store",
    "StoreClosedError",
    "StoreError",
    "StoreUnavailableError",
    "StoreUrlError",
    "UnknownAttemptError",
    "UnknownBatchError",
    "UnknownGuidError",
    "open_store",
    "resolve_store_url",
    "shown_url",
    "summary_event",
]
