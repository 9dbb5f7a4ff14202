"""Simulated rigs: the controller's line protocol, slots on real ptys, vanishing, the operator."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest
from smp import image_management as smpimg
from smp import os_management as smpos

from jigd.model import LedColour
from sim.faults import Faults
from sim.hub import IMAGE_MAGIC, HubState, SimHub
from sim.images import make_manufacturer_keys
from sim.operator import Operator
from sim.pallet import make_pallet
from sim.rig import Rig, Station, parse_breaks
from sim.serve import TimingTable, build_hubs
from tests.sim.helpers import FAST
from tests.sim.wire import LineWire, Wire, body

BOOTED_S = 5.0


def _is_link(path: Path) -> bool:
    return path.is_symlink()


def _hubs(count: int, faults: Faults | None = None) -> list[SimHub]:
    pallet = make_pallet(count, seed=1, missing=0, extra=0, current=0)
    if faults is not None:
        pallet = pallet.model_copy(
            update={"hubs": [h.model_copy(update={"faults": faults}) for h in pallet.hubs]}
        )
    keys = {0x1086: make_manufacturer_keys(0x1086, 0)}
    return build_hubs(pallet, keys, TimingTable(FAST), framing="raw", image_size=8192, image_seed=0)


async def test_controller_answers_the_line_protocol(tmp_path: Path) -> None:
    (hub,) = _hubs(1)
    async with Rig(tmp_path, 1, 4) as rig:
        assert rig.ctl_path == str(tmp_path / "rig1" / "ctl")
        with LineWire(rig.ctl_path) as ctl:
            assert await ctl.ask("PING") == "OK"
            assert await ctl.ask("PING", end="\r\n") == "OK"
            assert await ctl.ask("PRESENCE?") == "PRESENCE 0000"
            rig.insert(2, hub)
            assert await ctl.readline() == "EVT INSERT 2"
            assert await ctl.ask("PRESENCE?") == "PRESENCE 0100"
            await hub.wait_for_state(HubState.RUNNING, timeout_s=BOOTED_S)
            assert await ctl.ask("POWER 2 OFF") == "OK"
            assert hub.state is HubState.OFF
            assert await ctl.ask("POWER 2 ON") == "OK"
            await hub.wait_for_state(HubState.RUNNING, timeout_s=BOOTED_S)
            assert await ctl.ask("LED 2 GREEN") == "OK"
            assert rig.slot(2).led is LedColour.GREEN
            assert await ctl.ask("LED 4 BLINK\r") == "OK"
            for bad, answer in [
                ("FLASH 1", "ERR unknown command FLASH"),
                ("ping", "ERR unknown command ping"),
                ("POWER 9 ON", "ERR bad slot 9"),
                ("POWER 0 ON", "ERR bad slot 0"),
                ("POWER 1 MAYBE", "ERR bad power state MAYBE"),
                ("POWER 1", "ERR usage: POWER <slot> <state>"),
                ("LED 1 PURPLE", "ERR bad LED state PURPLE"),
                ("PING PONG", "ERR usage: PING"),
                ("X" * 100, "ERR line too long"),
            ]:
                assert await ctl.ask(bad) == answer, bad
            assert await ctl.ask("Y" * 300) == "ERR line too long"  # answered once
            ctl.send("")  # an empty line is ignored
            assert await ctl.ask("PING") == "OK"
            assert await rig.remove(2) is hub
            assert await ctl.readline() == "EVT REMOVE 2"
            assert rig.slot(2).led is LedColour.OFF
            assert hub.state is HubState.OFF
        assert rig.errors == []


async def test_a_slot_port_reaches_the_hub_in_it(tmp_path: Path) -> None:
    (hub,) = _hubs(1)
    async with Rig(tmp_path, 2, 8) as rig:
        path = str(tmp_path / "rig2" / "slot5")
        rig.insert(5, hub)
        await hub.wait_for_state(HubState.RUNNING, timeout_s=BOOTED_S)
        with Wire(path) as wire:
            assert body(await wire.request(smpos.EchoWriteRequest(d="s5"))) == {"r": "s5"}
            await rig.remove(5)
            await wire.send(smpos.EchoWriteRequest(d="gone"))
            assert await wire.silent(0.1)


async def test_a_rig_vanishes_and_comes_back_at_the_same_paths(tmp_path: Path) -> None:
    (hub,) = _hubs(1)
    async with Rig(tmp_path, 1, 2) as rig:
        rig.insert(1, hub)
        await hub.wait_for_state(HubState.RUNNING, timeout_s=BOOTED_S)
        ctl, slot = Path(rig.ctl_path), tmp_path / "rig1" / "slot1"
        rig.slot(1).led = LedColour.RED  # the hub's result, shown before the outage
        await rig.vanish()
        assert not _is_link(ctl)
        assert not _is_link(slot)
        assert hub.state is HubState.OFF
        assert rig.slot(1).led is LedColour.OFF  # no power, no LED: the operator leaves it
        await rig.reappear()
        assert _is_link(ctl)
        assert _is_link(slot)
        await hub.wait_for_state(HubState.RUNNING, timeout_s=BOOTED_S)
        with Wire(str(slot)) as wire:
            assert body(await wire.request(smpos.EchoWriteRequest(d="back"))) == {"r": "back"}
        with LineWire(rig.ctl_path) as line:
            assert await line.ask("PRESENCE?") == "PRESENCE 10"
    assert not _is_link(ctl)
    assert rig.errors == []


async def test_a_browned_out_hub_stays_off_until_power_on(tmp_path: Path) -> None:
    (hub,) = _hubs(1, Faults(power_loss_during_upload_at=0.3))
    hub.flash.unlocked = True
    async with Rig(tmp_path, 1, 1) as rig:
        rig.insert(1, hub)
        await hub.wait_for_state(HubState.RUNNING, timeout_s=BOOTED_S)
        image = IMAGE_MAGIC + bytes(8192 - len(IMAGE_MAGIC))  # a first chunk needs the magic
        with Wire(str(tmp_path / "rig1" / "slot1")) as wire:
            await wire.send(
                smpimg.ImageUploadWriteRequest(
                    off=0,
                    data=image[:1024],
                    len=len(image),
                    sha=hashlib.sha256(image).digest(),
                    image=0,
                )
            )
            assert body(await wire.receive()) == {"off": 1024}
            await wire.send(smpimg.ImageUploadWriteRequest(off=1024, data=image[1024:2560]))
            assert await wire.silent(0.2)
            assert hub.state is HubState.OFF
            assert rig.slot(1).supply_on is False
            with LineWire(rig.ctl_path) as ctl:
                assert await ctl.ask("POWER 1 ON") == "OK"
            await hub.wait_for_state(HubState.RUNNING, timeout_s=BOOTED_S)
            assert body(await wire.request(smpos.EchoWriteRequest(d="up"))) == {"r": "up"}


async def test_the_operator_feeds_slots_and_pulls_finished_hubs(tmp_path: Path) -> None:
    hubs = _hubs(5)
    async with Station(tmp_path, rigs=1, slots=2) as station:
        (rig,) = station.rigs
        operator = Operator(station.rigs, hubs, handling_s=0.01)
        with LineWire(rig.ctl_path) as ctl:
            work = asyncio.create_task(operator.run())
            # A stand-in for the daemon: each inserted hub is done (even slots fail).
            events: list[str] = []
            while len([e for e in events if e.startswith("EVT REMOVE")]) < 5:
                line = await ctl.readline(timeout_s=BOOTED_S)
                events.append(line)
                if line.startswith("EVT INSERT"):
                    number = int(line.split()[2])
                    colour = "RED" if number == 2 else "GREEN"
                    ctl.send(f"LED {number} AMBER")
                    ctl.send(f"LED {number} {colour}")
            await asyncio.wait_for(work, timeout=BOOTED_S)
        assert operator.done
        assert operator.removed == hubs  # first in, first out: slots finish in order here
        assert [e for e in events if e.startswith("EVT")][:2] == ["EVT INSERT 1", "EVT INSERT 2"]
        assert sum(e.startswith("EVT INSERT") for e in events) == 5
        assert all(slot.hub is None for _, slot in station.slots())


def test_a_rig_has_one_to_eight_slots(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="1 to 8 slots"):
        Rig(tmp_path, 1, 9)


async def test_broken_parts_answer_err_and_a_broken_port_is_never_published(
    tmp_path: Path,
) -> None:
    breaks = parse_breaks("rig1/slot1:power, rig1/slot2:led,rig1/slot3:port,rig1/slot3:led")
    assert breaks == {(1, 1): {"power"}, (1, 2): {"led"}, (1, 3): {"port", "led"}}
    async with Station(tmp_path, 1, 4, breaks=breaks) as station:
        rig = station.rigs[0]
        assert rig.command(b"POWER 1 OFF") == "ERR power switch 1 does not switch"
        assert rig.slot(1).supply_on
        assert rig.command(b"POWER 2 OFF") == "OK"
        assert rig.command(b"LED 2 GREEN") == "ERR LED 2 does not light"
        assert rig.slot(2).led is LedColour.OFF  # what the LED shows: nothing
        assert rig.command(b"LED 1 GREEN") == "OK"
        assert not (tmp_path / "rig1" / "slot3").exists()
        assert (tmp_path / "rig1" / "slot4").exists()


@pytest.mark.parametrize(
    ("text", "named"),
    [("rig1/slot3", "rig1/slot3"), ("rig1/slot3:fan", "fan"), ("slot3:led", "slot3:led")],
)
def test_a_bad_break_entry_is_named(text: str, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        parse_breaks(text)


def test_a_break_of_a_slot_the_station_lacks_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="rig 1 has no slot 9"):
        Station(tmp_path, 1, 4, breaks=parse_breaks("rig1/slot9:led"))
    with pytest.raises(ValueError, match="there is no rig 2"):
        Station(tmp_path, 1, 4, breaks=parse_breaks("rig2/slot1:led"))
