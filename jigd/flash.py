"""The flash procedure: one attempt at bringing one identified, authorised hub to its firmware.

Stages: `identify -> authorize -> select -> already current? -> unlock -> upload -> mark test
-> reset -> await boot -> verify -> confirm -> lock -> record`. The slot worker does
`identify`, `authorize` and `record` (they need the store); this module does the rest, each
stage named, timed and bounded by a timeout.

Every attempt starts from what the hub reports, not from what we remember: an image already
active is only confirmed and locked, an image already complete in the secondary slot is not
uploaded again, and an unfinished upload resumes from the hub's offset. So an attempt cut short by
a crash, a power loss or a vanished rig is simply run again.

The image is re-verified (sha256) before the hub is unlocked; a failure caused by the image (it
changed on disk, or the bootloader refused it) names its entry (`FlashError.image`) so the
station stops flashing it.

Images are named as the hub names them: by the MCUboot image hash (the image's SHA256 TLV) that
the catalog records for each entry, never by the file's sha256 (that one is only the upload's
`sha` and the catalog's file name).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from typing import Final, TypeVar

from drivers.errors import DriverError
from drivers.hub_link import (
    DEFAULT_RESET_DELAY_S,
    HubIdentity,
    HubLink,
    ImageSlotState,
    await_reset,
)
from firmware_catalog import Catalog, CatalogEntry, CatalogError, Image, SelectionError
from jigd.boot import NO_BOOT, BootLimits, boot_limits
from jigd.config import TimeoutConfig
from jigd.model import DeviceModel, FirmwareVersion, Outcome, Stage
from jigd.secrets import MasterKeys

__all__ = [
    "FlashError",
    "FlashProcedure",
    "FlashSuccess",
    "StageHooks",
    "authorize",
    "lock_again",
]

_LOGGER = logging.getLogger(__name__)

T = TypeVar("T")

BOOT_TIMEOUT_SLACK_S: Final = 1.0  # the await_boot stage's timeout beyond the boot limit
# Failure codes that no retry can change: the hub is failed at once.
FINAL_CODES: Final = frozenset(
    {
        "model_mismatch",
        "no_firmware",
        "newer_than_catalog",
        "image_untrusted",
        "no_master_key",
        "image_missing",
    }
)


class FlashError(Exception):
    """A stage failed. `code` is the Fault Analysis code; `retryable` says if a retry may help.

    `locked` says how the procedure left the hub: True locked (never unlocked, or locked again
    after the failure), False unlocked (locking it again failed, or the hub is silent), None
    not known (the error did not come from the procedure).
    """

    def __init__(
        self,
        stage: Stage,
        code: str,
        detail: str,
        *,
        retryable: bool = True,
        image: CatalogEntry | None = None,
        silent: bool = False,
    ) -> None:
        super().__init__(f"stage {stage}: {code}: {detail}")
        self.stage = stage
        self.code = code
        self.detail = detail
        self.retryable = retryable and code not in FINAL_CODES
        # The hub stopped answering (it did not boot): nothing more is asked of it on this link.
        self.silent = silent
        # The catalog entry whose image caused the failure (it changed on disk, or the hub's
        # bootloader refused it), for the station to stop flashing it.
        self.image = image
        self.locked: bool | None = None


@dataclass(frozen=True, slots=True)
class FlashSuccess:
    """The hub runs the catalog entry's image, verified, confirmed and locked."""

    entry: CatalogEntry
    flashed: bool  # False: the image was already active and confirmed before this attempt
    bytes_uploaded: int
    resumed_from: int


async def _nothing_uploaded(bytes_sent: int, resumed_from: int) -> None:
    return None


@dataclass
class StageHooks:
    """Callbacks to the slot worker: stage changes, upload progress, stage durations."""

    on_stage: Callable[[Stage], None] = lambda stage: None
    on_progress: Callable[[int, int], None] = lambda done, total: None
    on_stage_done: Callable[[Stage, float], None] = lambda stage, seconds: None
    # A wait for the hub's boot begins (its limit in seconds) or, with None, ends.
    on_boot_wait: Callable[[float | None], None] = lambda limit_s: None
    # Awaited as soon as an upload completes (bytes sent, offset resumed from), so the journal
    # shows a finished upload even if the attempt is cut short in a later stage.
    on_uploaded: Callable[[int, int], Awaitable[None]] = field(default=_nothing_uploaded)


def select_firmware(
    catalog: Catalog,
    identity: HubIdentity,
    pilot_models: Collection[DeviceModel],
) -> CatalogEntry:
    """Stage `select`: the latest selectable entry for the hub's Device Model, or a FlashError."""
    try:
        return catalog.select(identity.model, identity.firmware_version, pilot_models)
    except SelectionError as exc:
        raise FlashError(Stage.SELECT, str(exc.code), exc.detail, retryable=False) from exc


def outcome_of(from_version: FirmwareVersion, success: FlashSuccess) -> Outcome:
    """`reflashed` when the firmware changed during this batch, else `already_current`."""
    changed = from_version != success.entry.firmware_version or success.flashed
    return Outcome.REFLASHED if changed else Outcome.ALREADY_CURRENT


class FlashProcedure:
    """Runs the stages from `select` to `lock` on one hub, for one attempt."""

    def __init__(
        self,
        *,
        catalog: Catalog,
        master_keys: MasterKeys,
        pilot_models: Collection[DeviceModel],
        timeouts: TimeoutConfig,
        label: str,
        hooks: StageHooks | None = None,
        reset_delay_s: float = DEFAULT_RESET_DELAY_S,
        boot: BootLimits | None = None,
    ) -> None:
        self._catalog = catalog
        self._boot = boot or boot_limits(timeouts, None)
        self._reset_delay_s = reset_delay_s
        self._master_keys = master_keys
        self._pilot_models = pilot_models
        self._timeouts = timeouts
        self._label = label
        self._hooks = hooks or StageHooks()
        self.bytes_uploaded = 0  # image bytes put on the link by this attempt, resends included
        self._unlocked = False  # the hub is, or may be, unlocked (it came so, or we unlocked it)

    async def run(
        self, link: HubLink, identity: HubIdentity, *, unlocked: bool = False
    ) -> FlashSuccess:
        """Bring the hub to its selected firmware. Raises FlashError naming the failed stage;
        a hub that is or may be unlocked then is locked again, best effort, and the error's
        `locked` says whether it is (a hub never goes back on the pallet open if jigd can
        help it). `unlocked`: an earlier attempt left the hub unlocked and `identity` is from
        before it (the hub did not answer since)."""
        self._unlocked = unlocked or not identity.locked
        try:
            return await self._run(link, identity)
        except FlashError as exc:
            if not self._unlocked:
                exc.locked = True
            elif exc.silent:
                exc.locked = False  # a hub that does not answer cannot be locked
            else:
                exc.locked = await lock_again(link, self._timeouts.stage_s, self._label)
            raise

    async def _run(self, link: HubLink, identity: HubIdentity) -> FlashSuccess:
        self._hooks.on_stage(Stage.SELECT)
        entry = select_firmware(self._catalog, identity, self._pilot_models)
        sha = image_hash_of(entry)
        states = await self._stage(Stage.CHECK_CURRENT, self._timeouts.stage_s, link.image_state())
        active = _active(states)
        if active is not None and active.hash == sha and active.confirmed:
            # Already current (or finished before an interruption): verify, make sure it is locked.
            self._verify(active, entry)
            if not identity.locked:
                await self._stage(Stage.LOCK, self._timeouts.stage_s, link.lock())
            return FlashSuccess(entry, flashed=False, bytes_uploaded=0, resumed_from=0)

        swap = active is None or active.hash != sha
        secondary = next((s for s in states if not s.active and s.hash == sha), None)
        # The image is re-verified before the hub is unlocked: a changed file touches no hub.
        image = await self._image(entry) if swap and secondary is None else None
        if identity.locked:
            self._unlocked = True  # from the request on: the hub may act on it, answer or not
            await self._stage(Stage.UNLOCK, self._timeouts.stage_s, self._unlock(link, identity))
        uploaded, resumed_from, flashed = 0, 0, False
        if swap:
            if image is not None:
                uploaded, resumed_from = await self._stage(
                    Stage.UPLOAD, self._timeouts.upload_s, self._upload(link, image)
                )
                await self._hooks.on_uploaded(uploaded, resumed_from)
            if secondary is None or not secondary.pending:
                await self._stage(Stage.MARK_TEST, self._timeouts.stage_s, link.mark_test(sha))
            await self._stage(Stage.RESET, self._timeouts.stage_s, link.reset())
            await self._await_boot(link, sha)
            flashed = True
        states = await self._stage(Stage.VERIFY, self._timeouts.stage_s, link.image_state())
        active = _active(states)
        if active is None:
            raise FlashError(Stage.VERIFY, "no_active_image", "the hub reports no active image")
        self._verify(active, entry)
        if not active.confirmed:
            await self._stage(Stage.CONFIRM, self._timeouts.stage_s, link.confirm())
        await self._stage(Stage.LOCK, self._timeouts.stage_s, link.lock())
        return FlashSuccess(
            entry, flashed=flashed, bytes_uploaded=uploaded, resumed_from=resumed_from
        )

    async def _await_boot(self, link: HubLink, sha: bytes) -> None:
        """Stage `await_boot`: the reset takes effect and the hub boots within its limit; a hub
        that does not fails `no_boot`, silent (the slot power cycles it once)."""
        limit_s = self._boot.after_reset
        booted = await_reset(
            link, timeout_s=limit_s, reset_delay_s=self._reset_delay_s, pending_hash=sha
        )
        self._hooks.on_boot_wait(limit_s)
        try:
            # The stage's own timeout only backs up await_reset's, which says more.
            await self._stage(Stage.AWAIT_BOOT, limit_s + BOOT_TIMEOUT_SLACK_S, booted)
        except FlashError as exc:
            if exc.code == NO_BOOT:
                raise FlashError(
                    Stage.AWAIT_BOOT,
                    NO_BOOT,
                    f"no answer to echo within {limit_s:g} s of the reset "
                    f"({self._boot.explain(swap=True)})",
                    silent=True,
                ) from exc
            raise
        finally:
            self._hooks.on_boot_wait(None)

    def _verify(self, active: ImageSlotState, entry: CatalogEntry) -> None:
        sha = image_hash_of(entry)
        if active.hash == sha and active.version == entry.firmware_version:
            return
        if active.hash != sha:
            raise FlashError(
                Stage.VERIFY,
                "image_rejected",
                f"the hub booted image {active.hash.hex()[:16]}... version {active.version}, "
                f"not {entry.describe()} (image hash {sha.hex()[:16]}...): the bootloader "
                "refused it",
                image=entry,
            )
        raise FlashError(
            Stage.VERIFY,
            "version_mismatch",
            f"the active image has the catalog's hash but reports version {active.version}, "
            f"not {entry.firmware_version}",
            retryable=False,
        )

    async def _unlock(self, link: HubLink, identity: HubIdentity) -> None:
        key = self._master_keys.for_manufacturer(identity.model.manufacturer)
        if key is None:
            raise FlashError(
                Stage.UNLOCK,
                "no_master_key",
                f"no unlock master key for manufacturer {identity.model.manufacturer_hex} in "
                f"{self._master_keys.source}",
                retryable=False,
            )
        await link.unlock(key.reveal())

    async def _image(self, entry: CatalogEntry) -> Image:
        """The entry's image, re-verified by sha256 (off the event loop)."""
        try:
            return await asyncio.to_thread(self._catalog.image, entry)
        except CatalogError as exc:
            raise FlashError(
                Stage.UPLOAD, "image_missing", str(exc), retryable=False, image=entry
            ) from exc

    async def _upload(self, link: HubLink, image: Image) -> tuple[int, int]:
        """Upload the image; (bytes sent, resumed from)."""
        result = await link.upload(image.data, self._hooks.on_progress)
        self.bytes_uploaded += result.bytes_sent
        return result.bytes_sent, result.resumed_from

    async def _stage(self, stage: Stage, timeout_s: float, work: Awaitable[T]) -> T:
        """Run one stage's work under its timeout, turning driver errors into FlashError."""
        self._hooks.on_stage(stage)
        started = time.monotonic()
        try:
            async with asyncio.timeout(timeout_s):
                result = await work
        except FlashError:
            raise
        except TimeoutError as exc:
            raise FlashError(stage, "timeout", f"no result within {timeout_s:g} s") from exc
        except DriverError as exc:  # UnlockRefused, ImageRejected, link errors: the code says
            raise FlashError(stage, exc.code, str(exc)) from exc
        self._hooks.on_stage_done(stage, time.monotonic() - started)
        _LOGGER.debug("%s: stage %s done", self._label, stage)
        return result


async def lock_again(link: HubLink, timeout_s: float, label: str) -> bool:
    """Lock a hub that failed while unlocked, best effort: whether it is locked now."""
    try:
        async with asyncio.timeout(timeout_s):
            await link.lock()
    except (DriverError, TimeoutError) as exc:
        _LOGGER.error("%s: the failed hub could not be locked again: %s", label, exc)  # noqa: TRY400
        return False
    _LOGGER.info("%s: the failed hub is locked again", label)
    return True


def image_hash_of(entry: CatalogEntry) -> bytes:
    """The MCUboot image hash by which hubs name the entry's image (stage `select` fails if the
    catalog could not record it: the image is unreadable)."""
    if entry.image_hash is None:
        raise FlashError(
            Stage.SELECT,
            "image_missing",
            f"the catalog has no image hash for {entry.describe()}: its image could not be "
            "read; run `jigd catalog verify` and add the image again",
            retryable=False,
        )
    return bytes.fromhex(entry.image_hash)


def _active(states: list[ImageSlotState]) -> ImageSlotState | None:
    return next((s for s in states if s.active), None)


def authorize(batch_id: str, declared: DeviceModel | None, identity: HubIdentity) -> None:
    """Stage `authorize`: the hub must be the Device Model its batch lists (`declared`)."""
    if declared is not None and declared != identity.model:
        raise FlashError(
            Stage.AUTHORIZE,
            "model_mismatch",
            f"the hub identifies as Device Model {identity.model}; batch {batch_id} "
            f"lists it as {declared}",
            retryable=False,
        )
