# ruff: noqa: N818 - names say what happened (LinkClosed, AccessDenied), as the design uses them
"""Errors of the hardware-access layer, one base per layer, each carrying the data a person needs.

- `LinkError`: the byte link to a hub (port missing, closed, silent).
- `ProtocolError`: the hub answered, but not as asked (SMP error, undecodable reply, refusal).
- `RigError`: the rig controller board (its own line protocol on its own port).
- `DriverError`: the root of all of them, plus driver lookup failures.

Every error names the port (or the slot label it was given) and has a short `code` that the
daemon records as a failure code. Messages never contain key material, and never a raw
character from the hub: what a hub or a rig controller says (an SMP error's `rsn`, an `ERR`
reason) is escaped and capped (`FIELD_LIMIT`), and every message as a whole is printable and
at most `MESSAGE_LIMIT` characters (drivers/untrusted.py), so it is safe to log, store and show.
"""

from __future__ import annotations

from typing import ClassVar

from drivers.untrusted import FIELD_LIMIT, printable

__all__ = [
    "AccessDenied",
    "BootTimeout",
    "DeviceDisconnected",
    "DriverError",
    "DriverLoadFailed",
    "ImageRejected",
    "LinkClosed",
    "LinkError",
    "LinkTimeout",
    "NoJigGroup",
    "PortOpenFailed",
    "ProtocolError",
    "RigClosed",
    "RigCommandFailed",
    "RigError",
    "RigProtocolError",
    "RigTimeout",
    "SequenceExhausted",
    "SmpError",
    "UnexpectedResponse",
    "UnknownDriver",
    "UnlockRefused",
    "UnsupportedTransport",
    "UploadStalled",
]


class DriverError(Exception):
    """Root of every error raised by `drivers`."""

    code: ClassVar[str] = "driver_error"

    def __init__(self, port: str, message: str) -> None:
        super().__init__(printable(f"{port}: {message}"))
        self.port = port


# --- link layer -----------------------------------------------------------------------------


class LinkError(DriverError):
    """The byte link to a hub failed; retrying after a power cycle or re-plug may help."""

    code: ClassVar[str] = "link_error"


class PortOpenFailed(LinkError):
    """The port could not be opened (missing device, permissions, refused connection)."""

    code: ClassVar[str] = "port_open_failed"

    def __init__(self, port: str, url: str, detail: str) -> None:
        super().__init__(
            port, f"cannot open {url}: {detail}; check the cable, the udev symlink and permissions"
        )
        self.url = url
        self.detail = detail


class LinkClosed(LinkError):
    """The link closed (by us, by the peer or by a port error) while a request was pending."""

    code: ClassVar[str] = "link_closed"

    def __init__(self, port: str, reason: str) -> None:
        super().__init__(port, f"link closed: {reason}")
        self.reason = reason

    def waiting_for(self, port: str, what: str) -> LinkClosed:
        """The same failure as a pending request sees it (`what` it was waiting for)."""
        return LinkClosed(port, f"{self.reason} (while waiting for {what})")


class DeviceDisconnected(LinkClosed):
    """A hot-plugged link's device went away (USB cable pulled, slot unpowered: ENODEV).

    The link is dead for good, even if the device comes back: open a new one.
    """

    code: ClassVar[str] = "device_disconnected"

    def __init__(self, port: str, device: str, detail: str) -> None:
        super().__init__(
            port,
            f"{device} disconnected ({detail}); check the cable and the slot's power, the link "
            "is opened again when the hub is back",
        )
        self.device = device
        self.detail = detail

    def waiting_for(self, port: str, what: str) -> DeviceDisconnected:
        return DeviceDisconnected(port, self.device, f"{self.detail}, while waiting for {what}")


class LinkTimeout(LinkError):
    """No answer within the timeout, after `attempts` tries."""

    code: ClassVar[str] = "link_timeout"

    def __init__(self, port: str, what: str, timeout_s: float, attempts: int = 1) -> None:
        tries = f" ({attempts} attempts)" if attempts > 1 else ""
        super().__init__(port, f"no answer to {what} within {timeout_s:.3g} s{tries}")
        self.what = what
        self.timeout_s = timeout_s
        self.attempts = attempts


class BootTimeout(LinkTimeout):
    """The hub did not boot: no answer to `os echo` within its boot limit after `after` (a
    power-on, a reset). An expected silence until the limit; a fault once it passes."""

    code: ClassVar[str] = "no_boot"

    def __init__(self, port: str, timeout_s: float, after: str) -> None:
        LinkError.__init__(
            self,
            port,
            f"the hub did not boot: no answer to echo within {timeout_s:.3g} s of {after}",
        )
        self.what = "echo (boot)"
        self.timeout_s = timeout_s
        self.attempts = 1
        self.after = after


# --- protocol layer -------------------------------------------------------------------------


class ProtocolError(DriverError):
    """The hub answered, but the answer was an error or not what the request asked for."""

    code: ClassVar[str] = "protocol_error"


class UnexpectedResponse(ProtocolError):
    """A reply that does not decode as the expected response, or carries impossible values."""

    code: ClassVar[str] = "unexpected_response"

    def __init__(self, port: str, what: str, detail: str) -> None:
        super().__init__(port, f"unexpected answer to {what}: {detail}")
        self.what = what
        self.detail = detail


class SequenceExhausted(ProtocolError):
    """All 256 SMP sequence numbers are in flight: the caller sent far more than the hub takes."""

    code: ClassVar[str] = "sequence_exhausted"

    def __init__(self, port: str) -> None:
        super().__init__(port, "all 256 SMP sequence numbers are awaiting answers")


class SmpError(ProtocolError):
    """The hub answered a request with an SMP error response.

    Version 1 (`{rc, rsn}`) sets `rc` (an MGMT_ERR code) and maybe `reason`; version 2
    (`{err: {group, rc}}`) sets `group` and `group_rc` (a code of that group).
    `request_group`/`request_command` say which request it answered.
    """

    code: ClassVar[str] = "smp_error"

    def __init__(
        self,
        port: str,
        *,
        what: str,
        request_group: int,
        request_command: int,
        rc: int | None = None,
        group: int | None = None,
        group_rc: int | None = None,
        error_name: str = "",
        reason: str | None = None,
        hint: str = "",
    ) -> None:
        if group_rc is not None:
            detail = f"group {group} error {error_name or group_rc} ({group_rc})"
        else:
            detail = f"error {error_name or rc} ({rc})"
        if reason is not None:
            reason = printable(reason, FIELD_LIMIT)
        text = f"hub answered {what} with {detail}"
        if reason:
            text += f": {reason}"
        if hint:
            text += f"; {hint}"
        super().__init__(port, text)
        self.what = what
        self.request_group = request_group
        self.request_command = request_command
        self.rc = rc
        self.group = group
        self.group_rc = group_rc
        self.error_name = error_name
        self.reason = reason


class AccessDenied(SmpError):
    """EACCESSDENIED: the hub is locked; unlock it before upload, state write or reset."""

    code: ClassVar[str] = "access_denied"


class UnlockRefused(SmpError):
    """The hub refused the unlock MAC (wrong master key, stale nonce, no challenge)."""

    code: ClassVar[str] = "unlock_refused"


class NoJigGroup(ProtocolError):
    """The hub speaks SMP but has no jig group (64): a stock MCUmgr device, not a jig hub.

    Without the group a hub can be neither identified nor unlocked, so jigd cannot flash it:
    docs/hub-requirements.md says what a hub must implement.
    """

    code: ClassVar[str] = "no_jig_group"

    def __init__(self, port: str, what: str) -> None:
        super().__init__(
            port,
            f"the hub answered {what} with 'not supported': it speaks SMP but has no jig group "
            "(64), so it cannot be identified or unlocked; set it aside (see "
            "docs/hub-requirements.md)",
        )
        self.what = what


class ImageRejected(ProtocolError):
    """The hub refused the uploaded image (hash mismatch, too large, ...)."""

    code: ClassVar[str] = "image_rejected"

    def __init__(self, port: str, reason: str, *, offset: int | None = None) -> None:
        where = f" at offset {offset}" if offset is not None else ""
        super().__init__(port, f"hub rejected the image{where}: {reason}")
        self.reason = reason
        self.offset = offset


class UploadStalled(ProtocolError):
    """The hub kept answering offsets that made no progress."""

    code: ClassVar[str] = "upload_stalled"

    def __init__(self, port: str, offset: int, total: int, rounds: int) -> None:
        super().__init__(
            port,
            f"upload made no progress past offset {offset} of {total} in {rounds} rounds; "
            "power-cycle the hub and retry",
        )
        self.offset = offset
        self.total = total
        self.rounds = rounds


# --- drivers --------------------------------------------------------------------------------


class UnsupportedTransport(DriverError):
    """The slot asks for a transport this driver does not speak."""

    code: ClassVar[str] = "unsupported_transport"


class UnknownDriver(DriverError):
    """No driver of that name in the `jigd.drivers` entry-point group."""

    code: ClassVar[str] = "unknown_driver"

    def __init__(self, name: str, available: list[str]) -> None:
        known = ", ".join(available) if available else "none"
        super().__init__(
            "driver registry",
            f"no hub driver named {name!r} (entry-point group 'jigd.drivers'); available: "
            f"{known}; fix the slot's `driver` key or install the package that provides it",
        )
        self.name = name
        self.available = available


class DriverLoadFailed(DriverError):
    """A driver's entry point exists but does not load to a callable."""

    code: ClassVar[str] = "driver_load_failed"

    def __init__(self, name: str, target: str, detail: str) -> None:
        super().__init__(
            "driver registry", f"hub driver {name!r} ({target}) fails to load: {detail}"
        )
        self.name = name
        self.target = target


# --- rig controller -------------------------------------------------------------------------


class RigError(DriverError):
    """The rig controller board failed or refused a command."""

    code: ClassVar[str] = "rig_error"


class RigCommandFailed(RigError):
    """The controller answered `ERR <reason>`."""

    code: ClassVar[str] = "rig_command_failed"

    def __init__(self, port: str, command: str, reason: str) -> None:
        reason = printable(reason, FIELD_LIMIT)
        super().__init__(port, f"rig controller refused {command!r}: {reason}")
        self.command = command
        self.reason = reason


class RigTimeout(RigError):
    """The controller did not answer a command in time."""

    code: ClassVar[str] = "rig_timeout"

    def __init__(self, port: str, command: str, timeout_s: float) -> None:
        super().__init__(
            port, f"rig controller did not answer {command!r} within {timeout_s:.3g} s"
        )
        self.command = command
        self.timeout_s = timeout_s


class RigClosed(RigError):
    """The controller's port closed or could not be opened."""

    code: ClassVar[str] = "rig_closed"

    def __init__(self, port: str, reason: str) -> None:
        super().__init__(port, f"rig controller link closed: {reason}")
        self.reason = reason


class RigProtocolError(RigError):
    """The controller answered something that is not a valid reply to the command."""

    code: ClassVar[str] = "rig_protocol_error"

    def __init__(self, port: str, command: str, reply: str) -> None:
        reply = printable(reply, FIELD_LIMIT)
        super().__init__(port, f"rig controller answered {command!r} with '{reply}'")
        self.command = command
        self.reply = reply
