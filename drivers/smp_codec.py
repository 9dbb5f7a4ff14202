"""Pieces of SMP encoding shared by the hub client and the simulated hub.

Requests and successful responses are the `smp` package's message models. Error responses are
built here because their header (op, command) mirrors the request they answer, which the
package's error models cannot know on their own.
"""

from __future__ import annotations

import cbor2
from smp import header as smpheader

__all__ = ["encode_error", "response_op"]


def response_op(request_op: smpheader.OP) -> smpheader.OP:
    """READ -> READ_RSP, WRITE -> WRITE_RSP."""
    if request_op == smpheader.OP.READ:
        return smpheader.OP.READ_RSP
    if request_op == smpheader.OP.WRITE:
        return smpheader.OP.WRITE_RSP
    raise ValueError(f"SMP op {request_op!r} is not a request")


def encode_error(request: smpheader.Header, rc: int, *, group_rc: bool, reason: str = "") -> bytes:
    """An SMP error response to `request`.

    `group_rc` False gives a version-1 style `{"rc": rc}` (an MGMT_ERR code); True gives the
    version-2 `{"err": {"group": g, "rc": rc}}` with a group-specific code.
    """
    body: dict[str, object]
    if group_rc:
        body = {"err": {"group": int(request.group_id), "rc": rc}}
    else:
        body = {"rc": rc}
        if reason:
            body["rsn"] = reason
    payload = cbor2.dumps(body, canonical=True)
    head = smpheader.Header(
        op=response_op(request.op),
        version=request.version,
        flags=smpheader.Flag(0),
        length=len(payload),
        group_id=request.group_id,
        sequence=request.sequence,
        command_id=request.command_id,
    )
    return bytes(head) + payload
