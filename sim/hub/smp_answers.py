"""How the simulated hub's SMP server answers: requests parsed, responses and errors encoded.

Shared by the groups (`sim.hub.smp_server`, `sim.hub.image_group`). An answer mirrors its
request's header (sequence, version); errors are `drivers.smp_codec.encode_error`'s, and a
group error to a version-1 request is the legacy MGMT_ERR code Zephyr 3.4 translates it to.
"""

from __future__ import annotations

import struct
from typing import Any, Final, TypeVar

import cbor2
from smp import error as smperr
from smp import header as smpheader
from smp import image_management as smpimg
from smp import message as smpmsg
from smp.exceptions import SMPException

from drivers import jig_group
from drivers.framing import SmpHeaderFields
from drivers.smp_codec import encode_error

__all__ = ["BadRequestError", "error", "group_error", "parse", "reply"]

_IMG: Final = int(smpheader.GroupId.IMAGE_MANAGEMENT)
_MGMT_ERR = smperr.MGMT_ERR
_IMG_ERR = smpimg.IMG_MGMT_ERR
_SMP_HEADER: Final = struct.Struct("!BBHHBB")
_SMP_V1: Final = int(smpheader.Version.V1)  # the original protocol: errors are {rc} only
# Zephyr 3.4 answers a version-1 request's group error with the legacy MGMT_ERR code its group
# translates it to: img_mgmt.c's img_mgmt_translate_error_code (any other image code is
# EUNKNOWN) and the jig group's own (the Zephyr peer's app/jig_group).
_V1_IMAGE_ERRORS: Final[dict[int, int]] = {
    _IMG_ERR.NO_IMAGE: _MGMT_ERR.ENOENT,
    _IMG_ERR.NO_TLVS: _MGMT_ERR.ENOENT,
    _IMG_ERR.NO_FREE_SLOT: _MGMT_ERR.EBADSTATE,
    _IMG_ERR.CURRENT_VERSION_IS_NEWER: _MGMT_ERR.EBADSTATE,
    _IMG_ERR.IMAGE_ALREADY_PENDING: _MGMT_ERR.EBADSTATE,
    _IMG_ERR.NO_FREE_MEMORY: _MGMT_ERR.ENOMEM,
    _IMG_ERR.INVALID_SLOT: _MGMT_ERR.EINVAL,
    _IMG_ERR.INVALID_PAGE_OFFSET: _MGMT_ERR.EINVAL,
    _IMG_ERR.INVALID_OFFSET: _MGMT_ERR.EINVAL,
    _IMG_ERR.INVALID_LENGTH: _MGMT_ERR.EINVAL,
    _IMG_ERR.INVALID_IMAGE_HEADER: _MGMT_ERR.EINVAL,
    _IMG_ERR.INVALID_HASH: _MGMT_ERR.EINVAL,
    _IMG_ERR.INVALID_FLASH_ADDRESS: _MGMT_ERR.EINVAL,
}
_V1_JIG_ERRORS: Final[dict[int, int]] = {
    jig_group.JigMgmtErr.BAD_MAC: _MGMT_ERR.EACCESSDENIED,
    jig_group.JigMgmtErr.NO_CHALLENGE: _MGMT_ERR.EBADSTATE,
}
_M = TypeVar("_M", bound=smpmsg.Request)


class BadRequestError(Exception):
    """A request that does not parse as its command's message: answered with EINVAL."""


def error(fields: SmpHeaderFields, rc: int, *, group_rc: bool = False, reason: str = "") -> bytes:
    """The error answer `rc` (an MGMT_ERR code, or a group's with `group_rc`) to the request
    whose header is `fields`."""
    try:
        head = smpheader.Header(
            op=smpheader.OP(fields.op),
            version=smpheader.Version(fields.version),
            flags=smpheader.Flag(0),
            length=fields.length,
            group_id=fields.group_id,
            sequence=fields.sequence,
            command_id=fields.command_id,
        )
    except ValueError:
        # The smp package refuses command ids its own groups do not define, so an error
        # for such a command is built here, as encode_error would build it.
        body = cbor2.dumps({"rc": int(rc)}, canonical=True)
        packed = _SMP_HEADER.pack(
            (fields.version << 3) | (fields.op + 1),
            0,
            len(body),
            fields.group_id,
            fields.sequence,
            fields.command_id,
        )
        return packed + body
    return encode_error(head, int(rc), group_rc=group_rc, reason=reason)


def group_error(fields: SmpHeaderFields, rc: int) -> bytes:
    """A group error: `{err: {group, rc}}` to a version-2 request; to a version-1 request
    the MGMT_ERR code its group translates it to, as Zephyr 3.4 answers."""
    if fields.version != _SMP_V1:
        return error(fields, rc, group_rc=True)
    table = _V1_IMAGE_ERRORS if fields.group_id == _IMG else _V1_JIG_ERRORS
    return error(fields, table.get(rc, _MGMT_ERR.EUNKNOWN))


def parse(model: type[_M], frame: bytes) -> _M:
    """The request `frame` as its command's message; BadRequestError if it is not one."""
    try:
        return model.loads(frame)
    except (ValueError, TypeError, cbor2.CBORDecodeError, SMPException) as exc:
        raise BadRequestError(f"{model.__name__}: {exc}") from exc


def reply(request: smpmsg.Request, response_type: type[smpmsg.Response], **fields: Any) -> bytes:
    """The answer to `request` holding `fields`, with its sequence and protocol version."""
    response = response_type(
        sequence=request.header.sequence,
        version=request.header.version,
        **fields,
    )
    return bytes(response)
