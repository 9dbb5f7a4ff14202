"""`jigsim serve`'s durable state: what a bench keeps through a power cut of the PC running it.

A real bench survives its PC crashing: the hubs keep their flash, hubs in slots stay in their
slots, the hubs the operator pulled stay on the done and failed piles, and the pallet still holds
the hubs not yet inserted. `jigsim serve` keeps the same under `<dir>/state/`, so that a
simulator killed with SIGKILL and started again with the same arguments resumes:

    <dir>/state/serve.json          {"schema": "jigsim.state/1", "seed": 7, "guids": [...],
                                     "slots": [{"guid": "00-DB-...", "rig": 1, "slot": 3}],
                                     "removed": ["00-DB-..."],
                                     "moved_out": {"00-DB-...": "/abs/other/bench"}}
    <dir>/state/hubs/<GUID>.json    a simulated hub's flash: {"primary": SHA, "secondary": SHA,
                                     "primary_confirmed", "pending", "revert_on_boot", "swap",
                                     "swap_steps_done", "unlocked", "bricked", "faults_fired"}
    <dir>/state/images/<SHA>.bin    each image a hub's slot ever held, by its sha256
    <dir>/state/moved-in/<GUID>.json  a hub brought from another bench, as it arrived
    <dir>/state/moved-out/*.json    a hub taken to another bench, until that bench has it
                                    (`sim.move`: what the hubs moved take with them)

Every file is written atomically (a temporary file, then a rename; no fsync: the state is to
survive the simulator being killed, not the machine losing power). A hub's file is written
whenever a field of its `HubFlash` that survives power loss changes (an upload completing, a
test or confirm, lock or unlock, each swap step, a revert, a brick), before the hub's answer
leaves on the wire; `serve.json` whenever the operator inserts or pulls a hub. An unfinished
upload is not kept: after a restart the hub's secondary slot is empty and the station starts the
upload again. Zephyr hubs (`--hub-exe`) keep their flash files under `<dir>/hubs/`, which a
resumed simulator reuses as they are.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Final

from sim.files import write_atomically
from sim.hub import SimHub
from sim.hub.flash import SwapKind
from sim.image_check import FlashImage, inspect_image
from sim.pallet import Pallet
from sim.slot_hub import SlotHub

__all__ = [
    "STATE_DIR",
    "STATE_SCHEMA",
    "Placed",
    "SavedServe",
    "ServeState",
    "StateError",
]

_LOGGER = logging.getLogger(__name__)

STATE_SCHEMA: Final = "jigsim.state/1"
STATE_DIR: Final = "state"
SERVE_FILE: Final = "serve.json"

Placed = tuple[str, int, int]  # (GUID, rig, slot)


class StateError(ValueError):
    """A state file that does not belong to this pallet or cannot be read; names the file."""


def _guid_key(hub: SlotHub) -> str:
    return hub.guid.to_bytes().hex().upper()


class SavedServe:
    """What `serve.json` says: hubs in slots, hubs pulled out, hubs moved to other benches."""

    def __init__(
        self, slots: list[Placed], removed: list[str], moved_out: dict[str, str] | None = None
    ) -> None:
        self.slots = slots
        self.removed = removed
        self.moved_out = moved_out or {}


class ServeState:
    """The state directory of one `jigsim serve --dir`."""

    def __init__(self, directory: Path, pallet: Pallet) -> None:
        self.root = directory / STATE_DIR
        self._pallet = pallet
        self._images_saved: set[str] = set()
        self._dirty: set[SimHub] = set()
        self._flush_scheduled = False
        self.writes = 0  # files written, for tests and benchmarks

    @property
    def exists(self) -> bool:
        return (self.root / SERVE_FILE).is_file()

    def _guids(self) -> list[str]:
        return [str(h.guid) for h in self._pallet.hubs]

    # ---- loading --------------------------------------------------------------------------

    def load(self, hubs: Sequence[SlotHub]) -> SavedServe:
        """Read `serve.json` and lay each simulated hub's saved flash over `hubs`."""
        path = self.root / SERVE_FILE
        raw = self._read_json(path)
        if raw.get("schema") != STATE_SCHEMA:
            raise StateError(f"{path}: not a {STATE_SCHEMA} file")
        if raw.get("seed") != self._pallet.seed or raw.get("guids") != self._guids():
            raise StateError(
                f"{path}: saved for another pallet; remove {self.root} to start the pallet anew"
            )
        try:
            slots = [(str(s["guid"]), int(s["rig"]), int(s["slot"])) for s in raw["slots"]]
            removed = [str(g) for g in raw["removed"]]
            moved_out = {str(g): str(to) for g, to in raw.get("moved_out", {}).items()}
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise StateError(f"{path}: slots/removed/moved_out: malformed ({exc!r})") from None
        for hub in hubs:
            if isinstance(hub, SimHub):
                self.load_hub(hub)
        return SavedServe(slots, removed, moved_out)

    def _read_json(self, path: Path) -> dict[str, Any]:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise StateError(f"{path}: cannot read it: {exc.strerror}") from exc
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise StateError(f"{path}: not JSON: {exc}") from exc
        if not isinstance(raw, dict):
            raise StateError(f"{path}: expected a JSON object")
        return raw

    def _image(self, sha: object, cache: dict[str, FlashImage], where: Path) -> FlashImage:
        if not isinstance(sha, str):
            raise StateError(f"{where}: image reference {sha!r} is not a sha256")
        if sha not in cache:
            path = self.root / "images" / f"{sha}.bin"
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise StateError(f"{path}: cannot read it: {exc.strerror}") from exc
            if hashlib.sha256(data).hexdigest() != sha:
                raise StateError(f"{path}: content does not match its sha256")
            cache[sha] = inspect_image(data)
            self._images_saved.add(sha)
        return cache[sha]

    def load_hub(self, hub: SimHub, cache: dict[str, FlashImage] | None = None) -> None:
        """Lay the flash saved for this hub, if any, over it."""
        path = self.root / "hubs" / f"{_guid_key(hub)}.json"
        if not path.is_file():
            return  # never changed since the pallet was made
        raw = self._read_json(path)
        images = cache if cache is not None else {}
        flash = hub.flash
        try:
            flash.primary = self._image(raw["primary"], images, path)
            secondary = raw["secondary"]
            flash.secondary = None if secondary is None else self._image(secondary, images, path)
            flash.primary_confirmed = bool(raw["primary_confirmed"])
            flash.pending = None if raw["pending"] is None else SwapKind(str(raw["pending"]))
            flash.revert_on_boot = bool(raw["revert_on_boot"])
            flash.swap = None if raw["swap"] is None else SwapKind(str(raw["swap"]))
            steps = raw["swap_steps_done"]
            flash.swap_steps_done = int(steps) if isinstance(steps, int) else 0
            flash.unlocked = bool(raw["unlocked"])
            flash.bricked = bool(raw["bricked"])
            fired = raw.get("faults_fired", [])
            hub.faults_fired.update(str(f) for f in fired if isinstance(fired, list))
        except (KeyError, ValueError) as exc:
            raise StateError(f"{path}: malformed ({exc!r})") from None
        flash.upload = None

    # ---- saving ---------------------------------------------------------------------------

    def watch(self, hubs: Iterable[SlotHub]) -> None:
        """Save a simulated hub whenever its flash changes (once per turn of the event loop,
        before its answer can leave on the wire)."""
        for hub in hubs:
            if isinstance(hub, SimHub):
                hub.flash.on_change = functools.partial(self._hub_changed, hub)

    def _hub_changed(self, hub: SimHub) -> None:
        self._dirty.add(hub)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Write the file of every hub changed since the last flush."""
        self._flush_scheduled = False
        dirty, self._dirty = self._dirty, set()
        for hub in dirty:
            self.save_hub(hub)

    def _save_image(self, image: FlashImage) -> str:
        sha = image.sha256.hex()
        if sha not in self._images_saved:
            path = self.root / "images" / f"{sha}.bin"
            if not path.is_file():
                write_atomically(path, image.data, fsync=False)
                self.writes += 1
            self._images_saved.add(sha)
        return sha

    def save_hub(self, hub: SimHub) -> None:
        flash = hub.flash
        record = {
            "guid": str(hub.guid),
            "primary": self._save_image(flash.primary),
            "secondary": None if flash.secondary is None else self._save_image(flash.secondary),
            "primary_confirmed": flash.primary_confirmed,
            "pending": None if flash.pending is None else str(flash.pending),
            "revert_on_boot": flash.revert_on_boot,
            "swap": None if flash.swap is None else str(flash.swap),
            "swap_steps_done": flash.swap_steps_done,
            "unlocked": flash.unlocked,
            "bricked": flash.bricked,
            "faults_fired": sorted(hub.faults_fired),
        }
        path = self.root / "hubs" / f"{_guid_key(hub)}.json"
        write_atomically(path, json.dumps(record).encode(), fsync=False)
        self.writes += 1

    def save_serve(
        self,
        slots: Iterable[Placed],
        removed: Iterable[SlotHub],
        moved_out: dict[str, str] | None = None,
    ) -> None:
        """Write `serve.json`: which hub is in which slot, which were pulled out, which were
        taken to which other bench."""
        document = {
            "schema": STATE_SCHEMA,
            "seed": self._pallet.seed,
            "guids": self._guids(),
            "slots": [{"guid": g, "rig": r, "slot": s} for g, r, s in slots],
            "removed": [str(h.guid) for h in removed],
            "moved_out": dict(moved_out or {}),
        }
        write_atomically(
            self.root / SERVE_FILE, json.dumps(document, indent=1).encode(), fsync=False
        )
        self.writes += 1
