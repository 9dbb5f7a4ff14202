"""Device API: what the daemon asks of a hub, whatever protocol its manufacturer speaks.

`HubLink` is the interface every hub driver implements; `SmpHubLink` implements it over SMP
(MCUmgr) with MCUboot semantics and the "jig" vendor group (docs/hub-protocol.md). The upload is
pipelined (requests in flight and frame size adapt to what the hub's receiver takes, within
`buf_count`/`buf_size` and the link's `FrameLimits`) and resumes from the offset the hub reports.
`mcumgr_params` is optional: a hub without it (Zephyr's default) gets the configured defaults.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import re
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Final, Self, TypeVar

from smp import error as smperror
from smp import image_management as smpimg
from smp import message as smpmsg
from smp import os_management as smpos

from drivers import jig_group
from drivers.errors import (
    BootTimeout,
    LinkTimeout,
    NoJigGroup,
    SmpError,
    UnexpectedResponse,
    UnlockRefused,
)
from drivers.smp_client import DEFAULT_TIMEOUT_S, SmpClient, describe
from drivers.smp_upload import (
    FrameLimits,
    ProgressCallback,
    SmpUpload,
    UploadResult,
    UploadSizing,
    new_sizing,
)
from drivers.untrusted import FIELD_LIMIT, printable
from jigd.model import DeviceModel, FirmwareVersion, Guid, IdentifierError

__all__ = [
    "BOOT_POLL_INTERVAL_S",
    "BOOT_POLL_TIMEOUT_S",
    "DEFAULT_BUF_COUNT",
    "DEFAULT_BUF_SIZE",
    "DEFAULT_REQUEST_RETRIES",
    "DEFAULT_RESET_DELAY_S",
    "FrameLimits",
    "HubIdentity",
    "HubLink",
    "ImageSlotState",
    "LinkOptions",
    "ProgressCallback",
    "SmpHubLink",
    "UploadResult",
    "await_boot",
    "await_reset",
    "parse_image_version",
]

_LOGGER = logging.getLogger(__name__)

DEFAULT_REQUEST_RETRIES: Final = 3
# While a hub boots it discards what it receives; a poll answered in ~10 ms at 115200 baud is
# resent soon, so the boot is noticed within ~0.2 s of the hub being ready.
BOOT_POLL_TIMEOUT_S: Final = 0.15  # one echo request while waiting for a hub to boot
BOOT_POLL_INTERVAL_S: Final = 0.05
# What a hub without `mcumgr_params` is taken to have: Zephyr's defaults,
# CONFIG_MCUMGR_TRANSPORT_NETBUF_SIZE and CONFIG_MCUMGR_TRANSPORT_NETBUF_COUNT.
DEFAULT_BUF_SIZE: Final = 384
DEFAULT_BUF_COUNT: Final = 4
# Zephyr answers `os reset` and resets this much later (CONFIG_MCUMGR_GRP_OS_RESET_MS).
DEFAULT_RESET_DELAY_S: Final = 0.25
_BOOT_ECHO: Final = "jigd boot"
MIN_BUF_SIZE: Final = 128  # a hub reporting less cannot carry an upload's first chunk usefully

T = TypeVar("T")
R = TypeVar("R", bound=smpmsg.Response)


@dataclass(frozen=True, slots=True)
class HubIdentity:
    """Who the hub says it is."""

    guid: Guid
    model: DeviceModel
    firmware_version: FirmwareVersion
    locked: bool


@dataclass(frozen=True, slots=True)
class ImageSlotState:
    """One image slot as the hub's image state reports it."""

    slot: int
    version: FirmwareVersion
    hash: bytes
    active: bool = False
    confirmed: bool = False
    pending: bool = False
    bootable: bool = False
    permanent: bool = False
    image: int = 0


@dataclass(frozen=True, slots=True)
class LinkOptions:
    """Timing, retry and receiver knobs of a hub link (config or tests set them).

    `buf_size`/`buf_count` are used when the hub has no `mcumgr_params`; `limits` says what its
    receiver takes besides (console line buffers, MTU).
    """

    timeout_s: float = DEFAULT_TIMEOUT_S
    request_retries: int = DEFAULT_REQUEST_RETRIES
    buf_size: int = DEFAULT_BUF_SIZE
    buf_count: int = DEFAULT_BUF_COUNT
    # Zephyr's UART line buffers; no MTU besides buf_size (jigd.slot sets Zephyr's UART MTU on
    # console slots).
    limits: FrameLimits = field(default_factory=lambda: FrameLimits(line_buffers=2, mtu=None))


class HubLink(abc.ABC):
    """A maintenance link to one hub in one slot. Errors: LinkError, ProtocolError subclasses."""

    @property
    @abc.abstractmethod
    def name(self) -> str:
        """Label used in messages (slot label or port)."""

    @property
    @abc.abstractmethod
    def link_errors(self) -> Counter[str]:
        """Link faults by kind since the link opened."""

    @property
    def bytes_dropped(self) -> int:
        """Received bytes the link's decoder threw away (noise, corrupt frames)."""
        return 0

    @abc.abstractmethod
    async def identify(self, *, timeout_s: float | None = None) -> HubIdentity:
        """GUID, Device Model, active Firmware Version and lock state."""

    @abc.abstractmethod
    async def unlock(self, master_key: bytes) -> None:
        """Open the maintenance interface; UnlockRefused if the hub rejects the key."""

    @abc.abstractmethod
    async def image_state(self) -> list[ImageSlotState]:
        """The image slots and their flags."""

    @abc.abstractmethod
    async def upload(
        self, image: bytes | memoryview, progress: ProgressCallback | None = None
    ) -> UploadResult:
        """Write `image` to the secondary slot, resuming an unfinished upload of it."""

    @abc.abstractmethod
    async def mark_test(self, image_hash: bytes) -> list[ImageSlotState]:
        """Mark the uploaded image (by its image hash) to be tried at the next reset."""

    @abc.abstractmethod
    async def reset(self) -> None:
        """Reset the hub (it answers first). Never retried: a second reset could revert."""

    @abc.abstractmethod
    async def confirm(self) -> list[ImageSlotState]:
        """Make the running image permanent."""

    @abc.abstractmethod
    async def lock(self) -> None:
        """Close the maintenance interface again."""

    @abc.abstractmethod
    async def echo(self, text: str, *, timeout_s: float | None = None, probe: bool = False) -> str:
        """Round-trip `text` (link check). `probe`: one request, not resent, whose silence is
        no link error (a boot wait's poll: a booting hub is expected to be silent)."""

    @abc.abstractmethod
    def count_error(self, kind: str) -> None:
        """Count a link error that the caller found (`boot_timeout`: a boot wait passed its
        limit), with the link's own in `link_errors`."""

    @abc.abstractmethod
    async def params(self) -> tuple[int, int]:
        """(buf_size, buf_count): the hub's receive buffer size and count, as it reports them
        or, if it does not, the configured defaults."""

    def sizing_report(self) -> str:
        """What the link's upload settled on (frame size, window, drops), for logs."""
        return ""

    def settled(self) -> UploadResult | None:
        """The last upload's result (its settled frame size and window), if one ran."""
        return None

    @abc.abstractmethod
    async def close(self) -> None:
        """Release the link; idempotent."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


async def await_boot(
    link: HubLink,
    *,
    timeout_s: float,
    poll_timeout_s: float = BOOT_POLL_TIMEOUT_S,
    poll_interval_s: float = BOOT_POLL_INTERVAL_S,
) -> None:
    """Poll `os echo` until the hub answers (after power-on or a reset), for at most `timeout_s`;
    BootTimeout (counted as `boot_timeout`) if it does not. The polls are probes: a hub is
    silent while it boots, so their timeouts are no link errors.

    Echo, not the jig group: every SMP device has it, so a hub without the jig group is seen
    booted and then told apart by `identify` (NoJigGroup), not mistaken for a silent one.
    """
    await await_reset(
        link,
        timeout_s=timeout_s,
        reset_delay_s=0.0,  # any answer will do
        poll_timeout_s=poll_timeout_s,
        poll_interval_s=poll_interval_s,
        after="power-on",
    )


async def await_reset(
    link: HubLink,
    *,
    timeout_s: float,
    reset_delay_s: float = DEFAULT_RESET_DELAY_S,
    pending_hash: bytes | None = None,
    poll_timeout_s: float = BOOT_POLL_TIMEOUT_S,
    poll_interval_s: float = BOOT_POLL_INTERVAL_S,
    after: str = "its reset",
) -> None:
    """Wait, after the hub answered `os reset`, until it has reset and booted again, for at most
    `timeout_s`: BootTimeout (counted as `boot_timeout`) if it does not; the polls are probes.

    A hub resets some time after it answers (Zephyr: 250 ms); until then the old firmware
    answers, so an answer counts only once the reset has visibly taken effect: the hub stopped
    answering, or `reset_delay_s` has passed and its image state no longer shows the image
    `pending_hash` waiting in the secondary slot (a bootloader consumes the pending flag at
    boot: it swaps the image in, or refuses and erases it).
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + timeout_s
    went_silent = False
    last: Exception | None = None
    try:
        async with asyncio.timeout_at(deadline):
            while True:
                try:
                    await link.echo(_BOOT_ECHO, timeout_s=poll_timeout_s, probe=True)
                except (LinkTimeout, UnexpectedResponse) as exc:
                    went_silent, last = True, exc
                else:
                    if (went_silent or loop.time() - started >= reset_delay_s) and (
                        pending_hash is None or not await _still_pending(link, pending_hash)
                    ):
                        return
                await asyncio.sleep(poll_interval_s)
    except TimeoutError as exc:
        link.count_error("boot_timeout")
        raise BootTimeout(link.name, timeout_s, after) from (last or exc)


async def _still_pending(link: HubLink, image_hash: bytes) -> bool:
    """True if the hub still shows `image_hash` pending in a slot it is not running."""
    try:
        states = await link.image_state()
    except (LinkTimeout, UnexpectedResponse):
        return True  # not answering yet: not booted
    return any(s.pending and not s.active and s.hash == image_hash for s in states)


def _not_supported(exc: SmpError) -> bool:
    """The hub has no handler for the request's group or command (MGMT_ERR ENOTSUP)."""
    return exc.rc == smperror.MGMT_ERR.ENOTSUP or (
        exc.group == exc.request_group and exc.group_rc == smperror.MGMT_ERR.ENOTSUP
    )


# ASCII digits, at most 10 each (MCUboot's build number is 32 bits): int() refuses a run of
# over 4300 digits with a plain ValueError, and non-ASCII digits are no hub's version.
_NUM = "([0-9]{1,10})"
_VERSION_RE: Final = re.compile(rf"{_NUM}\.{_NUM}\.{_NUM}(?:[.+]{_NUM})?")


def parse_image_version(text: str) -> FirmwareVersion:
    """Zephyr's image state version text (`4.0.0`, `4.0.0.7`; also `4.0.0+7`)."""
    match = _VERSION_RE.fullmatch(text.strip())
    if match is None:
        quoted = printable(repr(text), FIELD_LIMIT)  # a hub's words: escaped and capped
        raise IdentifierError(f"image version {quoted} is not major.minor.revision[.build]")
    major, minor, revision, build = (int(g) if g else 0 for g in match.groups())
    return FirmwareVersion.from_mcuboot(major, minor, revision, build)


class SmpHubLink(HubLink):
    """`HubLink` over SMP. Owns its SmpClient (and through it the transport)."""

    def __init__(
        self,
        client: SmpClient,
        *,
        options: LinkOptions | None = None,
        name: str | None = None,
    ) -> None:
        self._client = client
        self._options = options or LinkOptions(timeout_s=client.timeout_s)
        self._name = name or client.name
        self._counted: Counter[str] = Counter()  # `retry`, and what callers count
        self._params: tuple[int, int] | None = None
        self._sizing: UploadSizing | None = None
        self._last_upload: UploadResult | None = None

    @property
    def name(self) -> str:
        return self._name

    @property
    def client(self) -> SmpClient:
        return self._client

    @property
    def bytes_dropped(self) -> int:
        return self._client.transport.bytes_dropped

    @property
    def link_errors(self) -> Counter[str]:
        merged: Counter[str] = Counter()
        merged.update(self._client.transport.link_errors)
        merged.update(self._client.link_errors)
        merged.update(self._counted)
        return merged

    def count_error(self, kind: str) -> None:
        self._counted[kind] += 1

    # -- simple commands ---------------------------------------------------------------------

    async def identify(self, *, timeout_s: float | None = None) -> HubIdentity:
        try:
            rsp = await self._call(
                jig_group.IdentityReadRequest(),
                jig_group.IdentityReadResponse,
                timeout_s=timeout_s,
            )
        except SmpError as exc:
            if _not_supported(exc):
                raise NoJigGroup(self._name, "jig identity read (group 64)") from exc
            raise
        try:
            return HubIdentity(
                guid=Guid.from_bytes(bytes(rsp.guid)),
                model=DeviceModel(rsp.manufacturer, rsp.model),
                firmware_version=FirmwareVersion(rsp.firmware_version),
                locked=bool(rsp.locked),
            )
        except IdentifierError as exc:
            raise UnexpectedResponse(self._name, "jig identity read", str(exc)) from exc

    async def unlock(self, master_key: bytes) -> None:
        identity = await self.identify()
        guid = identity.guid.to_bytes()
        key = jig_group.device_key(master_key, guid)
        await self._retrying("jig unlock", lambda: self._unlock_once(key, guid))
        _LOGGER.info("%s: hub %s unlocked", self._name, identity.guid)

    async def _unlock_once(self, key: bytes, guid: bytes) -> None:
        challenge = await self._client.request(
            jig_group.UnlockChallengeRequest(), jig_group.UnlockChallengeResponse
        )
        nonce = bytes(challenge.nonce)
        if len(nonce) != jig_group.NONCE_SIZE:
            raise UnexpectedResponse(
                self._name,
                "jig unlock read",
                f"nonce is {len(nonce)} bytes, not {jig_group.NONCE_SIZE}",
            )
        mac = jig_group.unlock_mac(key, nonce, guid)
        try:
            await self._client.request(
                jig_group.UnlockWriteRequest(mac=mac), jig_group.UnlockWriteResponse
            )
        except SmpError as exc:
            if exc.group == jig_group.JIG_GROUP_ID:
                raise UnlockRefused(
                    self._name,
                    what=exc.what,
                    request_group=exc.request_group,
                    request_command=exc.request_command,
                    group=exc.group,
                    group_rc=exc.group_rc,
                    error_name=exc.error_name,
                    hint="check the manufacturer's master key for this hub",
                ) from exc
            raise

    async def image_state(self) -> list[ImageSlotState]:
        rsp = await self._call(smpimg.ImageStatesReadRequest(), smpimg.ImageStatesReadResponse)
        return self._slots(rsp, "image state read")

    async def mark_test(self, image_hash: bytes) -> list[ImageSlotState]:
        rsp = await self._call(
            smpimg.ImageStatesWriteRequest(hash=bytes(image_hash), confirm=False),
            smpimg.ImageStatesWriteResponse,
        )
        return self._slots(rsp, "image state write (test)")

    async def confirm(self) -> list[ImageSlotState]:
        rsp = await self._call(
            smpimg.ImageStatesWriteRequest(confirm=True), smpimg.ImageStatesWriteResponse
        )
        return self._slots(rsp, "image state write (confirm)")

    async def reset(self) -> None:
        await self._client.request(smpos.ResetWriteRequest(), smpos.ResetWriteResponse)

    async def lock(self) -> None:
        await self._call(jig_group.LockWriteRequest(), jig_group.LockWriteResponse)

    async def echo(self, text: str, *, timeout_s: float | None = None, probe: bool = False) -> str:
        request = smpos.EchoWriteRequest(d=text)
        if probe:
            rsp = await self._client.request(
                request, smpos.EchoWriteResponse, timeout_s, counted=False
            )
        else:
            rsp = await self._call(request, smpos.EchoWriteResponse, timeout_s=timeout_s)
        return rsp.r

    async def params(self) -> tuple[int, int]:
        if self._params is None:
            self._params = await self._read_params()
        return self._params

    async def _read_params(self) -> tuple[int, int]:
        try:
            rsp = await self._call(
                smpos.MCUMgrParametersReadRequest(), smpos.MCUMgrParametersReadResponse
            )
        except SmpError as exc:
            if not _not_supported(exc):
                raise
            # Zephyr leaves CONFIG_MCUMGR_GRP_OS_MCUMGR_PARAMS off by default.
            _LOGGER.info(
                "%s: the hub has no mcumgr_params; taking buf_size %d, buf_count %d",
                self._name,
                self._options.buf_size,
                self._options.buf_count,
            )
            return self._options.buf_size, self._options.buf_count
        if rsp.buf_size < MIN_BUF_SIZE or rsp.buf_count < 1:
            raise UnexpectedResponse(
                self._name,
                "os mcumgr_params read",
                f"buf_size {rsp.buf_size} / buf_count {rsp.buf_count} cannot carry an upload "
                f"(need buf_size >= {MIN_BUF_SIZE}, buf_count >= 1)",
            )
        return rsp.buf_size, rsp.buf_count

    async def close(self) -> None:
        await self._client.close()

    # -- upload ------------------------------------------------------------------------------

    async def upload(
        self, image: bytes | memoryview, progress: ProgressCallback | None = None
    ) -> UploadResult:
        """Pipelined, resumable upload; see `drivers.smp_upload.SmpUpload`.

        The frame size and window the link settles on carry over to its next upload, unless
        this one fails.
        """
        buf_size, buf_count = await self.params()
        limits = self._options.limits
        if self._sizing is None:
            self._sizing = new_sizing(self._client, buf_count, limits)
        upload = SmpUpload(
            self._client,
            image,
            buf_size=buf_size,
            buf_count=buf_count,
            timeout_s=self._options.timeout_s,
            retries=self._options.request_retries,
            progress=progress,
            name=self._name,
            limits=limits,
            sizing=self._sizing,
        )
        try:
            self._last_upload = await upload.run()
        except BaseException:
            # A failed upload's losses say nothing about the hub's buffers (it may have lost
            # power or hung): the next upload starts from the safe sizing again.
            self._sizing = None
            raise
        return self._last_upload

    def sizing_report(self) -> str:
        result = self._last_upload
        if result is None or self._sizing is None:
            return ""
        return f"{result.frame_size}-byte frames, {self._sizing.describe()}"

    def settled(self) -> UploadResult | None:
        return self._last_upload

    # -- helpers -----------------------------------------------------------------------------

    async def _call(
        self,
        request: smpmsg.Request,
        response_type: type[R],
        *,
        timeout_s: float | None = None,
    ) -> R:
        """An idempotent request, retried on timeout or garbled answer."""
        return await self._retrying(
            describe(request), lambda: self._client.request(request, response_type, timeout_s)
        )

    async def _retrying(self, what: str, attempt: Callable[[], Awaitable[T]]) -> T:
        retries = self._options.request_retries
        for n in range(retries + 1):
            try:
                return await attempt()
            except (LinkTimeout, UnexpectedResponse) as exc:
                if n == retries:
                    raise
                self._counted["retry"] += 1
                _LOGGER.debug("%s: %s failed (%s), retrying", self._name, what, exc)
        raise AssertionError("unreachable")  # pragma: no cover

    def _slots(self, rsp: smpimg.ImageStatesReadResponse, what: str) -> list[ImageSlotState]:
        slots: list[ImageSlotState] = []
        for entry in rsp.images:
            try:
                version = parse_image_version(entry.version)
            except IdentifierError as exc:
                raise UnexpectedResponse(self._name, what, str(exc)) from exc
            slots.append(
                ImageSlotState(
                    slot=entry.slot,
                    version=version,
                    hash=bytes(entry.hash or b""),
                    active=bool(entry.active),
                    confirmed=bool(entry.confirmed),
                    pending=bool(entry.pending),
                    bootable=bool(entry.bootable),
                    permanent=bool(entry.permanent),
                    image=entry.image or 0,
                )
            )
        return slots
