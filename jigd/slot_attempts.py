"""A slot's attempts on the GUID of its hub, as the store keeps them, and its results.

Three rules, whatever cuts the slot's work short:

- `begin` is never abandoned half-way. The store's job completes even when its caller is
  cancelled (a rig lost 1 ms after the attempt was sent), so a cancellation goes on only once
  that job is done, and the attempt it opened is known.
- `holding` lets go of the GUID when the work on it ends without a result, at any point (during
  `begin`, between attempts, while recording; cancelled, interrupted or failed): the attempt
  left open is closed as interrupted and the GUID is no longer in progress
  (`Store.release_guid`), so another slot may take the hub and the batch may close.
- `budget` bounds the attempts at one GUID across restarts, rig outages and slots
  (`[retries] stage_attempts + resume_attempts`); once spent, the hub fails with the cause of
  its attempts instead of starting another.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from drivers.hub_link import HubIdentity
from jigd.config import RetryConfig
from jigd.events import GuidResult
from jigd.flash import FlashError, FlashSuccess, outcome_of
from jigd.model import DeviceModel, FirmwareVersion, Guid, Outcome, Stage
from jigd.store import (
    INTERRUPTED_CODE,
    AttemptRecord,
    BatchRef,
    GuidBusyElsewhereError,
    GuidBusyError,
    GuidState,
    GuidStatus,
    Store,
    StoreError,
)

__all__ = [
    "LEFT_UNLOCKED",
    "NO_ANSWER",
    "STOPPING_REASON",
    "AttemptBudget",
    "SlotAttempts",
    "WorkInterruptedError",
    "furthest",
    "held_elsewhere",
    "spent_cause",
]

_LOGGER = logging.getLogger(__name__)

STOPPING_REASON: Final = "jigd stopping"
NO_ANSWER: Final = "no_answer"  # failure code: a hub interrupted mid-flash never answered again
# How a failed hub that could not be locked again is flagged (slot detail, failure detail).
LEFT_UNLOCKED: Final = "hub left unlocked (it could not be locked again after the failure)"
_STAGE_ORDER: Final = {stage: index for index, stage in enumerate(Stage)}


class WorkInterruptedError(Exception):
    """The slot's work on its hub was cut short, not by the hub's fault; the message says why."""


def furthest(stage: Stage, than: Stage | None) -> bool:
    """Whether a failure at `stage` names the hub's fault at least as well as one at `than`:
    the Fault Analysis names the furthest stage any attempt reached (a hub that never boots
    again fails at await_boot, whatever its later attempts hit first)."""
    return than is None or _STAGE_ORDER[stage] >= _STAGE_ORDER[than]


@dataclass(frozen=True, slots=True)
class AttemptBudget:
    """How many attempts a GUID has had (`made`, across restarts and slots) of `total`."""

    made: int
    total: int

    @property
    def left(self) -> int:
        return max(0, self.total - self.made)


def spent_cause(history: Sequence[AttemptRecord], budget: AttemptBudget) -> tuple[Stage, str, str]:
    """The failure (stage, code, detail) of a GUID whose attempt budget is spent: the cause its
    failed attempts name (the furthest stage, the latest of equals, as within one run), or
    the last interruption if none failed."""
    cause: AttemptRecord | None = None
    for record in history:
        if record.error_code not in (None, INTERRUPTED_CODE) and furthest(
            record.stage_reached or Stage.IDENTIFY,
            None if cause is None else cause.stage_reached or Stage.IDENTIFY,
        ):
            cause = record
    if cause is None:
        cause = history[-1]
    detail = (
        f"no attempt left ({budget.made} made of the {budget.total} a hub may have across "
        "restarts, [retries] stage_attempts + resume_attempts); the attempts failed with: "
        f"{cause.error_detail or cause.error_code}"
    )
    return cause.stage_reached or Stage.IDENTIFY, cause.error_code or INTERRUPTED_CODE, detail


def held_elsewhere(ref: BatchRef, station: str) -> GuidBusyElsewhereError | None:
    """Why a slot of `station` must not touch the hub of `ref`: another station of the site
    holds its GUID (has an attempt open on it, docs/architecture.md, "Site"); else None."""
    holder = ref.station
    if ref.status is GuidStatus.IN_PROGRESS and holder and holder != station:
        return GuidBusyElsewhereError(ref.batch_id, ref.guid, holder)
    return None


class SlotAttempts:
    """The store's side of one slot's work on its hubs' GUIDs."""

    def __init__(self, store: Store, rig: int, slot: int, label: str) -> None:
        self._store = store
        self._rig = rig
        self._slot = slot
        self._label = label

    async def no_answer(self, state: GuidState, attempt: int, detail: str) -> FlashError:
        """Close `attempt` as failed at identify with code `no_answer` (a hub interrupted
        mid-flash that never answered again, `detail` says what was seen); that failure."""
        await self._store.end_attempt(
            state.batch_id,
            state.guid,
            attempt,
            stage=Stage.IDENTIFY,
            error_code=NO_ANSWER,
            error_detail=detail,
        )
        return FlashError(Stage.IDENTIFY, NO_ANSWER, detail, retryable=False)

    async def budget(self, batch_id: str, guid: Guid, retries: RetryConfig) -> AttemptBudget:
        made = (await self._store.guid_state(batch_id, guid)).attempts
        return AttemptBudget(made, retries.stage_attempts + retries.resume_attempts)

    async def spent(self, batch_id: str, guid: Guid, budget: AttemptBudget) -> FlashError:
        """The failure of a GUID whose budget is spent (see `spent_cause`); GuidBusyError, as
        `begin` would, if another slot is flashing it."""
        history = await self._store.attempts(batch_id, guid)
        for record in history:
            if record.finished is None and (record.rig, record.slot) != (self._rig, self._slot):
                raise GuidBusyError(batch_id, guid, record.rig, record.slot)
        return FlashError(*spent_cause(history, budget), retryable=False)

    async def failure(
        self,
        batch_id: str,
        guid: Guid,
        failure: FlashError,
        *,
        attempts: int,
        identified: tuple[DeviceModel | None, FirmwareVersion | None],
        link_errors: Sequence[str] = (),
        locked: bool | None = None,
    ) -> GuidResult:
        """The result of a GUID failed with `failure` after `attempts` attempts; `identified` is
        the Device Model and firmware the hub identified with now (None: not identified);
        `locked` whether the hub is left locked (None: not known). A hub left unlocked says so
        first in its failure detail, so it shows wherever the failure does (the result on
        MQTT, the Fault Analysis)."""
        state = await self._store.guid_state(batch_id, guid)
        model, firmware = identified
        now = datetime.now(UTC)
        return GuidResult(
            batch_id=batch_id,
            guid=guid,
            outcome=Outcome.FAILED,
            rig=self._rig,
            slot=self._slot,
            attempts=attempts,
            started=state.started or now,
            finished=now,
            model=model or state.model,
            from_version=state.from_version or firmware,
            failure_stage=failure.stage,
            failure_code=failure.code,
            failure_detail=(
                f"{LEFT_UNLOCKED}: {failure.detail}" if locked is False else failure.detail
            ),
            last_link_errors=tuple(link_errors[-5:]),
            locked=locked,
        )

    async def success(
        self, identity: HubIdentity, batch_id: str, attempt: int, success: FlashSuccess
    ) -> GuidResult:
        """The success result; `from_version` is what the hub arrived with in this batch."""
        state = await self._store.guid_state(batch_id, identity.guid)
        arrived = state.from_version or identity.firmware_version
        now = datetime.now(UTC)
        return GuidResult(
            batch_id=batch_id,
            guid=identity.guid,
            outcome=outcome_of(arrived, success),
            rig=self._rig,
            slot=self._slot,
            attempts=attempt,
            started=state.started or now,
            finished=now,
            model=identity.model,
            from_version=arrived,
            to_version=success.entry.firmware_version,
            image_sha256=success.entry.sha256,
        )

    async def begin(self, batch_id: str, guid: Guid, identity: HubIdentity | None = None) -> int:
        """`Store.begin_attempt` in this slot, for the hub as it identified (`identity`); a
        cancellation meanwhile waits for the store's job."""
        job = asyncio.ensure_future(
            self._store.begin_attempt(
                batch_id,
                guid,
                self._rig,
                self._slot,
                model=None if identity is None else identity.model,
                from_version=None if identity is None else identity.firmware_version,
            )
        )
        try:
            return await asyncio.shield(job)
        except asyncio.CancelledError:
            await asyncio.wait([job])
            if not job.cancelled():
                job.exception()  # retrieved: the cancellation is what goes on
            raise

    @asynccontextmanager
    async def holding(
        self, batch_id: str, guid: Guid, stage: Callable[[], Stage | None]
    ) -> AsyncIterator[None]:
        """The slot's work on the GUID, from its first `begin` to its result; if it ends
        without one, the GUID is let go of at the stage `stage()` then says."""
        try:
            yield
        except BaseException as exc:
            await self._release(batch_id, guid, stage() or Stage.IDENTIFY, exc)
            raise

    async def _release(self, batch_id: str, guid: Guid, stage: Stage, cause: BaseException) -> None:
        if isinstance(cause, asyncio.CancelledError):
            reason = str(cause.args[0]) if cause.args else STOPPING_REASON
        elif isinstance(cause, WorkInterruptedError):
            reason = str(cause)
        else:
            reason = f"the slot's work on the hub ended in error: {cause}"
        release = self._store.release_guid(
            batch_id, guid, self._rig, self._slot, stage=stage, reason=reason
        )
        try:
            # Shielded: a second cancellation (jigd stopping) must not cut the release short.
            await asyncio.shield(release)
        except StoreError as exc:
            _LOGGER.error("%s: %s was not let go of in the store: %s", self._label, guid, exc)  # noqa: TRY400
