"""One `jigsim serve` bench's side of moving hubs between benches (`sim.move` has the files and
the records): it sends the hubs its operator takes away, takes in the hubs other benches bring,
keeps both through a restart (`sim.state`), and says what the ground truth lists of them."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

from jigd.model import DeviceModel
from sim.files import write_atomically
from sim.hub import SimHub
from sim.images import ManufacturerKeys
from sim.move import (
    MOVE_IN_DIR,
    MovedHub,
    MoveError,
    hub_from_record,
    hub_record,
    read_records,
    take_move_requests,
    write_record,
)
from sim.operator import Operator
from sim.pallet import Pallet
from sim.slot_hub import SlotHub
from sim.state import ServeState
from sim.timing import Timing

__all__ = ["MOVE_POLL_S", "MoveDesk"]

_LOGGER = logging.getLogger(__name__)

MOVE_POLL_S: Final = 0.5  # how often move requests and the inbox are looked at
MOVED_IN_DIR: Final = "moved-in"  # under <dir>/state/: the hubs taken in, as they arrived
MOVED_OUT_DIR: Final = "moved-out"  # under <dir>/state/: hubs sent, until the other bench has them


def _key(guid: str) -> str:
    return guid.replace("-", "").upper()


class MoveDesk:
    """The hubs this bench sent away (`moved_out`: GUID -> destination) and took in
    (`moved_in`: GUID -> source); `hubs` is the bench's hubs, the ground truth's list."""

    def __init__(
        self,
        directory: Path,
        state: ServeState,
        pallet: Pallet,
        *,
        keys_for: Callable[[int], ManufacturerKeys],
        timing_for: Callable[[DeviceModel], Timing],
        framing: str,
    ) -> None:
        self.directory = directory
        self.state = state
        self.keys_for = keys_for
        self.timing_for = timing_for
        self.framing = framing
        self.hubs: list[SlotHub] = []
        self.listed: dict[str, bool] = {str(h.guid): h.listed for h in pallet.hubs}
        self.moved_out: dict[str, str] = {}
        self.moved_in: dict[str, str] = {}
        self.operator: Operator | None = None
        self.save: Callable[[], None] = lambda: None  # writes serve.json (set by `jigsim serve`)

    # ---- start ----------------------------------------------------------------------------

    def resume(self, hubs: Sequence[SlotHub], moved_out: dict[str, str]) -> list[SlotHub]:
        """The bench's hubs after a restart: the pallet's less those moved away, with the hubs
        brought in (first: they were put on top of the pallet). Blocking (files)."""
        self.moved_out = dict(moved_out)
        bench = [h for h in hubs if str(h.guid) not in self.moved_out]
        for path, record in read_records(self.state.root / MOVED_IN_DIR):
            try:
                moved = self._build(record)
            except MoveError as exc:
                _LOGGER.warning("%s: %s; that hub is not on the bench", path, exc)
                continue
            guid = str(moved.hub.guid)
            if guid in self.moved_out:
                continue
            self.state.load_hub(moved.hub)  # what its flash became here since
            bench = [moved.hub, *(h for h in bench if str(h.guid) != guid)]
            self.moved_in[guid] = moved.source
            self.listed[guid] = moved.listed
        self.hubs = bench
        return bench

    def _build(self, record: dict[str, Any]) -> MovedHub:
        return hub_from_record(record, self.keys_for, self.timing_for, framing=self.framing)

    # ---- at work --------------------------------------------------------------------------

    async def run(self) -> None:
        """Deliver what a killed simulator left unsent, then take move requests and the
        inbox's hubs until cancelled."""
        for path, record in await asyncio.to_thread(read_records, self.state.root / MOVED_OUT_DIR):
            destination = self.moved_out.get(str(record.get("guid")))
            if destination is not None:
                await self._deliver(Path(destination), record, path)
        while True:
            for request in await asyncio.to_thread(take_move_requests, self.directory):
                movable = []
                for guid in request.guids:
                    hub = next((h for h in self.hubs if h.guid == guid), None)
                    if hub is None or not isinstance(hub, SimHub):
                        what = "not on this bench" if hub is None else "a Zephyr hub"
                        _LOGGER.warning("move: %s is %s; not moved", guid, what)
                    else:
                        movable.append(guid)
                if movable and self.operator is not None:
                    handover = functools.partial(self._send, request.destination)
                    self.operator.move_out(movable, handover)
            for path, record in await asyncio.to_thread(read_records, self.directory / MOVE_IN_DIR):
                self._take_in(path, record)
            await asyncio.sleep(MOVE_POLL_S)

    async def _send(self, destination: Path, hub: SlotHub) -> None:
        """The operator took `hub` away: keep a copy, mark it moved, deliver it."""
        assert isinstance(hub, SimHub)  # internal invariant: `run` lets only SimHubs go
        guid = str(hub.guid)
        hub.flash.on_change = None
        record = hub_record(hub, listed=self.listed.get(guid, False), source=self.directory)
        copy = await asyncio.to_thread(write_record, self.state.root / MOVED_OUT_DIR, record)
        (self.state.root / MOVED_IN_DIR / f"{_key(guid)}.json").unlink(missing_ok=True)
        self.hubs = [h for h in self.hubs if h is not hub]
        self.moved_in.pop(guid, None)
        self.moved_out[guid] = str(destination)  # absolute: `request_move` resolved it
        self.save()
        await self._deliver(destination, record, copy)

    async def _deliver(self, destination: Path, record: dict[str, Any], copy: Path) -> None:
        try:
            await asyncio.to_thread(write_record, destination / MOVE_IN_DIR, record)
        except OSError as exc:
            _LOGGER.warning("move: cannot deliver %s to %s: %s", record["guid"], destination, exc)
            return  # the copy stays: delivered again at the next start
        await asyncio.to_thread(copy.unlink, missing_ok=True)
        _LOGGER.info("move: %s taken to %s", record["guid"], destination)

    def _take_in(self, path: Path, record: dict[str, Any]) -> None:
        """A hub from another bench: saved here, then on top of the pallet."""
        guid = str(record.get("guid"))
        if any(str(h.guid) == guid for h in self.hubs):
            _LOGGER.warning("move: %s is already on this bench; %s ignored", guid, path.name)
            path.unlink(missing_ok=True)
            return
        try:
            moved = self._build(record)
        except MoveError as exc:
            _LOGGER.warning("move: %s: %s; left in the inbox, renamed .bad", path, exc)
            path.rename(path.with_suffix(".bad"))
            return
        hub = moved.hub
        write_atomically(
            self.state.root / MOVED_IN_DIR / f"{_key(guid)}.json",
            path.read_bytes(),
            fsync=False,
        )
        self.state.save_hub(hub)
        self.state.watch([hub])
        self.hubs = [hub, *self.hubs]
        self.moved_out.pop(guid, None)
        self.moved_in[guid] = moved.source
        self.listed[guid] = moved.listed
        if self.operator is not None:
            self.operator.move_in(hub)  # saves serve.json
        path.unlink(missing_ok=True)
        _LOGGER.info("move: %s brought from %s", guid, moved.source)

    # ---- ground truth ---------------------------------------------------------------------

    def truth_of(self, guid: str) -> dict[str, object]:
        """What the ground truth adds to a hub of this bench's."""
        extra: dict[str, object] = {"listed": self.listed.get(guid, False)}
        if guid in self.moved_in:
            extra["moved_from"] = self.moved_in[guid]
        return extra

    def moved_entries(self) -> list[dict[str, object]]:
        """The ground truth's entries of the hubs taken to other benches."""
        return [
            {"guid": guid, "where": "moved", "to": to, "listed": self.listed.get(guid, False)}
            for guid, to in sorted(self.moved_out.items())
        ]
