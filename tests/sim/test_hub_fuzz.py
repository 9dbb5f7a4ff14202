"""Whatever a request holds, the simulated hub answers it and keeps going."""

from __future__ import annotations

import asyncio
import struct
from functools import cache

import cbor2
from hypothesis import given, settings
from hypothesis import strategies as st

from jigd.model import DeviceModel, FirmwareVersion, Guid
from sim.harness import image_key_of
from sim.hub import SimHub
from sim.image_check import FlashImage, inspect_image
from sim.images import make_manufacturer_keys, make_signed_image
from sim.timing import Timing

MODEL = DeviceModel.parse("1086/57310102")
INSTANT = Timing(sector_erase_s=0, page_program_s=0, swap_s=0, boot_s=0, reset_s=0)
FIELDS = [
    "d", "off", "data", "len", "sha", "image", "upgrade", "hash", "confirm", "mac", "force",
    "boot_mode", "header", "sequence", "version", "smp_data", "x",
]  # fmt: skip
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.binary(max_size=40),
    st.text(max_size=10),
    st.lists(st.integers(0, 300), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@cache
def _image() -> FlashImage:
    keys = make_manufacturer_keys(MODEL.manufacturer, 0)
    data = make_signed_image(keys, MODEL, FirmwareVersion.parse("01000000"), 4096, 0)
    return inspect_image(data)


async def _answer(frame: bytes) -> bytes | None:
    keys = make_manufacturer_keys(MODEL.manufacturer, 0)
    hub = SimHub(
        guid=Guid(1),
        model=MODEL,
        image=_image(),
        master_key=keys.master_key,
        image_key=image_key_of(keys),
        timing=INSTANT,
        locked=False,
    )
    return await hub.handle_request(frame)


@settings(max_examples=300, deadline=None)
@given(
    group=st.sampled_from([0, 1, 64, 2, 99]),
    command=st.integers(0, 8),
    op=st.sampled_from([0, 2]),
    version=st.sampled_from([0, 1]),
    sequence=st.integers(0, 255),
    payload=st.dictionaries(st.sampled_from(FIELDS), VALUES, max_size=6),
)
def test_any_request_gets_an_answer_that_mirrors_its_header(
    *, group: int, command: int, op: int, version: int, sequence: int, payload: dict[str, object]
) -> None:
    body = cbor2.dumps(payload)
    head = struct.pack("!BBHHBB", (version << 3) | op, 0, len(body), group, sequence, command)
    reply = asyncio.run(_answer(head + body))
    assert reply is not None
    ver_op, _flags, length, reply_group, reply_sequence, reply_command = struct.unpack(
        "!BBHHBB", reply[:8]
    )
    assert ver_op == (version << 3) | (op + 1)
    assert (reply_group, reply_sequence, reply_command) == (group, sequence, command)
    assert length == len(reply) - 8
    assert isinstance(cbor2.loads(reply[8:]), dict)


def test_a_frame_without_a_request_header_is_not_answered() -> None:
    body = cbor2.dumps({})
    response_op = struct.pack("!BBHHBB", 0x08 | 1, 0, len(body), 0, 1, 0)
    assert asyncio.run(_answer(response_op + body)) is None
