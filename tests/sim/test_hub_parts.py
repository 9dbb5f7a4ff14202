"""Each part of the simulated hub on its own: the SMP server fed frames, the bootloader on a
flash, the fault decisions from a seed, and the wire's pacing over an in-memory port."""

from __future__ import annotations

import asyncio
import hashlib
from functools import cache
from typing import Any, Final

import pytest
from smp import image_management as smpimg
from smp import os_management as smpos

from drivers import jig_group
from drivers.framing import RESPONSE_OPS, RawFraming
from jigd.model import DeviceModel, FirmwareVersion, Guid
from sim.faults import FaultInjector, Faults, PowerLostError
from sim.harness import image_key_of
from sim.hub import HubFlash, SmpServer, SwapKind, Wire, framing_named
from sim.hub.boot import SWAP_STEPS, Bootloader
from sim.hub.wire import WireIO
from sim.image_check import inspect_image
from sim.images import ManufacturerKeys, make_manufacturer_keys, make_signed_image
from sim.pty_port import READ_CHUNK
from sim.timing import Timing
from sim.uart_rx import LineBuffers
from tests.sim.wire import body

MODEL: Final = DeviceModel.parse("1086/57310102")
GUID: Final = Guid(0x00DB000000000001)
INSTANT: Final = Timing(sector_erase_s=0, page_program_s=0, swap_s=0, boot_s=0, reset_s=0)
OLD: Final = FirmwareVersion.parse("01000000")
NEW: Final = FirmwareVersion.parse("04000007")


@cache
def _keys() -> ManufacturerKeys:
    return make_manufacturer_keys(MODEL.manufacturer, 0)


@cache
def _image(version: FirmwareVersion, seed: int = 0) -> bytes:
    return make_signed_image(_keys(), MODEL, version, 8192, seed)


def _server(
    *, locked: bool = False, faults: Faults | None = None, image_check: bool = False
) -> SmpServer:
    flash = HubFlash(primary=inspect_image(_image(OLD)), unlocked=not locked)
    return SmpServer(
        guid=GUID,
        model=MODEL,
        flash=flash,
        device_key=jig_group.device_key(_keys().master_key, GUID.to_bytes()),
        timing=INSTANT,
        faults=FaultInjector(faults or Faults()),
        image_check=image_check,
    )


async def _ask(server: SmpServer, request: Any) -> dict[str, Any]:
    reply = await server.handle_request(bytes(request))
    assert reply is not None
    return body(reply)


async def _upload(server: SmpServer, image: bytes, chunk: int = 1024) -> dict[str, Any]:
    answer: dict[str, Any] = {"off": 0}
    while answer.get("off", len(image)) < len(image):
        offset = answer["off"]
        first = offset == 0
        answer = await _ask(
            server,
            smpimg.ImageUploadWriteRequest(
                off=offset,
                data=image[offset : offset + chunk],
                len=len(image) if first else None,
                sha=hashlib.sha256(image).digest() if first else None,
                image=0 if first else None,
            ),
        )
    return answer


# --- the SMP server, fed frames -----------------------------------------------------------------


async def test_server_answers_echo_identity_and_image_state_without_a_wire() -> None:
    server = _server(locked=True)
    assert await _ask(server, smpos.EchoWriteRequest(d="ping")) == {"r": "ping"}
    identity = await _ask(server, jig_group.IdentityReadRequest())
    assert identity["guid"] == GUID.to_bytes()
    assert identity["locked"] is True
    images = (await _ask(server, smpimg.ImageStatesReadRequest()))["images"]
    assert [(i["slot"], i["version"], i["active"]) for i in images] == [(0, "1.0.0", True)]
    assert images[0]["hash"] == inspect_image(_image(OLD)).tlv_hash
    locked = await _ask(server, smpos.ResetWriteRequest())
    assert locked["rc"] == 11  # EACCESSDENIED
    assert not server.reset_requested


async def test_server_takes_an_upload_and_marks_it_for_test() -> None:
    server = _server()
    image = _image(NEW)
    assert await _upload(server, image) == {"off": len(image)}  # no `match`: Zephyr 3.4
    assert server.images.chunks_written == 8
    assert server.flash.secondary is not None
    assert server.flash.secondary.data == image
    image_hash = inspect_image(image).tlv_hash
    written = await _ask(server, smpimg.ImageStatesWriteRequest(hash=image_hash, confirm=False))
    assert [(i["slot"], i.get("pending")) for i in written["images"]] == [(0, False), (1, True)]
    assert server.flash.pending is SwapKind.TEST
    assert await _ask(server, smpos.ResetWriteRequest()) == {}
    assert server.reset_requested  # the hub's application does the reset
    server.forget_ram()
    assert not server.reset_requested


async def test_server_with_image_check_says_match_or_refuses_a_damaged_image() -> None:
    image = _image(NEW)
    server = _server(image_check=True)
    assert await _upload(server, image) == {"off": len(image), "match": True}
    server = _server(image_check=True)
    damaged = image[:-1] + bytes([image[-1] ^ 1])
    first = smpimg.ImageUploadWriteRequest(
        off=0, data=damaged[:1024], len=len(image), sha=hashlib.sha256(image).digest(), image=0
    )
    answer = await _ask(server, first)
    while "off" in answer and answer["off"] < len(image):
        offset = answer["off"]
        rest = smpimg.ImageUploadWriteRequest(off=offset, data=damaged[offset : offset + 1024])
        answer = await _ask(server, rest)
    assert answer == {"err": {"group": 1, "rc": int(smpimg.IMG_MGMT_ERR.INVALID_HASH)}}
    assert server.flash.upload is None
    assert server.flash.secondary is None


async def test_server_upload_power_loss_is_an_exception_for_the_hub() -> None:
    server = _server(faults=Faults(power_loss_during_upload_at=0.5))
    with pytest.raises(PowerLostError, match="upload at offset 3072"):
        await _upload(server, _image(NEW))
    record = server.flash.upload
    assert record is not None
    assert record.offset == 3072  # the chunk being programmed was not written


# --- the bootloader, on a flash ----------------------------------------------------------------


def _bootloader(flash: HubFlash, faults: Faults | None = None) -> Bootloader:
    return Bootloader(
        flash,
        image_key=image_key_of(_keys()),
        timing=INSTANT,
        faults=FaultInjector(faults or Faults()),
        name="hub",
    )


def _two_slots(active: FirmwareVersion, pending: FirmwareVersion, kind: SwapKind) -> HubFlash:
    return HubFlash(
        primary=inspect_image(_image(active)),
        secondary=inspect_image(_image(pending)),
        pending=kind,
    )


async def test_bootloader_swaps_a_test_image_then_reverts_it_unconfirmed() -> None:
    flash = _two_slots(OLD, NEW, SwapKind.TEST)
    boot = _bootloader(flash)
    assert await boot.boot()
    assert flash.primary.version == NEW
    assert (flash.primary_confirmed, flash.revert_on_boot) == (False, True)
    assert await boot.boot()
    assert flash.primary.version == OLD
    assert flash.primary_confirmed
    assert boot.swaps == 2


async def test_bootloader_rejects_a_downgrade_and_resumes_an_interrupted_swap() -> None:
    flash = _two_slots(NEW, OLD, SwapKind.PERMANENT)
    boot = _bootloader(flash)
    assert await boot.boot()
    assert (flash.primary.version, flash.secondary, boot.images_rejected) == (NEW, None, 1)

    flash = _two_slots(OLD, NEW, SwapKind.PERMANENT)
    boot = _bootloader(flash, Faults(power_loss_during_swap=True))
    with pytest.raises(PowerLostError):
        await boot.boot()
    assert (flash.swap, flash.swap_steps_done) == (SwapKind.PERMANENT, SWAP_STEPS // 2)
    assert await boot.boot()  # power on again: the swap resumes and completes
    assert (flash.primary.version, flash.primary_confirmed, flash.swap) == (NEW, True, None)


# --- fault decisions, from a seed ---------------------------------------------------------------


def _decisions(faults: Faults, responses: int = 200) -> list[tuple[bool, bytes, int | None]]:
    injector = FaultInjector(faults)
    wire = bytes(range(40))
    return [(injector.drops_response(), *injector.corrupted(wire)) for _ in range(responses)]


def test_fault_decisions_repeat_for_a_seed_and_differ_for_another() -> None:
    faults = Faults(seed=7, drop_response_rate=0.2, corrupt_rate=0.2)
    first = _decisions(faults)
    assert first == _decisions(faults)
    assert first != _decisions(faults.model_copy(update={"seed": 8}))
    dropped = sum(drop for drop, _wire, _at in first)
    corrupted = [(wire, at) for _drop, wire, at in first if at is not None]
    assert 20 < dropped < 70
    assert 20 < len(corrupted) < 70
    assert all(wire[at] != at and wire[:at] == bytes(range(at)) for wire, at in corrupted)
    assert _decisions(Faults(seed=7)) == [(False, bytes(range(40)), None)] * 200


def test_one_shot_faults_fire_once() -> None:
    injector = FaultInjector(
        Faults(hang_after_requests=3, power_loss_during_upload_at=0.5, power_loss_during_swap=True)
    )
    assert [injector.hangs_now(n) for n in range(1, 7)] == [False, False, True, False, False, False]
    assert [injector.loses_power_in_upload(k * 100, 1000) for k in range(1, 11)] == [
        False, False, False, False, True, False, False, False, False, False
    ]  # fmt: skip
    assert [injector.loses_power_in_swap(k, 10) for k in range(10)] == [False] * 5 + [True] + [
        False
    ] * 4
    healthy = FaultInjector(Faults())
    assert not healthy.hangs_now(10**6)
    assert healthy.unlock_master_key(b"k" * 32) == b"k" * 32
    assert FaultInjector(Faults(wrong_unlock_key=True)).unlock_master_key(b"k" * 32) != b"k" * 32


# --- the wire, over an in-memory port -----------------------------------------------------------


class MemoryPort:
    """An in-memory byte stream: what the host puts in the hub reads; what the hub writes is
    kept with the time it was written."""

    path = "memory"

    def __init__(self) -> None:
        self._incoming = bytearray()
        self._ready = asyncio.Event()
        self.written: list[tuple[float, bytes]] = []
        self.frames_ended = 0

    def put(self, data: bytes) -> None:
        self._incoming += data
        self._ready.set()

    async def read(self, max_bytes: int = READ_CHUNK) -> bytes:
        while not self._incoming:
            self._ready.clear()
            await self._ready.wait()
        data = bytes(self._incoming[:max_bytes])
        del self._incoming[:max_bytes]
        return data

    async def write(self, data: bytes) -> None:
        self.written.append((asyncio.get_running_loop().time(), data))

    def frame_end(self) -> None:
        self.frames_ended += 1


class Sink:
    """A hub as its wire sees it: frames noted with their arrival time."""

    def __init__(self, *, listening: bool = True) -> None:
        self.epoch = 0
        self.listening = listening
        self.frames: list[tuple[float, bytes]] = []

    def frame_received(self, frame: bytes) -> None:
        self.frames.append((asyncio.get_running_loop().time(), frame))

    def wire_changed(self) -> None:
        pass


BAUD: Final = 115_200  # 11,520 bytes/s


def _wire_io(sink: Sink, framing: str = "raw") -> WireIO:
    timing = Timing(baud=BAUD)
    return WireIO(
        sink,
        wire=Wire(framing_named(framing, timing), timing.bytes_per_s),
        timing=timing,
        line_rx=LineBuffers(count=timing.rx_buf_count),
        name="hub",
    )


@pytest.mark.parametrize("framing", ["raw", "console"])
async def test_wire_hands_a_frame_on_when_its_last_byte_has_arrived(framing: str) -> None:
    sink = Sink()
    io = _wire_io(sink, framing)
    port = MemoryPort()
    request = bytes(smpos.EchoWriteRequest(d="x" * 1000))
    wire = io.wire.framing.encode(request)
    loop = asyncio.get_running_loop()
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(io.receive(port))
        start = loop.time()
        port.put(wire)
        async with asyncio.timeout(2.0):
            while not sink.frames:  # noqa: ASYNC110 - the sink is a plain list
                await asyncio.sleep(0.005)
        task.cancel()
    arrived, frame = sink.frames[0]
    assert frame == request
    wire_s = len(wire) / (BAUD / 10)
    assert wire_s * 0.95 <= arrived - start <= wire_s + 0.1
    assert io.bytes_received == len(wire)


async def test_wire_discards_bytes_while_the_hub_is_not_listening() -> None:
    sink = Sink(listening=False)
    io = _wire_io(sink)
    port = MemoryPort()
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(io.receive(port))
        port.put(bytes(smpos.EchoWriteRequest(d="lost")))
        async with asyncio.timeout(2.0):
            while not io.bytes_discarded:  # noqa: ASYNC110 - a plain counter
                await asyncio.sleep(0.005)
        task.cancel()
    assert sink.frames == []
    assert io.bytes_received == 0


async def test_wire_sends_at_the_wire_rate_and_cuts_a_response_of_an_old_epoch() -> None:
    sink = Sink()
    io = _wire_io(sink)
    port = MemoryPort()
    response = bytes(smpos.EchoWriteResponse(r="y" * 1100))
    loop = asyncio.get_running_loop()
    sent: asyncio.Future[None] = loop.create_future()
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(io.transmit(port))
        start = loop.time()
        io.send(response, sink.epoch, sent)
        await asyncio.wait_for(sent, 2.0)
        done = loop.time()
        cut: asyncio.Future[None] = loop.create_future()
        io.send(response, sink.epoch, cut)
        sink.epoch += 1  # reset: the rest of that response never leaves
        await asyncio.wait_for(cut, 2.0)
        task.cancel()
    wire_s = len(response) / (BAUD / 10)
    assert wire_s * 0.95 <= done - start <= wire_s + 0.1
    decoder = RawFraming(accept_ops=RESPONSE_OPS).decoder()
    sent_bytes = b"".join(data for _at, data in port.written)
    assert decoder.feed(sent_bytes[: len(response)]) == [response]
    assert len(sent_bytes) == len(response)  # nothing of the second one
    assert io.bytes_sent == len(sent_bytes)
    assert port.frames_ended == 2
