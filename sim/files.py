"""Writing the simulator's files whole or not at all (pallets, flash files, bench state)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["write_atomically"]


def write_atomically(path: Path, data: bytes, *, fsync: bool = True) -> None:
    """`data` in `path`, whole or not at all: a temporary file beside it, (fsync,) rename.

    Without `fsync` the file survives the process being killed (the kernel holds what was
    written) but not the machine losing power; that is what the bench state needs, and an
    fsync on the event loop would stall the wire of every hub the simulator paces. OSError
    (with the temporary file removed) if it cannot be written.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with temp.open("wb") as file:
            file.write(data)
            if fsync:
                file.flush()
                os.fsync(file.fileno())
        temp.replace(path)
    except OSError:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
