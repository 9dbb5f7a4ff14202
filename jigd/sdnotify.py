"""systemd's service notification protocol (sd_notify(3)), spoken without libsystemd.

A service started with `Type=notify` finds a Unix datagram socket in `$NOTIFY_SOCKET` (a path, or
`@name` in the abstract namespace) and sends it newline-separated `KEY=value` assignments:
`READY=1`, `STATUS=...`, `STOPPING=1`, `WATCHDOG=1`. When `WatchdogSec=` is set, systemd also
passes `$WATCHDOG_USEC` (and `$WATCHDOG_PID`) and restarts the service when the pings stop.

Written by hand because the protocol is one `sendto()` and libsystemd's Python binding would be
a compiled dependency for it. Outside systemd (no `$NOTIFY_SOCKET`) every call does nothing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Mapping
from typing import Final

__all__ = ["Notifier", "watchdog_interval_s"]

_LOGGER = logging.getLogger(__name__)

WATCHDOG_PINGS_PER_PERIOD: Final = 2  # sd_watchdog_enabled(3): ping at half the period or more


def _address(value: str) -> str | None:
    """The socket address in `$NOTIFY_SOCKET`: a path, or `@name` for the abstract namespace."""
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None  # vsock: and other transports are not for a service on a station


def watchdog_interval_s(environ: Mapping[str, str] | None = None) -> float | None:
    """The watchdog period systemd asks this process to keep, or None when there is none.

    `$WATCHDOG_PID`, when set, must be this process: a child started with the variable
    inherited is not the one systemd watches.
    """
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 1_000_000 if value > 0 else None


class Notifier:
    """Sends notifications to the service manager; a no-op when not started by one."""

    def __init__(self, notify_socket: str | None) -> None:
        self._address = None if not notify_socket else _address(notify_socket)
        if notify_socket and self._address is None:
            _LOGGER.warning("NOTIFY_SOCKET=%r is not a Unix socket address; ignored", notify_socket)
        self._sock: socket.socket | None = None
        self._failed = False

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        env = os.environ if environ is None else environ
        return cls(env.get("NOTIFY_SOCKET"))

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, *assignments: str) -> bool:
        """Send `KEY=value` assignments in one datagram; True when it was sent.

        The socket never blocks: a manager that is not reading costs a dropped message (logged
        once), never a stalled event loop.
        """
        if self._address is None:
            return False
        message = "\n".join(a.replace("\n", " ") for a in assignments).encode("utf-8")
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto(message, self._address)
        except OSError as exc:
            if not self._failed:
                _LOGGER.warning("cannot notify the service manager: %s", exc)
            self._failed = True
            return False
        self._failed = False
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")

    def stopping(self, status: str | None = None) -> bool:
        return self.notify("STOPPING=1", *([f"STATUS={status}"] if status else []))

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    async def watchdog_loop(self, interval_s: float | None) -> None:
        """Ping every `interval_s / 2` until cancelled; returns at once without a watchdog.

        It runs on the event loop on purpose: a loop held by a blocking call or a busy callback
        stops the pings, and systemd restarts the service (`WatchdogSec=`).
        """
        if interval_s is None or not self.enabled:
            return
        period_s = interval_s / WATCHDOG_PINGS_PER_PERIOD
        _LOGGER.info("systemd watchdog: %.3g s, pinging every %.3g s", interval_s, period_s)
        while True:
            self.watchdog()
            await asyncio.sleep(period_s)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
