"""The SMP server of a simulated hub: the OS, image and jig groups, one request at a time.

`SmpServer.handle_request(frame)` answers one request frame as a hub's application does,
following docs/hub-protocol.md and, where it leaves room, Zephyr 3.4's MCUmgr (docs/simulator.md
lists the choices): os echo, reset and mcumgr_params (here); image state read and write and
upload into the secondary slot of a `HubFlash` (`sim.hub.image_group`); the jig group's
identity, unlock challenge, unlock and lock (here). Answers are encoded by `sim.hub.smp_answers`.
It knows nothing of wires, power or boots: `SimHub` feeds it the frames its wire received and
sends its answers, and a test can feed it frames directly (`tests/drivers/fake_hub.py` serves it
on an in-memory transport).

`RequestBuffers` are the receive buffers requests wait in until the server answered them.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Final

from smp import error as smperr
from smp import header as smpheader
from smp import os_management as smpos

from drivers import jig_group
from drivers.framing import REQUEST_OPS, SmpHeaderFields, parse_header
from jigd.model import DeviceModel, Guid
from sim.faults import FaultInjector, Faults
from sim.hub.flash import HubFlash
from sim.hub.image_group import ImageGroup
from sim.hub.smp_answers import BadRequestError, error, group_error, parse, reply
from sim.timing import Timing

__all__ = ["RequestBuffers", "SmpServer"]

_LOGGER = logging.getLogger(__name__)

_OS: Final = int(smpheader.GroupId.OS_MANAGEMENT)
_IMG: Final = int(smpheader.GroupId.IMAGE_MANAGEMENT)
_JIG: Final = jig_group.JIG_GROUP_ID
_READ: Final = int(smpheader.OP.READ)
_WRITE: Final = int(smpheader.OP.WRITE)
_OS_CMD = smpheader.CommandId.OSManagement
_IMG_CMD = smpheader.CommandId.ImageManagement
_JIG_CMD = jig_group.JigCommand
_MGMT_ERR = smperr.MGMT_ERR
# Commands a locked hub refuses with EACCESSDENIED.
_GUARDED: Final = frozenset(
    {
        (_OS, int(_OS_CMD.RESET), _WRITE),
        (_IMG, int(_IMG_CMD.STATE), _WRITE),
        (_IMG, int(_IMG_CMD.UPLOAD), _WRITE),
    }
)

_Handler = Callable[[bytes, SmpHeaderFields], Awaitable[bytes]]


class RequestBuffers:
    """The SMP transport's `count` receive buffers: a request holds one from its arrival until
    it has been answered; one that arrives while all are held is dropped (`offer` is False)."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.in_use = 0
        self.most_in_use = 0  # the most ever held at once
        self._queue: asyncio.Queue[bytes] = asyncio.Queue()

    def offer(self, frame: bytes) -> bool:
        """Queue `frame` in a free buffer; False (dropped) when none is free."""
        if self.in_use >= self.count:
            return False
        self.in_use += 1
        self.most_in_use = max(self.most_in_use, self.in_use)
        self._queue.put_nowait(frame)
        return True

    async def take(self) -> bytes:
        """The oldest request not yet taken (its buffer stays held until `release`)."""
        return await self._queue.get()

    def release(self) -> None:
        """The request taken last has been answered: its buffer is free."""
        self.in_use -= 1


class SmpServer:
    """One hub's SMP application over its `flash`.

    `device_key` is the key unlock MACs are checked with (the hub never holds its
    manufacturer's master key). `faults`, `image_check` and `on_change` are the image group's
    (`images`, `sim.hub.image_group.ImageGroup`): faults may slow programming or cut the power
    during an upload (`PowerLostError` leaves `handle_request`); `image_check` checks a
    completed upload against its `sha`; `on_change` is called after every chunk programmed.

    RAM state (the unlock nonce, a reset answered but not yet done, and the upload's state on
    an `upload_state="ram"` model) is forgotten by `forget_ram()`.
    """

    def __init__(
        self,
        *,
        guid: Guid,
        model: DeviceModel,
        flash: HubFlash,
        device_key: bytes,
        timing: Timing | None = None,
        faults: FaultInjector | None = None,
        image_check: bool = False,
        name: str | None = None,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.guid = guid
        self.model = model
        self.flash = flash
        self.timing = timing or Timing()
        self.name = name or f"hub {guid}"
        self.images = ImageGroup(
            flash,
            timing=self.timing,
            faults=faults or FaultInjector(Faults()),
            image_check=image_check,
            name=self.name,
            on_change=on_change,
        )
        self._device_key = device_key
        # RAM
        self.reset_requested = False  # a reset was answered; the hub's application does it
        self._nonce: bytes | None = None

        self._handlers: dict[tuple[int, int, int], _Handler] = {
            (_OS, int(_OS_CMD.ECHO), _WRITE): self._echo,
            (_OS, int(_OS_CMD.RESET), _WRITE): self._reset,
            (_IMG, int(_IMG_CMD.STATE), _READ): self.images.state_read,
            (_IMG, int(_IMG_CMD.STATE), _WRITE): self.images.state_write,
            (_IMG, int(_IMG_CMD.UPLOAD), _WRITE): self.images.upload,
            (_JIG, int(_JIG_CMD.IDENTITY), _READ): self._identity,
            (_JIG, int(_JIG_CMD.UNLOCK), _READ): self._unlock_challenge,
            (_JIG, int(_JIG_CMD.UNLOCK), _WRITE): self._unlock,
            (_JIG, int(_JIG_CMD.LOCK), _WRITE): self._lock,
        }
        if self.timing.mcumgr_params:
            # Without it the command does not exist: ENOTSUP, as Zephyr 3.4 answers when built
            # without CONFIG_MCUMGR_GRP_OS_MCUMGR_PARAMS (its default).
            self._handlers[(_OS, int(_OS_CMD.MCUMGR_PARAMETERS), _READ)] = self._mcumgr_params
        self._known_commands = {(g, c) for g, c, _op in self._handlers}

    def forget_ram(self) -> None:
        """Reset or power loss: the nonce, a due reset and (`upload_state="ram"`) the upload's
        state are gone."""
        self._nonce = None
        self.reset_requested = False
        if self.timing.upload_state == "ram" and self.flash.upload is not None:
            _LOGGER.debug("%s: upload state lost with RAM", self.name)
            self.flash.upload = None

    async def handle_request(self, frame: bytes) -> bytes | None:
        """Answer one request frame as the application does (None: no answer is possible)."""
        fields = parse_header(frame)
        if fields is None or fields.op not in REQUEST_OPS:
            # A console frame passes its CRC whatever its header says; without a request
            # header there is nothing to answer.
            _LOGGER.debug("%s: frame without a request header dropped", self.name)
            return None
        key = (fields.group_id, fields.command_id, fields.op)
        handler = self._handlers.get(key)
        if handler is None:
            known = (fields.group_id, fields.command_id) in self._known_commands
            reason = "operation not supported" if known else "unknown command"
            return error(fields, _MGMT_ERR.ENOTSUP, reason=reason)
        if key in _GUARDED and not self.flash.unlocked:
            return error(fields, _MGMT_ERR.EACCESSDENIED, reason="locked")
        hostile = self.images.faults.faults.upload_error_reason
        if hostile is not None and key == (_IMG, int(_IMG_CMD.UPLOAD), _WRITE):
            return error(fields, _MGMT_ERR.EUNKNOWN, reason=hostile)
        try:
            return await handler(frame, fields)
        except BadRequestError as exc:
            _LOGGER.debug("%s: malformed request: %s", self.name, exc)
            return error(fields, _MGMT_ERR.EINVAL, reason="malformed request")

    # ---- os group ---------------------------------------------------------------------------

    async def _echo(self, frame: bytes, fields: SmpHeaderFields) -> bytes:
        request = parse(smpos.EchoWriteRequest, frame)
        return reply(request, smpos.EchoWriteResponse, r=request.d)

    async def _reset(self, frame: bytes, fields: SmpHeaderFields) -> bytes:
        request = parse(smpos.ResetWriteRequest, frame)
        self.reset_requested = True
        return reply(request, smpos.ResetWriteResponse)

    async def _mcumgr_params(self, frame: bytes, fields: SmpHeaderFields) -> bytes:
        request = parse(smpos.MCUMgrParametersReadRequest, frame)
        return reply(
            request,
            smpos.MCUMgrParametersReadResponse,
            buf_size=self.timing.buf_size,
            buf_count=self.timing.buf_count,
        )

    # ---- jig group ----------------------------------------------------------------------------

    async def _identity(self, frame: bytes, fields: SmpHeaderFields) -> bytes:
        request = parse(jig_group.IdentityReadRequest, frame)
        version = self.flash.primary.version
        return reply(
            request,
            jig_group.IdentityReadResponse,
            guid=self.guid.to_bytes(),
            manufacturer=self.model.manufacturer,
            model=self.model.model,
            firmware_version=version.value if version is not None else 0,
            locked=not self.flash.unlocked,
        )

    async def _unlock_challenge(self, frame: bytes, fields: SmpHeaderFields) -> bytes:
        request = parse(jig_group.UnlockChallengeRequest, frame)
        self._nonce = secrets.token_bytes(jig_group.NONCE_SIZE)
        return reply(request, jig_group.UnlockChallengeResponse, nonce=self._nonce)

    async def _unlock(self, frame: bytes, fields: SmpHeaderFields) -> bytes:
        request = parse(jig_group.UnlockWriteRequest, frame)
        nonce, self._nonce = self._nonce, None  # a nonce is good for one unlock write
        if nonce is None:
            return group_error(fields, jig_group.JigMgmtErr.NO_CHALLENGE)
        expected = jig_group.unlock_mac(self._device_key, nonce, self.guid.to_bytes())
        if not hmac.compare_digest(expected, request.mac):
            _LOGGER.info("%s: unlock refused: bad MAC", self.name)
            return group_error(fields, jig_group.JigMgmtErr.BAD_MAC)
        self.flash.unlocked = True
        _LOGGER.info("%s: unlocked", self.name)
        return reply(request, jig_group.UnlockWriteResponse)

    async def _lock(self, frame: bytes, fields: SmpHeaderFields) -> bytes:
        request = parse(jig_group.LockWriteRequest, frame)
        self.flash.unlocked = False
        _LOGGER.info("%s: locked", self.name)
        return reply(request, jig_group.LockWriteResponse)
