"""Telling a running `jigsim serve` to put hubs back: `jigsim reinsert` drops a request file in
`<dir>/reinsert/`, and the server hands the GUIDs it reads there to its operator.

A request is a text file, one GUID per line, written whole (sim/files.py) under a name that
sorts in the order requests were made; the server deletes each file once it has read it.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from jigd.model import Guid
from sim.files import write_atomically
from sim.state import STATE_DIR

__all__ = ["REINSERT_DIR", "guids_in", "request_reinsert", "take_requests"]

_LOGGER = logging.getLogger(__name__)

REINSERT_DIR: Final = "reinsert"
_SUFFIX: Final = ".guids"
# A GUID as jigd prints it: eight hex octets separated by hyphens.
_GUID_RE: Final = re.compile(r"\b[0-9A-Fa-f]{2}(?:-[0-9A-Fa-f]{2}){7}\b")


def guids_in(lines: Iterable[str]) -> list[Guid]:
    """The first GUID on each line that has one (as `jigctl batch show` prints them)."""
    found = []
    for line in lines:
        match = _GUID_RE.search(line)
        if match is not None:
            found.append(Guid.parse(match.group()))
    return found


def request_reinsert(directory: Path, guids: Iterable[Guid]) -> Path:
    """Ask the `jigsim serve --dir directory` to put these hubs back; returns the request file.

    FileNotFoundError when no simulator serves that directory (it has no `state/`).
    """
    if not (directory / STATE_DIR).is_dir():
        raise FileNotFoundError(f"{directory}: no `jigsim serve --dir` bench here")
    name = f"{time.time_ns():020d}-{os.getpid()}{_SUFFIX}"
    path = directory / REINSERT_DIR / name
    write_atomically(path, "".join(f"{guid}\n" for guid in guids).encode("ascii"))
    return path


def take_requests(directory: Path) -> list[Guid]:
    """The GUIDs of every request waiting under `directory`, oldest first; the files are
    removed. A line that is not a GUID is logged and skipped."""
    folder = directory / REINSERT_DIR
    try:
        names = sorted(p for p in folder.iterdir() if p.name.endswith(_SUFFIX))
    except FileNotFoundError:
        return []
    guids = []
    for path in names:
        try:
            text = path.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            _LOGGER.warning("%s: unreadable re-insert request skipped: %s", path, exc)
            text = ""
        path.unlink(missing_ok=True)
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                guids.append(Guid.parse(line.strip()))
            except ValueError:
                _LOGGER.warning("%s:%d: not a GUID, skipped: %r", path, number, line[:40])
    return guids
