"""Crash-safe writes for the catalog directory.

A file is written to a temporary name in its own directory, fsynced, renamed over the target,
and the directory is fsynced: a reader sees the old file or the new one, never a part of one,
and a writer killed at any point leaves at most a temporary file that the next writer removes.
Writers take an exclusive flock on the catalog's lock file, so two never interleave.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = [
    "TEMP_PREFIX",
    "TEMP_SUFFIX",
    "copy_to_temp",
    "exclusive_lock",
    "fsync_directory",
    "install",
    "remove_stale_temp_files",
    "write_atomic",
]

_LOGGER = logging.getLogger(__name__)

TEMP_PREFIX = ".jigd-"
TEMP_SUFFIX = ".tmp"
_COPY_CHUNK = 1 << 20


@contextlib.contextmanager
def exclusive_lock(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive flock on `lock_path` (created if missing); the kernel drops it on exit."""
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the only descriptor releases the lock


def fsync_directory(directory: Path) -> None:
    """Make a rename or unlink in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _temp_file(directory: Path, kind: str) -> tuple[int, Path]:
    fd, name = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{kind}-", suffix=TEMP_SUFFIX, dir=directory)
    return fd, Path(name)


def install(temp: Path, target: Path) -> None:
    """Rename a fully written, fsynced temporary file over `target` (same filesystem), durably."""
    temp.replace(target)
    fsync_directory(target.parent)
    if temp.parent != target.parent:
        fsync_directory(temp.parent)


def write_atomic(target: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace `target` with `data` so that a reader or a crash sees old or new, nothing else."""
    fd, temp = _temp_file(target.parent, target.name)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fchmod(file.fileno(), mode)
            os.fsync(file.fileno())
        install(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def copy_to_temp(source: BinaryIO, directory: Path, kind: str, mode: int = 0o444) -> Path:
    """Copy `source` to a fsynced temporary file in `directory`; the caller installs or removes it.

    The file is read-only (0444) by default: images are replaced by rename, never written in
    place. `kind` goes in the temporary name, to tell what a leftover was.
    """
    fd, temp = _temp_file(directory, kind)
    try:
        with os.fdopen(fd, "wb") as dst:
            shutil.copyfileobj(source, dst, _COPY_CHUNK)
            dst.flush()
            os.fchmod(dst.fileno(), mode)
            os.fsync(dst.fileno())
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return temp


def remove_stale_temp_files(directory: Path) -> None:
    """Remove temporary files left by a writer that died; call only while holding the lock."""
    if not directory.is_dir():
        return
    for path in directory.glob(f"{TEMP_PREFIX}*{TEMP_SUFFIX}"):
        _LOGGER.info("removing %s, left by an interrupted catalog write", path)
        path.unlink(missing_ok=True)
