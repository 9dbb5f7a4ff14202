"""SMP protocol layer: requests out, responses matched back by sequence number.

Requests and responses are the `smp` package's message models. The client allocates the 8-bit
sequence numbers itself (never one still awaiting an answer), registers the waiter in
`dict[seq, Future]` before the frame is sent, and removes it when the future is done, whatever
ended it (answer, error, timeout, cancellation, link loss). A reply nobody waits for is logged at
debug and counted, never raised. Error responses become typed `SmpError`s.

`submit()` sends without waiting and returns the future, so an upload can keep several requests
in flight; `request()` is submit-and-await.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import cbor2
from smp import error as smperror
from smp import header as smpheader
from smp import image_management as smpimg
from smp import message as smpmsg
from smp import os_management as smpos
from smp.exceptions import SMPException

from drivers import jig_group
from drivers.errors import (
    AccessDenied,
    LinkClosed,
    LinkError,
    LinkTimeout,
    ProtocolError,
    SequenceExhausted,
    SmpError,
    UnexpectedResponse,
)
from drivers.framing import SMP_HEADER_SIZE, parse_header
from drivers.transport import FrameTransport

__all__ = ["DEFAULT_TIMEOUT_S", "SmpClient", "describe"]

_LOGGER = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S: Final = 3.0
_SEQUENCES: Final = 256

R = TypeVar("R", bound=smpmsg.Response)

_ERROR_MODELS: Final[dict[int, tuple[type[smperror.ErrorV1], type[smperror.ErrorV2[Any]]]]] = {
    int(smpheader.GroupId.OS_MANAGEMENT): (
        smpos.OSManagementErrorV1,
        smpos.OSManagementErrorV2,
    ),
    int(smpheader.GroupId.IMAGE_MANAGEMENT): (
        smpimg.ImageManagementErrorV1,
        smpimg.ImageManagementErrorV2,
    ),
    jig_group.JIG_GROUP_ID: (jig_group.JigErrorV1, jig_group.JigErrorV2),
}

_GROUP_ERROR_ENUMS: Final[dict[int, type[Any]]] = {
    int(smpheader.GroupId.OS_MANAGEMENT): smpos.OS_MGMT_RET_RC,
    int(smpheader.GroupId.IMAGE_MANAGEMENT): smpimg.IMG_MGMT_ERR,
    jig_group.JIG_GROUP_ID: jig_group.JigMgmtErr,
}

_NAMES: Final[dict[tuple[int, int], str]] = {
    (0, 0): "os echo",
    (0, 5): "os reset",
    (0, 6): "os mcumgr_params",
    (1, 0): "image state",
    (1, 1): "image upload",
    (jig_group.JIG_GROUP_ID, 0): "jig identity",
    (jig_group.JIG_GROUP_ID, 1): "jig unlock",
    (jig_group.JIG_GROUP_ID, 2): "jig lock",
}


def describe(request: smpmsg.Request) -> str:
    """A short human name for a request, e.g. `image upload write`."""
    head = request.header
    verb = "read" if head.op == smpheader.OP.READ else "write"
    name = _NAMES.get((int(head.group_id), int(head.command_id)))
    if name is None:
        name = f"SMP group {int(head.group_id)} command {int(head.command_id)}"
    return f"{name} {verb}"


def _enum_name(enum_type: type[Any] | None, value: int) -> str:
    if enum_type is None:
        return ""
    try:
        return str(enum_type(value).name)
    except ValueError:
        return ""


@dataclass(slots=True)
class _Pending:
    future: asyncio.Future[Any]
    response_type: type[smpmsg.Response]
    group: int
    command: int
    what: str
    timer: asyncio.TimerHandle | None = None
    counted: bool = True  # False for a probe: its silence is expected, not a link error


class SmpClient:
    """SMP requests over a `FrameTransport`, matched to responses by sequence number.

    The client becomes the transport's listener and owns it: `close()` closes the transport.
    Counters in `link_errors`: `timeout`, `unsolicited` (reply with no waiter, or late),
    `undecodable` (a frame that is not an SMP response). A probe (`counted=False`, the polls
    of a boot wait) counts neither its timeout nor its late reply: a booting hub is silent.
    """

    def __init__(
        self,
        transport: FrameTransport,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        name: str | None = None,
    ) -> None:
        self._transport = transport
        self._timeout_s = timeout_s
        self._name = name or transport.name
        self._pending: dict[int, _Pending] = {}
        self._next_seq = 0
        self._closed: LinkError | None = None
        self._link_errors: Counter[str] = Counter()
        self._probes_expired: set[int] = set()  # sequences of probes that went unanswered
        transport.set_listener(self)

    @property
    def name(self) -> str:
        return self._name

    @property
    def transport(self) -> FrameTransport:
        return self._transport

    @property
    def timeout_s(self) -> float:
        return self._timeout_s

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    @property
    def is_closed(self) -> bool:
        return self._closed is not None or self._transport.is_closed

    @property
    def link_errors(self) -> Counter[str]:
        return self._link_errors

    async def request(
        self,
        request: smpmsg.Request,
        response_type: type[R],
        timeout_s: float | None = None,
        *,
        what: str | None = None,
        counted: bool = True,
    ) -> R:
        """Send `request` and wait for its response; errors come back as exceptions.

        Raises SmpError (AccessDenied, ...) for an error response, UnexpectedResponse for a
        reply that does not decode, LinkTimeout, LinkClosed. `counted=False`: a probe, whose
        timeout is no link error.
        """
        return await self.submit(request, response_type, timeout_s, what=what, counted=counted)

    def submit(
        self,
        request: smpmsg.Request,
        response_type: type[R],
        timeout_s: float | None = None,
        *,
        what: str | None = None,
        counted: bool = True,
    ) -> asyncio.Future[R]:
        """Send `request` now and return the future of its response, without waiting.

        The request's own sequence number is replaced by one the client allocates. The future
        always completes: with the response, a typed error, or LinkTimeout after `timeout_s`.
        Cancelling it forgets the request (a later reply is counted as unsolicited).
        """
        closed = self._closed
        if isinstance(closed, LinkClosed):  # the same kind: a pulled USB cable stays one
            raise closed.waiting_for(self._name, what or describe(request))
        if closed is not None:
            raise LinkClosed(self._name, str(closed))
        timeout = self._timeout_s if timeout_s is None else timeout_s
        seq = self._allocate_sequence()
        head = dataclasses.replace(request.header, sequence=seq)
        frame = bytes(head) + request.BYTES[SMP_HEADER_SIZE:]
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        pending = _Pending(
            future=future,
            response_type=response_type,
            group=int(head.group_id),
            command=int(head.command_id),
            what=what or describe(request),
            counted=counted,
        )
        # Registered before sending, no await in between; removed when the future is done.
        self._pending[seq] = pending
        future.add_done_callback(functools.partial(self._forget, seq, pending))
        pending.timer = loop.call_later(timeout, self._expire, seq, pending, timeout)
        try:
            self._transport.send(frame)
        except LinkError:
            future.cancel()
            raise
        return future

    async def close(self) -> None:
        """Close the transport; every request still waiting fails with LinkClosed."""
        await self._transport.close()
        self._fail_all(LinkClosed(self._name, "closed by jigd"))

    # -- FrameListener -----------------------------------------------------------------------

    def frame_received(self, frame: bytes) -> None:
        head = parse_header(frame)
        if head is None or head.op not in (smpheader.OP.READ_RSP, smpheader.OP.WRITE_RSP):
            self._link_errors["undecodable"] += 1
            _LOGGER.debug("%s: ignored a frame that is not an SMP response", self._name)
            return
        pending = self._pending.get(head.sequence)
        # The op is not compared: the `smp` package's ImageStatesWriteResponse (a subclass of
        # the read response) goes out as READ_RSP, so hubs built on it answer a write that way.
        if (
            pending is None
            or pending.future.done()
            or pending.group != head.group_id
            or pending.command != head.command_id
        ):
            if pending is None and head.sequence in self._probes_expired:
                self._probes_expired.discard(head.sequence)
                _LOGGER.debug("%s: late answer to a probe, seq %d", self._name, head.sequence)
                return
            self._link_errors["unsolicited"] += 1
            _LOGGER.debug(
                "%s: unsolicited or late reply seq %d group %d command %d",
                self._name,
                head.sequence,
                head.group_id,
                head.command_id,
            )
            return
        try:
            response = self._decode(frame, pending)
        except ProtocolError as exc:
            pending.future.set_exception(exc)
        else:
            pending.future.set_result(response)

    def connection_lost(self, error: LinkError) -> None:
        self._fail_all(error)

    # -- internals ---------------------------------------------------------------------------

    def _allocate_sequence(self) -> int:
        for _ in range(_SEQUENCES):
            seq = self._next_seq
            self._next_seq = (seq + 1) % _SEQUENCES
            if seq not in self._pending:
                self._probes_expired.discard(seq)
                return seq
        raise SequenceExhausted(self._name)

    def _forget(self, seq: int, pending: _Pending, future: asyncio.Future[Any]) -> None:
        if self._pending.get(seq) is pending:
            del self._pending[seq]
        if future.cancelled() and not pending.counted:
            self._probes_expired.add(seq)  # a boot wait ended while its probe was out
        if pending.timer is not None:
            pending.timer.cancel()
            pending.timer = None

    def _expire(self, seq: int, pending: _Pending, timeout_s: float) -> None:
        pending.timer = None
        if not pending.future.done():
            if pending.counted:
                self._link_errors["timeout"] += 1
            else:
                self._probes_expired.add(seq)
            _LOGGER.debug("%s: %s timed out after %.3g s", self._name, pending.what, timeout_s)
            pending.future.set_exception(LinkTimeout(self._name, pending.what, timeout_s))

    def _fail_all(self, error: LinkError) -> None:
        if self._closed is None:
            self._closed = error
        for pending in list(self._pending.values()):
            if not pending.future.done():
                # The same kind of error (a pulled USB cable stays DeviceDisconnected).
                exc = (
                    error.waiting_for(self._name, pending.what)
                    if isinstance(error, LinkClosed)
                    else LinkClosed(self._name, f"{error} (while waiting for {pending.what})")
                )
                exc.__cause__ = error
                pending.future.set_exception(exc)

    def _decode(self, frame: bytes, pending: _Pending) -> smpmsg.Response:
        """The response model for `frame`, or a typed error."""
        try:
            body = cbor2.loads(frame[SMP_HEADER_SIZE:])
        except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError, RecursionError) as exc:
            raise UnexpectedResponse(self._name, pending.what, "body is not CBOR") from exc
        if not isinstance(body, dict):
            raise UnexpectedResponse(self._name, pending.what, "body is not a CBOR map")
        if "err" in body:
            raise self._error_v2(frame, body, pending)
        if body.get("rc", 0) != 0:
            raise self._error_v1(frame, body, pending)
        try:
            return pending.response_type.loads(frame)
        except (ValueError, TypeError, SMPException) as exc:
            detail = _short(exc)
            raise UnexpectedResponse(
                self._name, pending.what, f"not a {pending.response_type.__name__}: {detail}"
            ) from exc

    def _error_v1(self, frame: bytes, body: dict[Any, Any], pending: _Pending) -> ProtocolError:
        models = _ERROR_MODELS.get(pending.group)
        rc: object = body.get("rc")
        reason: object = body.get("rsn")
        if models is not None:
            try:
                parsed = models[0].loads(frame)
            except (ValueError, TypeError, SMPException):
                pass  # a code outside MGMT_ERR: keep the raw values checked below
            else:
                rc, reason = int(parsed.rc), parsed.rsn
        if not isinstance(rc, int) or isinstance(rc, bool):
            return UnexpectedResponse(self._name, pending.what, f"error rc {rc!r} is not a number")
        name = _enum_name(smperror.MGMT_ERR, rc)
        error_type = AccessDenied if rc == smperror.MGMT_ERR.EACCESSDENIED else SmpError
        hint = "the hub is locked: unlock it first" if error_type is AccessDenied else ""
        return error_type(
            self._name,
            what=pending.what,
            request_group=pending.group,
            request_command=pending.command,
            rc=rc,
            error_name=name,
            reason=reason if isinstance(reason, str) else None,
            hint=hint,
        )

    def _error_v2(self, frame: bytes, body: dict[Any, Any], pending: _Pending) -> ProtocolError:
        models = _ERROR_MODELS.get(pending.group)
        err = body.get("err")
        group: object = err.get("group") if isinstance(err, dict) else None
        rc: object = err.get("rc") if isinstance(err, dict) else None
        if models is not None:
            try:
                parsed = models[1].loads(frame)
            except (ValueError, TypeError, SMPException):
                pass  # a code this group's enum does not know: keep the raw values
            else:
                group, rc = int(parsed.err.group), int(parsed.err.rc)
        if (
            not isinstance(group, int)
            or not isinstance(rc, int)
            or isinstance(group, bool)
            or isinstance(rc, bool)
        ):
            return UnexpectedResponse(
                self._name, pending.what, f"error map {err!r} lacks numeric group and rc"
            )
        return SmpError(
            self._name,
            what=pending.what,
            request_group=pending.group,
            request_command=pending.command,
            group=group,
            group_rc=rc,
            error_name=_enum_name(_GROUP_ERROR_ENUMS.get(group), rc),
        )


def _short(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
