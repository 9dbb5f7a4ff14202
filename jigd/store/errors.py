"""The store's errors: every one is a StoreError, and each message names what and why."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from types import MappingProxyType

from jigd.manifest import ManifestError, ManifestProblem
from jigd.model import Guid, Outcome

__all__ = [
    "BackupError",
    "BatchBusyError",
    "BatchClosedError",
    "GuidBusyElsewhereError",
    "GuidBusyError",
    "GuidInOpenBatchError",
    "InvalidRecordError",
    "OutcomeAlreadyRecordedError",
    "SchemaVersionError",
    "StationActiveError",
    "StoreClosedError",
    "StoreError",
    "StoreUnavailableError",
    "StoreUrlError",
    "UnknownAttemptError",
    "UnknownBatchError",
    "UnknownGuidError",
]


class StoreError(Exception):
    """Base of every store error: the database failed, or a request breaks the books."""


class StoreUnavailableError(StoreError):
    """The store cannot be reached (connection refused or lost, no connection free in time,
    the server shutting down): nothing is wrong with what was asked, and the same call may be
    made again once the store is back (the daemon does, docs/architecture.md, "Store").

    A write whose connection was lost while it committed may or may not have committed: as
    for a cancelled call, re-reading tells.
    """


class BackupError(StoreError):
    """A backup could not be written where asked (the file exists, or cannot be made)."""


class StoreClosedError(StoreError):
    """The store was used after close()."""


class SchemaVersionError(StoreError):
    """The database was written by a newer jigd than this one."""

    def __init__(self, path: str, found: int, known: int) -> None:
        self.found = found
        self.known = known
        super().__init__(
            f"{path}: database schema version {found} is newer than this jigd knows ({known}); "
            "run the jigd version that wrote it, or a newer one"
        )


class UnknownBatchError(StoreError, LookupError):
    """No batch has this id."""

    def __init__(self, batch_id: str) -> None:
        self.batch_id = batch_id
        super().__init__(f"batch {batch_id!r} does not exist; `jigctl batch list` shows the ids")


class BatchClosedError(StoreError):
    """The batch is closed: nothing more can be recorded in it and it cannot close again."""

    def __init__(self, batch_id: str, closed_at: datetime) -> None:
        self.batch_id = batch_id
        self.closed_at = closed_at
        super().__init__(f"batch {batch_id} was closed at {closed_at.isoformat()}")


class BatchBusyError(StoreError):
    """The batch cannot close while hubs of it are being flashed."""

    def __init__(self, batch_id: str, busy: Sequence[tuple[Guid, int | None, int | None]]) -> None:
        self.batch_id = batch_id
        self.busy = tuple(busy)
        where = ", ".join(f"{guid} (rig {rig} slot {slot})" for guid, rig, slot in self.busy)
        super().__init__(
            f"batch {batch_id} has {len(self.busy)} hub(s) being flashed: {where}; "
            "wait until their slots are done, then close it"
        )


class UnknownGuidError(StoreError, LookupError):
    """The GUID is not listed in the batch."""

    def __init__(self, batch_id: str, guid: Guid) -> None:
        self.batch_id = batch_id
        self.guid = guid
        super().__init__(f"GUID {guid} is not listed in batch {batch_id}")


class OutcomeAlreadyRecordedError(StoreError):
    """The GUID already has its one final outcome in this batch; nothing was changed."""

    def __init__(self, batch_id: str, guid: Guid, outcome: Outcome) -> None:
        self.batch_id = batch_id
        self.guid = guid
        self.outcome = outcome
        super().__init__(
            f"GUID {guid} of batch {batch_id} already has its outcome {outcome}; "
            "a GUID has exactly one outcome, so nothing was changed"
        )


class GuidBusyError(StoreError):
    """An attempt on the GUID is already in progress (the same GUID in two slots)."""

    def __init__(self, batch_id: str, guid: Guid, rig: int | None, slot: int | None) -> None:
        self.batch_id = batch_id
        self.guid = guid
        self.rig = rig
        self.slot = slot
        super().__init__(
            f"GUID {guid} of batch {batch_id} is already being flashed in rig {rig} slot {slot}; "
            "two hubs report the same GUID, set this one aside"
        )


class GuidBusyElsewhereError(StoreError):
    """Another station of the site holds the GUID: it has an attempt open on it
    (`busy_elsewhere`, docs/architecture.md, "Site")."""

    CODE = "busy_elsewhere"

    def __init__(self, batch_id: str, guid: Guid, station: str) -> None:
        self.batch_id = batch_id
        self.guid = guid
        self.station = station
        super().__init__(
            f"GUID {guid} of batch {batch_id} is being flashed by station {station}; leave this "
            f"hub alone until {station} has finished it, or until {station} restarts or is "
            "released (`jigctl station release`)"
        )


class StationActiveError(StoreError):
    """`release_station` refused: the station is this one, or it was heard from too recently
    to be taken for gone."""


class UnknownAttemptError(StoreError, LookupError):
    """No such attempt of the GUID (begin_attempt returns the attempt numbers)."""

    def __init__(self, batch_id: str, guid: Guid, attempt: int) -> None:
        self.batch_id = batch_id
        self.guid = guid
        self.attempt = attempt
        super().__init__(f"GUID {guid} of batch {batch_id} has no attempt {attempt}")


class InvalidRecordError(StoreError, ValueError):
    """A value given to the store that cannot be recorded; the message names what and why."""


class GuidInOpenBatchError(ManifestError, StoreError):
    """Importing a manifest that lists GUIDs already in another open batch; nothing was stored.

    `conflicts` maps each such GUID to the open batch that lists it.
    """

    def __init__(
        self, source: str, problems: Sequence[ManifestProblem], conflicts: Mapping[Guid, str]
    ) -> None:
        self.conflicts = MappingProxyType(dict(conflicts))
        super().__init__(source, problems)


class StoreUrlError(StoreError, ValueError):
    """A store URL no backend can open; the message names the URL and the schemes known."""
