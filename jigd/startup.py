"""What the daemon needs before it starts: the station's lock, and how start-up failures read.

One daemon per station. Two daemons on one store would each mark the other's hubs interrupted,
fight over the control socket and the ports, and flash the same hubs. So `jigd run` takes the
station's lock first, before it touches the store, the socket or any port: a lock file next to
the store (`jigd.sqlite3.lock`), held with flock(2) for the daemon's life and holding its pid. The
kernel releases it when the process ends, however it ends, so a stale file never blocks a start.

A start-up failure is bad input or a resource the station cannot have (a lock held, a port in
use, a socket path too long): `StartupError`, one line naming the config key or the resource,
which `jigd run` prints before it exits 2 (docs/install.md: systemd does not restart on 2).
"""

from __future__ import annotations

import fcntl
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

from jigd.store.sqlite import SCHEME as SQLITE_SCHEME
from jigd.store.sqlite import sqlite_path

__all__ = ["StartupError", "StationLockedError", "lock_path", "os_reason", "station_lock"]

LOCK_SUFFIX: Final = ".lock"
_PID_BYTES: Final = 32


class StartupError(Exception):
    """The daemon cannot start; the message is one line naming the config key or resource."""


class StationLockedError(StartupError):
    """Another process holds the station's lock: another daemon runs on this store."""

    def __init__(self, path: Path, pid: int | None) -> None:
        self.path = path
        self.pid = pid
        who = f"pid {pid}" if pid is not None else "a process whose pid it has not written yet"
        super().__init__(
            f"station lock {path}: another jigd ({who}) is running on this store; "
            "stop it first (one daemon per station)"
        )


def os_reason(exc: OSError) -> str:
    """An OSError's reason alone, as a person reads it (`Address already in use`)."""
    if isinstance(exc, socket.gaierror) or not exc.errno or exc.errno < 0:
        return exc.strerror or str(exc)
    return os.strerror(exc.errno)


def lock_path(store_url: str, control_socket: Path) -> Path:
    """The station's lock file: next to the store's file, or next to the control socket for
    a store that has no file."""
    if store_url.startswith(f"{SQLITE_SCHEME}:"):
        store = sqlite_path(store_url)
        return store.with_name(store.name + LOCK_SUFFIX)
    return control_socket.with_name(control_socket.name + LOCK_SUFFIX)


@contextmanager
def station_lock(path: Path) -> Iterator[None]:
    """Hold the station's lock while the context is open; StationLockedError naming the holder's
    pid when another process holds it, StartupError when the file cannot be had."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise StartupError(f"station lock {path}: cannot open it: {os_reason(exc)}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StationLockedError(path, _pid_in(fd)) from None
        except OSError as exc:
            raise StartupError(f"station lock {path}: cannot lock it: {os_reason(exc)}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        yield
    finally:
        os.close(fd)  # releases the lock; the file stays (removing it would race a new start)


def _pid_in(fd: int) -> int | None:
    text = os.pread(fd, _PID_BYTES, 0).decode("ascii", errors="replace").strip()
    return int(text) if text.isdigit() else None
