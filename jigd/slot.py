"""One slot of a rig: the worker that takes each hub put in it through the flash procedure.

A `SlotWorker` waits until its rig is up and a hub is present, then handles that hub once:
identify, authorize against the open batches, then attempts of the flash procedure, power
cycling the slot before each retry, until the hub is `reflashed`, `already_current` or
`failed`. The result is committed to the store before the LED turns green or red. A hub that
stays in its slot afterwards is not handled again until it is taken out.

If the rig goes away, or the hub is pulled, while an attempt runs, the attempt is interrupted,
not failed: the GUID is resumed when the hub is seen again.

While the station's store cannot be reached, the worker starts no new hub, and the store calls
of the hub it has wait until the store is back (jigd.store_outage): a finished hub's result is
held in memory, its LED amber, until it is committed.

When jigd stops (`drain()`), the worker takes no new hub. A hub in the activation sequence (mark
test, reset, swap and boot, verify, confirm, lock) or in a slot power cycle is let finish; any
other attempt is interrupted at once, recorded resumable: its upload resumes from the hub's
offset when jigd runs again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from typing import Final, Protocol

from drivers.errors import DriverError, LinkError, NoJigGroup, RigError
from drivers.hub_link import (
    HubIdentity,
    HubLink,
    await_boot,
)
from drivers.registry import HubDriver
from firmware_catalog import Catalog
from jigd.boot import NO_BOOT, WHAT_TO_DO, BootLimits, Heard, boot_limits, dead_hub_detail
from jigd.config import HubModelConfig, RetryConfig, SlotConfig, TimeoutConfig
from jigd.events import GuidResult, InvalidResultError, LinkStats, SlotStatus, SlotWait
from jigd.flash import (
    FlashError,
    FlashProcedure,
    FlashSuccess,
    StageHooks,
    authorize,
    lock_again,
)
from jigd.model import DeviceModel, Guid, LedColour, Outcome, SlotState, Stage
from jigd.receiver import HubReceiverSettings, receiver_settings
from jigd.secrets import MasterKeys
from jigd.slot_attempts import (
    LEFT_UNLOCKED,
    STOPPING_REASON,
    AttemptBudget,
    SlotAttempts,
    WorkInterruptedError,
    furthest,
    held_elsewhere,
)
from jigd.store import BatchRef, GuidState, GuidStatus, Store, StoreError

__all__ = ["SlotDeps", "SlotWorker"]

_LOGGER = logging.getLogger(__name__)

POWER_OFF_S: Final = 0.5  # how long a slot stays unpowered in a power cycle
IDENTIFY_TRIES: Final = 2  # tries to identify a hub just put in: one power cycle between them
PROGRESS_STEP: Final = 0.5  # percent: smaller progress changes are not reported
# From the end of the upload to the lock, an attempt is let finish when jigd stops: cutting it
# would not harm the hub (swaps are power-fail safe, attempts resume), but finishing it records
# the hub's outcome now instead of after a restart, another swap check and a re-verify.
UNCUT_STAGES: Final = frozenset(
    {Stage.MARK_TEST, Stage.RESET, Stage.AWAIT_BOOT, Stage.VERIFY, Stage.CONFIRM, Stage.LOCK}
)
HUB_TAKEN_OUT: Final = "hub taken out"  # the interruption reason when a hub is pulled


class RigPort(Protocol):
    """What a slot needs from its rig: power and LED of its own slot."""

    @property
    def rig(self) -> int: ...

    async def power(self, slot: int, on: bool) -> None: ...

    async def led(self, slot: int, colour: LedColour) -> None: ...


async def _no(*_: object) -> bool:
    return False


@dataclass
class SlotDeps:
    """What every slot worker of a station shares."""

    store: Store
    catalog: Callable[[], Catalog]  # the current catalog (it may be reloaded)
    master_keys: MasterKeys
    driver: HubDriver
    pilot_models: Collection[DeviceModel]
    timeouts: TimeoutConfig
    retries: RetryConfig
    on_status: Callable[[SlotStatus], None] = lambda status: None
    on_rejected: Callable[[Guid, int, int, str], None] = lambda guid, rig, slot, reason: None
    on_unidentified: Callable[[int, int, str, str], None] = lambda rig, slot, code, detail: None
    on_stage_time: Callable[[Stage, float], None] = lambda stage, seconds: None
    on_result: Callable[[GuidResult, float], None] = lambda result, seconds: None
    on_link_stats: Callable[[int, LinkStats], None] = lambda rig, stats: None
    # A flash failed because of its image (FlashError.image): True if that image is no longer
    # flashed, so no retry is made with it.
    on_image_fault: Callable[[FlashError], Awaitable[bool]] = field(default=_no)
    # Before a hub is started: True if it waited for the store to be back (jigd.store_outage).
    store_waited: Callable[[], Awaitable[bool]] = field(default=_no)
    hub_models: Mapping[DeviceModel, HubModelConfig] = field(default_factory=dict)
    # Seconds a hub of the Device Model is expected to take in the slot, once known.
    expected_s: Callable[[DeviceModel], float | None] = lambda model: None


class _InterruptedError(WorkInterruptedError):
    """The rig stopped answering, or another hub answered: not the hub's fault."""


class _StoppingError(WorkInterruptedError):
    """jigd is stopping: the attempt was closed resumable at a point between stages."""


class SlotWorker:
    """The task of one slot. `run()` is owned by the station's TaskGroup."""

    def __init__(self, rig: RigPort, config: SlotConfig, deps: SlotDeps) -> None:
        self._rig = rig
        self._config = config
        self._deps = deps
        self._label = f"rig{rig.rig}/slot{config.slot}"
        self._status = SlotStatus(rig.rig, config.slot)
        self._rig_up = False
        self._present = False
        self._changed = asyncio.Event()
        self._handler: asyncio.Task[None] | None = None
        self._draining = False
        self._uncut = 0  # > 0 while in a section that stopping must not cut (a power cycle)
        self._books = SlotAttempts(deps.store, rig.rig, config.slot, self._label)
        self._heard: Heard | None = None  # when the hub last answered, and to which stage
        self._held = False  # out of service or under self-test: no hub is started

    @property
    def label(self) -> str:
        return self._label

    @property
    def status(self) -> SlotStatus:
        return self._status

    @property
    def handling(self) -> bool:
        """A hub's work is under way: from identify until the slot has let go of the hub (its
        result recorded, or its attempt closed as interrupted)."""
        return self._handler is not None

    @property
    def finishing(self) -> bool:
        """Stopping waits for this hub: it is in the activation sequence or a power cycle."""
        return self._handler is not None and (self._uncut > 0 or self._status.stage in UNCUT_STAGES)

    def hold(self, held: bool) -> None:
        """Start no hub while `held` (the slot is out of service, or under self-test); a hub
        already being handled finishes first (jigd.slot_service)."""
        self._held = held
        self._changed.set()

    def drain(self) -> None:
        """jigd is stopping: take no new hub; interrupt this one unless it is finishing.

        `run()` returns once the slot has let go of its hub.
        """
        self._draining = True
        self._changed.set()
        if not self.finishing:
            self._interrupt(STOPPING_REASON)

    def _stopping(self) -> bool:
        return self._draining  # a call: the flag changes across awaits, unlike what mypy sees

    def _checkpoint(self) -> None:
        """Where an uncut section ends: interrupt now if jigd began stopping during it."""
        if self._draining and not self.finishing:
            self._interrupt(STOPPING_REASON)

    # -- called by the rig supervisor ------------------------------------------------------

    def rig_up(self, present: bool) -> None:
        self._rig_up = True
        self._present = present
        self._set(state=SlotState.EMPTY if not present else self._status.state)
        self._changed.set()

    def rig_down(self) -> None:
        self._rig_up = False
        self._set(state=SlotState.OFFLINE, stage=None)
        self._interrupt("rig down")
        self._changed.set()

    def presence(self, present: bool) -> None:
        if present == self._present:
            return
        self._present = present
        if not present:
            self._interrupt(HUB_TAKEN_OUT)
            self._set(
                state=SlotState.EMPTY,
                guid=None,
                batch_id=None,
                stage=None,
                progress=0.0,
                attempts=0,
                outcome=None,
                detail="",
                model=None,
                hub_since=None,
                expected_s=None,
                wait=None,
            )
        self._changed.set()

    # -- the task ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Handle each hub put in the slot, once, until the station drains."""
        while not self._draining:
            await self._wait_for(lambda: self._rig_up and self._present and not self._held)
            if self._stopping() or await self._deps.store_waited():
                continue  # stopping ends the loop; after a wait for the store, look again
            handler = asyncio.ensure_future(self._handle_hub())
            self._handler = handler
            try:
                await handler
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # the station is stopping
                continue  # interrupted: handle the hub again once the rig/hub is back
            except _StoppingError:
                continue
            except _InterruptedError as exc:
                self._set(state=SlotState.ATTENTION, stage=None, detail=str(exc))
                await self._led(LedColour.BLINK)
                _LOGGER.warning(
                    "%s: %s; the hub is handled again when the rig answers", self._label, exc
                )
                await self._wait_for(lambda: not self._rig_up or not self._present)
                continue
            except (StoreError, InvalidResultError) as exc:
                # The store refused (the same GUID in two slots, a batch closed under it):
                # this hub needs a person; the other slots go on.
                self._set(state=SlotState.ATTENTION, stage=None, detail=str(exc))
                await self._led(LedColour.RED)
                _LOGGER.error("%s: %s; set this hub aside", self._label, exc)  # noqa: TRY400
                await self._wait_for(lambda: not self._present or not self._rig_up)
                continue
            except Exception:
                # A bug must cost one hub, never the station: log it in full, flag the slot.
                _LOGGER.exception("%s: unexpected error; the slot needs attention", self._label)
                self._set(state=SlotState.ATTENTION, stage=None, detail="internal error, see log")
                await self._led(LedColour.BLINK)
                await self._wait_for(lambda: not self._present or not self._rig_up)
                continue
            finally:
                self._handler = None
            # Done with this hub: never flash it again while it stays in the slot.
            await self._wait_for(lambda: not self._present or not self._rig_up)

    async def _wait_for(self, condition: Callable[[], bool]) -> None:
        """Wait until `condition` holds, or the station drains."""
        while not condition() and not self._draining:
            self._changed.clear()
            await self._changed.wait()

    def _interrupt(self, reason: str) -> None:
        handler = self._handler
        if handler is not None and not handler.done():
            _LOGGER.info("%s: %s; the hub's work is interrupted", self._label, reason)
            handler.cancel(reason)

    def _set(self, **changes: object) -> None:
        status = replace(self._status, **changes)  # type: ignore[arg-type]  # SlotStatus fields
        if status.state != self._status.state:
            status = replace(status, since=time.monotonic())
        self._status = status
        self._deps.on_status(status)

    async def _led(self, colour: LedColour) -> None:
        try:
            await self._rig.led(self._config.slot, colour)
        except RigError as exc:
            _LOGGER.warning("%s: LED %s not set: %s", self._label, colour, exc)

    # -- one hub -----------------------------------------------------------------------------

    async def _handle_hub(self) -> None:
        self._set(
            state=SlotState.BUSY,
            stage=Stage.IDENTIFY,
            progress=0.0,
            detail="",
            hub_since=time.monotonic(),
        )
        await self._led(LedColour.AMBER)
        t0 = time.monotonic()
        self._heard = None
        try:
            identity = await self._identify()
        except NoJigGroup as exc:
            await self._no_jig_group(exc)
            return
        if not isinstance(identity, HubIdentity):
            if await self._silent_since_interrupted(t0):
                return
            _LOGGER.error("%s: %s", self._label, identity)
            self._set(state=SlotState.ATTENTION, stage=None, detail=identity)
            await self._led(LedColour.BLINK)
            return
        guid = identity.guid
        self._set(guid=guid, model=identity.model, expected_s=self._deps.expected_s(identity.model))
        ref = await self._deps.store.find_open_batch(guid)
        if ref is None:
            await self._reject(guid, "not_in_batch")
            return
        self._set(batch_id=ref.batch_id)
        if ref.status is GuidStatus.FINAL and ref.outcome is not None:
            # Put back after it was done: show its outcome again, never flash it twice.
            _LOGGER.info("%s: %s already has outcome %s", self._label, guid, ref.outcome)
            await self._finish(ref.outcome, detail="already done in this batch")
            return
        busy = held_elsewhere(ref, self._deps.store.station)
        if busy is not None:  # another station of the site has it: never touch the hub
            await self._reject(guid, busy.CODE, detail=str(busy))
            return
        await self._attempts(ref, identity)

    async def _identify(self) -> HubIdentity | str:
        """Open the link and identify the hub, power cycling once between two tries; if it
        does not answer, why not and what to do."""
        limits = self._limits(None)  # the hub's Device Model is not known yet
        first = ""
        for attempt in range(1, IDENTIFY_TRIES + 1):
            try:
                async with await self._open() as link:
                    try:
                        # A hub just put in (or powered) is still booting: poll until it answers.
                        await self._boot_wait(link, limits.after_power_on)
                        identity = await link.identify()
                    finally:
                        self._report_link(link, 0)
            except NoJigGroup:
                raise  # no retry or power cycle changes what the firmware implements
            except DriverError as exc:
                _LOGGER.warning("%s: identify failed (try %d): %s", self._label, attempt, exc)
                first = first or f"{exc} ({limits.explain(swap=False)})"
            else:
                self._heard = Heard(time.monotonic(), Stage.IDENTIFY)
                return identity
            if attempt < IDENTIFY_TRIES:
                await self._power_cycle()
        return dead_hub_detail(first, limits.after_power_on, None, time.monotonic())

    async def _boot_wait(self, link: HubLink, limit_s: float) -> None:
        """Wait for the hub to boot, at most `limit_s`, the slot showing the wait meanwhile."""
        self._show_boot_wait(limit_s)
        try:
            await await_boot(link, timeout_s=limit_s)
        finally:
            self._show_boot_wait(None)

    def _show_boot_wait(self, limit_s: float | None) -> None:
        """The slot waits for its hub's boot, at most `limit_s` (None: no longer)."""
        self._set(wait=None if limit_s is None else SlotWait("boot", time.monotonic(), limit_s))

    def _limits(self, model: DeviceModel | None) -> BootLimits:
        hub_model = self._deps.hub_models.get(model) if model is not None else None
        return boot_limits(self._deps.timeouts, hub_model)

    async def _no_jig_group(self, exc: NoJigGroup) -> None:
        """A hub that speaks SMP without the jig group: it has no GUID to book, and is never
        unlocked or written. RED, an `unidentified_hub` alert (journalled, on MQTT), and the
        slot says why until the hub is pulled."""
        detail = f"{Stage.IDENTIFY}: {exc.code}: {exc}"
        _LOGGER.error("%s: %s", self._label, detail)
        self._deps.on_unidentified(self._rig.rig, self._config.slot, exc.code, str(exc))
        self._set(state=SlotState.REJECTED, stage=Stage.IDENTIFY, detail=detail)
        await self._led(LedColour.RED)

    async def _silent_since_interrupted(self, t0: float) -> bool:
        """A hub that does not answer, in the slot where a GUID's attempt was interrupted while
        the hub stayed in (jigd stopped, or lost the rig): that hub is taken to be the GUID,
        and it fails at `identify` with code `no_answer` (a swap or boot it never came back
        from), instead of waiting in the slot for a person while its GUID stays pending.
        False when no such GUID is known (the hub is then left for a person, BLINK)."""
        store = self._deps.store
        state = await store.interrupted_in_slot(self._rig.rig, self._config.slot)
        if state is None:
            return False
        history = await store.attempts(state.batch_id, state.guid)
        if not history or history[-1].error_detail == HUB_TAKEN_OUT:
            return False  # that hub left the slot: the one in it now may be any hub
        reached = history[-1].stage_reached
        self._set(guid=state.guid, batch_id=state.batch_id)
        async with self._books.holding(state.batch_id, state.guid, lambda: Stage.IDENTIFY):
            await self._no_answer(state, reached, t0)
        return True

    async def _no_answer(self, state: GuidState, reached: Stage | None, t0: float) -> None:
        """Record the silent hub's GUID failed at `identify` (`no_answer`), as a new attempt."""
        attempt = await self._begin(state.batch_id, state.guid)
        detail = (
            f"the hub in {self._label} was being flashed as {state.guid} (attempt "
            f"{attempt - 1}, last recorded stage {reached or 'none'}) when that attempt was "
            f"interrupted, and has not answered since ({IDENTIFY_TRIES} tries, power cycled "
            f"between them). What to do: {WHAT_TO_DO}"
        )
        failure = await self._books.no_answer(state, attempt, detail)
        _LOGGER.error("%s: %s", self._label, detail)
        await self._record(
            await self._books.failure(
                state.batch_id,
                state.guid,
                failure,
                attempts=attempt,
                identified=(state.model, None),
            ),
            t0,
        )

    def _receiver(self, model: DeviceModel | None) -> HubReceiverSettings:
        hub_model = self._deps.hub_models.get(model) if model is not None else None
        return receiver_settings(self._config, hub_model)

    async def _open(self, receiver: HubReceiverSettings | None = None) -> HubLink:
        """A link to the slot's hub, with `receiver` (default: the slot's own settings)."""
        options = (receiver or self._receiver(None)).link_options(
            timeout_s=self._deps.timeouts.request_s,
            request_retries=self._deps.retries.request_retries,
        )
        return await self._deps.driver(self._config, name=self._label, options=options)

    async def _reject(self, guid: Guid, reason: str, *, detail: str | None = None) -> None:
        """A hub in no open batch, or one another station holds: never unlocked or written;
        RED, alert, station record."""
        rig, slot = self._rig.rig, self._config.slot
        await self._deps.store.record_rejected(guid, rig, slot, reason, detail=detail)
        self._deps.on_rejected(guid, rig, slot, reason)
        shown = f"{reason}: {detail}" if detail else reason
        _LOGGER.warning("%s: hub %s rejected: %s", self._label, guid, shown)
        self._set(state=SlotState.REJECTED, stage=None, detail=shown)
        await self._led(LedColour.RED)

    async def _begin(self, batch_id: str, guid: Guid, identity: HubIdentity | None = None) -> int:
        """Begin an attempt (see SlotAttempts.begin): stopping does not interrupt this; a lost
        rig or hub does."""
        self._uncut += 1
        try:
            return await self._books.begin(batch_id, guid, identity)
        finally:
            self._uncut -= 1

    async def _attempts(self, ref: BatchRef, identity: HubIdentity) -> None:
        """Attempts of the flash procedure until success, a final failure, the attempt limit or
        the GUID's attempt budget; the GUID is let go of if the work ends without a result."""
        async with self._books.holding(ref.batch_id, identity.guid, lambda: self._status.stage):
            budget = await self._books.budget(ref.batch_id, identity.guid, self._deps.retries)
            if budget.left == 0:
                await self._budget_spent(ref, identity, budget)
                return
            limit = min(budget.left, self._deps.retries.stage_attempts)
            await self._attempt_loop(ref, identity, limit)

    async def _budget_spent(
        self, ref: BatchRef, identity: HubIdentity, budget: AttemptBudget
    ) -> None:
        """The GUID has had all its attempts (across restarts): it fails with their cause,
        without another attempt."""
        failure = await self._books.spent(ref.batch_id, identity.guid, budget)
        _LOGGER.error("%s: %s: %s", self._label, identity.guid, failure.detail)
        await self._record(
            await self._books.failure(
                ref.batch_id,
                identity.guid,
                failure,
                attempts=budget.made,
                identified=(identity.model, identity.firmware_version),
                locked=await self._left_locked(None, identity),
            ),
            time.monotonic(),
        )

    async def _attempt_loop(self, ref: BatchRef, identity: HubIdentity, limit: int) -> None:
        t0 = time.monotonic()
        failure: FlashError | None = None  # the furthest-reaching failure
        last: FlashError | None = None  # the last attempt's failure
        link_errors: list[str] = []
        # An attempt left the hub unlocked and it has not identified since: `identity` is stale.
        unlocked = False
        for tries in range(1, limit + 1):
            if self._draining:
                raise _StoppingError(STOPPING_REASON)
            attempt = await self._begin(ref.batch_id, identity.guid, identity)
            self._set(attempts=attempt, stage=Stage.AUTHORIZE)
            try:
                self._checkpoint()
                authorize(ref.batch_id, ref.declared_model, identity)
                success = await self._one_attempt(
                    ref, identity, attempt, link_errors, unlocked=unlocked
                )
            except FlashError as exc:
                if failure is None or furthest(exc.stage, failure.stage):
                    failure = exc
                last = exc
                if exc.locked is not None:
                    unlocked = not exc.locked
                if exc.silent:
                    link_errors.append(exc.detail)
                # A hub that did not boot gets its one power cycle even in its last attempt.
                last_try = not exc.retryable or tries == limit
                if last_try and not exc.silent:
                    break
                await self._stop_between(ref, identity.guid, attempt, exc)
                _LOGGER.warning(
                    "%s: attempt %d failed: %s; power cycling", self._label, attempt, exc
                )
                if not exc.silent:
                    await self._end(ref, identity.guid, attempt, exc)
                # A hub that did not boot is power cycled within its attempt, so the attempt's
                # record spans the wait; one silent after the power cycle is failed at once.
                again = await self._recover(identity)
                if isinstance(again, str):
                    link_errors.append(again)
                    failure = self._dead(failure or exc, exc, identity.model)
                    break
                identity, unlocked = again, False  # identified afresh: it says
                if last_try:
                    exc.locked = None  # the hub answers again: locked as it now says
                    break
                if exc.silent:
                    await self._end(ref, identity.guid, attempt, exc)
                continue
            await self._record(
                await self._books.success(identity, ref.batch_id, attempt, success), t0
            )
            return
        if failure is None:  # pragma: no cover - the loop runs at least once
            raise RuntimeError("no attempt was made")
        await self._record(
            await self._books.failure(
                ref.batch_id,
                identity.guid,
                failure,
                attempts=attempt,
                identified=(identity.model, identity.firmware_version),
                link_errors=link_errors,
                locked=await self._left_locked(last, identity, unlocked=unlocked),
            ),
            t0,
        )

    async def _stop_between(self, ref: BatchRef, guid: Guid, attempt: int, exc: FlashError) -> None:
        """If jigd is stopping, no retry now: the attempt is closed resumable (the next run
        retries the hub from what it reports) and the work ends."""
        if self._stopping():
            await self._deps.store.interrupt_attempt(
                ref.batch_id,
                guid,
                attempt,
                stage=exc.stage,
                reason=f"{STOPPING_REASON} after {exc.code} at stage {exc.stage}",
            )
            raise _StoppingError(STOPPING_REASON) from exc

    async def _end(self, ref: BatchRef, guid: Guid, attempt: int, exc: FlashError) -> None:
        """Record the attempt failed with `exc` (another follows)."""
        await self._deps.store.end_attempt(
            ref.batch_id,
            guid,
            attempt,
            stage=exc.stage,
            error_code=exc.code,
            error_detail=exc.detail,
            locked=exc.locked,
        )

    def _dead(self, failure: FlashError, last: FlashError, model: DeviceModel) -> FlashError:
        """The failure of a hub silent after the power cycle that followed `last`: at the
        furthest stage reached, `no_boot`, with what was seen last and what to do."""
        first = last.detail if last.silent else f"stage {last.stage} failed ({last.code})"
        limit_s = self._limits(model).after_reset
        detail = dead_hub_detail(first, limit_s, self._heard, time.monotonic())
        _LOGGER.error("%s: %s", self._label, detail)
        return FlashError(failure.stage, NO_BOOT, detail, retryable=False)

    async def _left_locked(
        self, last: FlashError | None, identity: HubIdentity, *, unlocked: bool = False
    ) -> bool:
        """Whether the failed hub is left locked: as the procedure left it in the last attempt;
        if that failed outside the procedure (authorize, opening the link), as the hub last
        identified (unless an attempt since left it `unlocked`), and locked again (best
        effort) if it may be unlocked."""
        if last is not None and last.locked is not None:
            return last.locked
        if identity.locked and not unlocked:
            return True
        try:
            async with await self._open(self._receiver(identity.model)) as link:
                return await lock_again(link, self._deps.timeouts.stage_s, self._label)
        except DriverError as exc:
            _LOGGER.error("%s: the failed hub could not be locked again: %s", self._label, exc)  # noqa: TRY400
            return False

    async def _one_attempt(
        self,
        ref: BatchRef,
        identity: HubIdentity,
        attempt: int,
        link_errors: list[str],
        *,
        unlocked: bool,
    ) -> FlashSuccess:
        store = self._deps.store
        last_progress = -PROGRESS_STEP

        def on_stage(stage: Stage) -> None:
            self._set(stage=stage)

        def on_stage_done(stage: Stage, seconds: float) -> None:
            self._heard = Heard(time.monotonic(), stage)  # each stage ends with the hub's answer
            self._deps.on_stage_time(stage, seconds)

        def on_progress(done: int, total: int) -> None:
            nonlocal last_progress
            percent = 100.0 * done / total if total else 100.0
            if percent - last_progress >= PROGRESS_STEP or done == total:
                last_progress = percent
                self._set(progress=percent)

        async def on_uploaded(bytes_sent: int, resumed_from: int) -> None:
            detail = f"uploaded {bytes_sent} bytes, resumed from offset {resumed_from}"
            await store.record_stage(ref.batch_id, identity.guid, attempt, Stage.UPLOAD, detail)

        receiver = self._receiver(identity.model)
        procedure = FlashProcedure(
            catalog=self._deps.catalog(),
            master_keys=self._deps.master_keys,
            pilot_models=self._deps.pilot_models,
            timeouts=self._deps.timeouts,
            label=self._label,
            reset_delay_s=receiver.reset_delay_s,
            boot=self._limits(identity.model),
            hooks=StageHooks(
                on_stage=on_stage,
                on_progress=on_progress,
                on_stage_done=on_stage_done,
                on_uploaded=on_uploaded,
                on_boot_wait=self._show_boot_wait,
            ),
        )
        try:
            link = await self._open(receiver)
        except DriverError as exc:
            link_errors.append(str(exc))
            raise FlashError(Stage.IDENTIFY, exc.code, str(exc)) from exc
        try:
            async with link:
                try:
                    success = await procedure.run(link, identity, unlocked=unlocked)
                finally:
                    if report := link.sizing_report():
                        _LOGGER.info("%s: link settled on %s", self._label, report)
        except FlashError as exc:
            if isinstance(exc.__cause__, LinkError):
                link_errors.append(str(exc.__cause__))  # counts by kind go to the metrics
            await store.record_stage(ref.batch_id, identity.guid, attempt, exc.stage, exc.code)
            if exc.image is not None and await self._deps.on_image_fault(exc):
                exc.retryable = False  # the next attempt could only fail at select
            raise
        finally:
            self._report_link(link, procedure.bytes_uploaded)
        return success

    def _report_link(self, link: HubLink, bytes_uploaded: int) -> None:
        settled = link.settled()
        stats = LinkStats(
            bytes_uploaded,
            dict(link.link_errors),
            link.bytes_dropped,
            slot=self._config.slot,
            frame_bytes=settled.frame_size if settled is not None else None,
            window=settled.window if settled is not None else None,
        )
        self._deps.on_link_stats(self._rig.rig, stats)

    async def _recover(self, identity: HubIdentity) -> HubIdentity | str:
        """Power cycle before a retry, wait for the boot (a swap may be due) and re-identify
        (the same GUID must come back); if the hub does not answer, the error."""
        if self._draining:
            # Between attempts: no attempt is open; the next start marks the GUID interrupted.
            raise _StoppingError(STOPPING_REASON)
        self._set(stage=Stage.IDENTIFY, progress=0.0)
        await self._power_cycle()
        try:
            async with await self._open(self._receiver(identity.model)) as link:
                try:
                    await self._boot_wait(link, self._limits(identity.model).after_reset)
                    again = await link.identify()
                finally:
                    self._report_link(link, 0)
        except DriverError as exc:
            _LOGGER.warning("%s: hub silent after power cycle: %s", self._label, exc)
            return str(exc)
        self._heard = Heard(time.monotonic(), Stage.IDENTIFY)
        if again.guid != identity.guid:
            _LOGGER.error(
                "%s: a different hub %s answered after power cycling %s",
                self._label,
                again.guid,
                identity.guid,
            )
            raise _InterruptedError(f"hub {identity.guid} was replaced by {again.guid}")
        return again

    async def _power_cycle(self) -> None:
        """Power off, wait, power on: never cut by stopping, so no slot is left unpowered."""
        slot = self._config.slot
        self._uncut += 1
        try:
            await self._rig.power(slot, False)
            await asyncio.sleep(POWER_OFF_S)
            await self._rig.power(slot, True)
        except RigError as exc:
            raise _InterruptedError(f"cannot power cycle the slot: {exc}") from exc
        finally:
            self._uncut -= 1
        self._checkpoint()

    async def _record(self, result: GuidResult, t0: float) -> None:
        """Durable first, then the LED and everyone else."""
        await asyncio.shield(self._deps.store.record_result(result))
        self._deps.on_result(result, time.monotonic() - t0)
        detail = result.failure_code or ""
        await self._finish(
            result.outcome,
            detail=f"{detail}, {LEFT_UNLOCKED}" if result.locked is False else detail,
        )

    async def _finish(self, outcome: Outcome, *, detail: str) -> None:
        failed = outcome is Outcome.FAILED
        self._set(
            state=SlotState.FAILED if failed else SlotState.DONE,
            stage=None,
            outcome=outcome,
            detail=detail,
            progress=0.0 if failed else 100.0,
        )
        await self._led(LedColour.RED if failed else LedColour.GREEN)
