"""Moving hubs from one simulated bench to another, as a technician carries hubs between
stations: `jigsim move --from A --to B GUID...` drops a request in `A/move-out/`; the operator of
`jigsim serve --dir A` takes each named hub (pulled from its slot whatever its LED, or taken off
the pallet or the pulled pile), and A writes the hub whole into B's inbox `B/move-in/`; the
operator of `jigsim serve --dir B` puts it on top of B's pallet, next to go into a free slot.

A moved hub is the same hub: its flash (the image it runs, the one in its secondary slot,
confirmed or on test, a swap under way, locked or not, bricked), its faults and the one-shot
faults that already struck, whether its batch lists it, and an unfinished upload if its model
keeps that in flash (`upload_state="flash"`; a `"ram"` model lost it when it was pulled, as it
loses it at every power loss). From then on it belongs to B's ground truth; A's lists it as
`"where": "moved"` with `"to"`.

Files (each written whole, `sim.files.write_atomically`, under a name that sorts in the order
they were made):

    A/move-out/<time>-<pid>.json        {"schema": "jigsim.move/1", "to": "/abs/B",
                                         "guids": ["00-DB-...", ...]}
    B/move-in/<time>-<GUID>.json        a moved hub: {"schema": "jigsim.moved-hub/1", "guid",
                                         "model", "listed", "from", "faults", "faults_fired",
                                         "flash": {"primary": BASE64, "secondary": BASE64|null,
                                         "primary_confirmed", "pending", "revert_on_boot",
                                         "swap", "swap_steps_done", "unlocked", "bricked",
                                         "upload": null | {"sha", "length", "data",
                                         "erased_sectors"}}}

Crash safety (either simulator may be SIGKILLed): A keeps the hub's record in
`A/state/moved-out/` and the GUID in `serve.json`'s `moved_out` before it writes B's inbox, and
removes its copy once B's has been written; a resumed A delivers what is left there again. B
saves a moved-in hub under `B/state/moved-in/` (and its flash as every hub's) before it removes
the inbox file; a hub it already holds is not taken twice. Zephyr native_sim hubs
(`--hub-exe`) are not moved: the request names them in a warning and leaves them where they are.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from jigd.model import DeviceModel, Guid
from sim.faults import Faults
from sim.files import write_atomically
from sim.harness import image_key_of
from sim.hub import SimHub
from sim.hub.flash import SwapKind, UploadRecord
from sim.image_check import inspect_image
from sim.images import ManufacturerKeys
from sim.state import STATE_DIR
from sim.timing import Timing

__all__ = [
    "MOVED_HUB_SCHEMA",
    "MOVE_IN_DIR",
    "MOVE_OUT_DIR",
    "MOVE_SCHEMA",
    "MoveError",
    "MoveRequest",
    "MovedHub",
    "hub_from_record",
    "hub_record",
    "read_records",
    "request_move",
    "take_move_requests",
    "write_record",
]

_LOGGER = logging.getLogger(__name__)

MOVE_SCHEMA: Final = "jigsim.move/1"
MOVED_HUB_SCHEMA: Final = "jigsim.moved-hub/1"
MOVE_OUT_DIR: Final = "move-out"
MOVE_IN_DIR: Final = "move-in"
_SUFFIX: Final = ".json"


class MoveError(ValueError):
    """A move request or a moved hub's record that cannot be used; the message says why."""


@dataclass(frozen=True)
class MoveRequest:
    """Take these hubs to the bench served under `destination`."""

    destination: Path
    guids: list[Guid]


@dataclass(frozen=True)
class MovedHub:
    """A hub as it arrived from another bench (or as this bench saved it)."""

    hub: SimHub
    listed: bool
    source: str
    record: dict[str, Any]


def _is_bench(directory: Path) -> bool:
    return (directory / STATE_DIR).is_dir()


def _name(tag: str) -> str:
    return f"{time.time_ns():020d}-{tag}{_SUFFIX}"


def request_move(source: Path, destination: Path, guids: Iterable[Guid]) -> Path:
    """Ask the `jigsim serve --dir source` to take these hubs to `destination`; the request file.

    FileNotFoundError when either directory is not served by a simulator (it has no `state/`),
    MoveError when both are the same bench.
    """
    for directory in (source, destination):
        if not _is_bench(directory):
            raise FileNotFoundError(f"{directory}: no `jigsim serve --dir` bench here")
    if source.resolve() == destination.resolve():
        raise MoveError(f"{source}: a hub cannot be moved to the bench it is on")
    document = {
        "schema": MOVE_SCHEMA,
        "to": str(destination.resolve()),
        "guids": [str(g) for g in guids],
    }
    path = source / MOVE_OUT_DIR / _name(str(os.getpid()))
    write_atomically(path, json.dumps(document).encode(), fsync=False)
    return path


def take_move_requests(directory: Path) -> list[MoveRequest]:
    """Every move request waiting under `directory`, oldest first; the files are removed. A
    request that cannot be read is logged and skipped, a GUID that does not parse too."""
    requests = []
    for path, raw in _take_json(directory / MOVE_OUT_DIR, remove=True):
        if raw.get("schema") != MOVE_SCHEMA or not isinstance(raw.get("to"), str):
            _LOGGER.warning("%s: not a %s request, skipped", path, MOVE_SCHEMA)
            continue
        guids = []
        for text in raw.get("guids") or []:
            try:
                guids.append(Guid.parse(str(text)))
            except ValueError:
                _LOGGER.warning("%s: not a GUID, skipped: %r", path, str(text)[:40])
        requests.append(MoveRequest(Path(raw["to"]), guids))
    return requests


def read_records(folder: Path) -> list[tuple[Path, dict[str, Any]]]:
    """The moved hubs' records in `folder` (an inbox, or a bench's own copies), oldest first;
    the files stay until the caller removes them."""
    return _take_json(folder, remove=False)


def _take_json(folder: Path, *, remove: bool) -> list[tuple[Path, dict[str, Any]]]:
    try:
        paths = sorted(p for p in folder.iterdir() if p.name.endswith(_SUFFIX))
    except FileNotFoundError:
        return []
    found = []
    for path in paths:
        try:
            raw = json.loads(path.read_bytes())
        except (OSError, ValueError) as exc:
            _LOGGER.warning("%s: unreadable, skipped: %s", path, exc)
            raw = None
        if remove:
            path.unlink(missing_ok=True)
        if isinstance(raw, dict):
            found.append((path, raw))
    return found


def write_record(folder: Path, record: dict[str, Any]) -> Path:
    """Write a moved hub's record into `folder` (whole or not at all); its path."""
    key = Guid.parse(record["guid"]).to_bytes().hex().upper()
    path = folder / _name(key)
    write_atomically(path, json.dumps(record).encode(), fsync=False)
    return path


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hub_record(hub: SimHub, *, listed: bool, source: Path) -> dict[str, Any]:
    """Everything a moved hub takes with it (JSON), read off the hub as it is now."""
    flash = hub.flash
    upload = flash.upload
    return {
        "schema": MOVED_HUB_SCHEMA,
        "guid": str(hub.guid),
        "model": str(hub.model),
        "listed": listed,
        "from": str(source.resolve()),
        "faults": hub.faults.model_dump(mode="json"),
        "faults_fired": sorted(hub.faults_fired),
        "flash": {
            "primary": _b64(flash.primary.data),
            "secondary": None if flash.secondary is None else _b64(flash.secondary.data),
            "primary_confirmed": flash.primary_confirmed,
            "pending": None if flash.pending is None else str(flash.pending),
            "revert_on_boot": flash.revert_on_boot,
            "swap": None if flash.swap is None else str(flash.swap),
            "swap_steps_done": flash.swap_steps_done,
            "unlocked": flash.unlocked,
            "bricked": flash.bricked,
            "upload": None
            if upload is None
            else {
                "sha": None if upload.sha is None else upload.sha.hex(),
                "length": upload.length,
                "data": _b64(bytes(upload.data)),
                "erased_sectors": sorted(upload.erased_sectors),
            },
        },
    }


def hub_from_record(
    record: dict[str, Any],
    keys_for: Callable[[int], ManufacturerKeys],
    timing_for: Callable[[DeviceModel], Timing],
    *,
    framing: str,
) -> MovedHub:
    """The hub a record describes, with the flash it had; MoveError if the record is not one."""
    if record.get("schema") != MOVED_HUB_SCHEMA:
        raise MoveError(f"not a {MOVED_HUB_SCHEMA} record")
    try:
        guid = Guid.parse(str(record["guid"]))
        model = DeviceModel.parse(str(record["model"]))
        raw = record["flash"]
        keys = keys_for(model.manufacturer)
        hub = SimHub(
            guid=guid,
            model=model,
            image=inspect_image(base64.b64decode(raw["primary"])),
            master_key=keys.master_key,
            image_key=image_key_of(keys),
            timing=timing_for(model),
            framing=framing,
            faults=Faults.model_validate(record["faults"]),
            locked=not raw["unlocked"],
        )
        flash = hub.flash
        secondary = raw["secondary"]
        flash.secondary = None if secondary is None else inspect_image(base64.b64decode(secondary))
        flash.primary_confirmed = bool(raw["primary_confirmed"])
        flash.pending = None if raw["pending"] is None else SwapKind(str(raw["pending"]))
        flash.revert_on_boot = bool(raw["revert_on_boot"])
        flash.swap = None if raw["swap"] is None else SwapKind(str(raw["swap"]))
        flash.swap_steps_done = int(raw["swap_steps_done"])
        flash.bricked = bool(raw["bricked"])
        upload = raw["upload"]
        if upload is not None:
            flash.upload = UploadRecord(
                sha=None if upload["sha"] is None else bytes.fromhex(upload["sha"]),
                length=int(upload["length"]),
                data=bytearray(base64.b64decode(upload["data"])),
                erased_sectors={int(s) for s in upload["erased_sectors"]},
            )
        hub.faults_fired.update(str(f) for f in record["faults_fired"])
        return MovedHub(hub, bool(record["listed"]), str(record["from"]), record)
    except (KeyError, TypeError, ValueError) as exc:
        raise MoveError(f"malformed moved hub ({exc!r})") from None
