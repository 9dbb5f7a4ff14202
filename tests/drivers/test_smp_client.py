"""SmpClient over an in-memory link with a scripted peer: matching, timeouts, errors, link loss."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import cbor2
import pytest
from smp import header as smpheader
from smp import image_management as smpimg
from smp import message as smpmsg
from smp import os_management as smpos

from drivers import jig_group
from drivers.errors import (
    AccessDenied,
    LinkClosed,
    LinkError,
    LinkTimeout,
    SequenceExhausted,
    SmpError,
    UnexpectedResponse,
)
from drivers.framing import ConsoleFraming, RawFraming
from drivers.memory import MemoryTransport, memory_pair
from drivers.smp_client import SmpClient
from drivers.smp_codec import encode_error

WAIT_S = 1.0


@dataclass
class Peer:
    """The device end: collects requests; the test answers them by hand."""

    end: MemoryTransport
    requests: asyncio.Queue[bytes] = field(default_factory=asyncio.Queue)
    lost: list[LinkError] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.end.set_listener(self)

    def frame_received(self, frame: bytes) -> None:
        self.requests.put_nowait(frame)

    def connection_lost(self, error: LinkError) -> None:
        self.lost.append(error)

    async def next(self) -> smpheader.Header:
        async with asyncio.timeout(WAIT_S):
            frame = await self.requests.get()
        return smpheader.Header.loads(frame[:8])

    def echo_reply(self, head: smpheader.Header, text: str) -> None:
        self.end.send(bytes(smpos.EchoWriteResponse(r=text, sequence=head.sequence)))


@pytest.fixture
async def link() -> AsyncIterator[tuple[SmpClient, Peer]]:
    host, hub = memory_pair(names=("slot1", "hub"))
    client = SmpClient(host, timeout_s=WAIT_S, name="rig1/slot1")
    yield client, Peer(hub)
    await client.close()


async def test_out_of_order_replies_reach_their_requests(link: tuple[SmpClient, Peer]) -> None:
    client, peer = link
    futures = [
        client.submit(smpos.EchoWriteRequest(d=f"m{i}"), smpos.EchoWriteResponse) for i in range(3)
    ]
    heads = [await peer.next() for _ in range(3)]
    assert len({h.sequence for h in heads}) == 3
    assert client.in_flight == 3
    for i, head in reversed(list(enumerate(heads))):
        peer.echo_reply(head, f"m{i}")
    answers = await asyncio.gather(*futures)
    assert [a.r for a in answers] == ["m0", "m1", "m2"]
    assert client.in_flight == 0
    assert client.link_errors["unsolicited"] == 0


async def test_request_sequence_is_the_clients_not_the_models(
    link: tuple[SmpClient, Peer],
) -> None:
    client, peer = link
    task = asyncio.ensure_future(
        client.request(smpos.EchoWriteRequest(d="x", sequence=200), smpos.EchoWriteResponse)
    )
    head = await peer.next()
    assert head.sequence == 0
    peer.echo_reply(head, "x")
    assert (await task).r == "x"


async def test_timeout_raises_and_late_reply_is_counted(link: tuple[SmpClient, Peer]) -> None:
    client, peer = link
    with pytest.raises(LinkTimeout) as caught:
        await client.request(smpos.EchoWriteRequest(d="x"), smpos.EchoWriteResponse, 0.05)
    assert caught.value.port == "rig1/slot1"
    assert "os echo write" in str(caught.value)
    assert client.in_flight == 0
    assert client.link_errors["timeout"] == 1
    head = await peer.next()
    peer.echo_reply(head, "x")  # late: nobody waits any more
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert client.link_errors["unsolicited"] == 1


async def test_a_probe_that_times_out_is_no_link_error_nor_is_its_late_reply(
    link: tuple[SmpClient, Peer],
) -> None:
    """A boot wait's poll (`counted=False`): a booting hub is expected to be silent. Its
    sequence, once reused by a counted request, counts as usual again."""
    client, peer = link
    for cancelled in (False, True):
        probe = client.request(
            smpos.EchoWriteRequest(d="boot?"), smpos.EchoWriteResponse, 0.05, counted=False
        )
        with pytest.raises((LinkTimeout, TimeoutError)):
            async with asyncio.timeout(0.02 if cancelled else None):
                await probe
        head = await peer.next()
        peer.echo_reply(head, "boot?")  # late: the boot wait has moved on
        await asyncio.sleep(0)
        await asyncio.sleep(0)
    assert client.link_errors == {}
    with pytest.raises(LinkTimeout):
        await client.request(smpos.EchoWriteRequest(d="x"), smpos.EchoWriteResponse, 0.05)
    assert client.link_errors == {"timeout": 1}


async def test_unsolicited_reply_is_ignored(link: tuple[SmpClient, Peer]) -> None:
    client, peer = link
    peer.end.send(bytes(smpos.EchoWriteResponse(r="?", sequence=77)))
    peer.end.send(bytes(smpos.EchoWriteRequest(d="a request, not a response")))
    task = asyncio.ensure_future(
        client.request(smpos.EchoWriteRequest(d="y"), smpos.EchoWriteResponse)
    )
    head = await peer.next()
    # A reply with the right sequence but the wrong command is not the answer either.
    peer.end.send(bytes(smpos.ResetWriteResponse(sequence=head.sequence)))
    peer.echo_reply(head, "y")
    assert (await task).r == "y"
    assert client.link_errors["unsolicited"] == 2
    assert client.link_errors["undecodable"] == 1


async def test_error_v1_access_denied(link: tuple[SmpClient, Peer]) -> None:
    client, peer = link
    task = asyncio.ensure_future(
        client.request(
            smpimg.ImageUploadWriteRequest(off=0, data=b"x", len=1),
            smpimg.ImageUploadWriteResponse,
        )
    )
    head = await peer.next()
    peer.end.send(encode_error(head, 11, group_rc=False, reason="locked"))
    with pytest.raises(AccessDenied) as caught:
        await task
    err = caught.value
    assert (err.rc, err.group, err.group_rc, err.reason) == (11, None, None, "locked")
    assert (err.request_group, err.request_command) == (1, 1)
    assert err.error_name == "EACCESSDENIED"
    assert err.code == "access_denied"
    assert "rig1/slot1" in str(err)
    assert "unlock" in str(err)


async def test_error_v1_other_codes_and_unknown_codes(link: tuple[SmpClient, Peer]) -> None:
    client, peer = link
    for rc, name in ((8, "ENOTSUP"), (300, "")):
        task = asyncio.ensure_future(
            client.request(smpos.ResetWriteRequest(), smpos.ResetWriteResponse)
        )
        head = await peer.next()
        peer.end.send(encode_error(head, rc, group_rc=False))
        with pytest.raises(SmpError) as caught:
            await task
        assert not isinstance(caught.value, AccessDenied)
        assert caught.value.rc == rc
        assert caught.value.error_name == name
        assert (caught.value.request_group, caught.value.request_command) == (0, 5)


async def test_error_v2_maps_group_and_code(link: tuple[SmpClient, Peer]) -> None:
    client, peer = link
    cases: list[tuple[smpmsg.Request, type[smpmsg.Response], int, str]] = [
        (
            smpimg.ImageUploadWriteRequest(off=0, data=b"x", len=1),
            smpimg.ImageUploadWriteResponse,
            int(smpimg.IMG_MGMT_ERR.INVALID_HASH),
            "INVALID_HASH",
        ),
        (
            jig_group.UnlockWriteRequest(mac=bytes(32)),
            jig_group.UnlockWriteResponse,
            int(jig_group.JigMgmtErr.BAD_MAC),
            "BAD_MAC",
        ),
        (
            smpimg.ImageUploadWriteRequest(off=0, data=b"x", len=1),
            smpimg.ImageUploadWriteResponse,
            999,  # a code the group's enum does not know
            "",
        ),
    ]
    for request, response_type, code, name in cases:
        task = asyncio.ensure_future(client.request(request, response_type))
        head = await peer.next()
        peer.end.send(encode_error(head, code, group_rc=True))
        with pytest.raises(SmpError) as caught:
            await task
        err = caught.value
        assert err.rc is None
        assert err.group == head.group_id
        assert err.group_rc == code
        assert err.error_name == name
        assert err.request_group == head.group_id


async def test_reply_that_does_not_decode_fails_only_its_request(
    link: tuple[SmpClient, Peer],
) -> None:
    client, peer = link
    bad = asyncio.ensure_future(
        client.request(smpos.EchoWriteRequest(d="a"), smpos.EchoWriteResponse)
    )
    good = asyncio.ensure_future(
        client.request(smpos.EchoWriteRequest(d="b"), smpos.EchoWriteResponse)
    )
    head_a, head_b = await peer.next(), await peer.next()
    body = cbor2.dumps({"wrong": 1})
    wrong = smpheader.Header(
        op=smpheader.OP.WRITE_RSP,
        version=smpheader.Version.V2,
        flags=smpheader.Flag(0),
        length=len(body),
        group_id=0,
        sequence=head_a.sequence,
        command_id=0,
    )
    peer.end.send(bytes(wrong) + body)
    peer.echo_reply(head_b, "b")
    with pytest.raises(UnexpectedResponse, match="EchoWriteResponse"):
        await bad
    assert (await good).r == "b"


async def test_non_cbor_body_is_a_protocol_error(link: tuple[SmpClient, Peer]) -> None:
    client, peer = link
    task = asyncio.ensure_future(
        client.request(smpos.EchoWriteRequest(d="a"), smpos.EchoWriteResponse)
    )
    head = await peer.next()
    frame = bytearray(bytes(smpos.EchoWriteResponse(r="a", sequence=head.sequence)))
    frame[8:] = b"\xff" * (len(frame) - 8)
    peer.end.send(bytes(frame))
    with pytest.raises(UnexpectedResponse, match="not CBOR"):
        await task


async def test_link_loss_fails_every_pending_request(link: tuple[SmpClient, Peer]) -> None:
    client, peer = link
    futures = [
        client.submit(smpos.EchoWriteRequest(d=str(i)), smpos.EchoWriteResponse) for i in range(5)
    ]
    for _ in range(5):
        await peer.next()
    peer.end.break_link("cable pulled")
    results = await asyncio.gather(*futures, return_exceptions=True)
    assert all(isinstance(r, LinkClosed) for r in results)
    assert all("cable pulled" in str(r) for r in results)
    assert client.in_flight == 0
    assert client.is_closed
    with pytest.raises(LinkClosed):
        client.submit(smpos.EchoWriteRequest(d="late"), smpos.EchoWriteResponse)


async def test_close_fails_pending_requests(link: tuple[SmpClient, Peer]) -> None:
    client, peer = link
    future = client.submit(smpos.EchoWriteRequest(d="x"), smpos.EchoWriteResponse)
    await peer.next()
    await client.close()
    with pytest.raises(LinkClosed, match="closed by jigd"):
        await future
    assert peer.lost  # the device side heard it too


async def test_cancelled_request_forgets_its_sequence(link: tuple[SmpClient, Peer]) -> None:
    client, peer = link
    task = asyncio.ensure_future(
        client.request(smpos.EchoWriteRequest(d="x"), smpos.EchoWriteResponse)
    )
    head = await peer.next()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert client.in_flight == 0
    peer.echo_reply(head, "x")
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert client.link_errors["unsolicited"] == 1


async def test_sequence_numbers_wrap_and_skip_those_in_flight(
    link: tuple[SmpClient, Peer],
) -> None:
    client, peer = link
    held = client.submit(smpos.EchoWriteRequest(d="held"), smpos.EchoWriteResponse, 30.0)
    held_head = await peer.next()
    assert held_head.sequence == 0
    seen: list[int] = []
    for i in range(300):
        task = asyncio.ensure_future(
            client.request(smpos.EchoWriteRequest(d=str(i)), smpos.EchoWriteResponse)
        )
        head = await peer.next()
        seen.append(head.sequence)
        peer.echo_reply(head, str(i))
        assert (await task).r == str(i)
    assert seen[:3] == [1, 2, 3]
    assert seen[254] == 255
    assert seen[255] == 1  # 0 is still in flight: skipped
    assert 0 not in seen
    peer.echo_reply(held_head, "held")
    assert (await held).r == "held"


async def test_all_sequences_in_flight_is_refused(link: tuple[SmpClient, Peer]) -> None:
    client, _peer = link
    futures = [
        client.submit(smpos.EchoWriteRequest(d="x"), smpos.EchoWriteResponse, 30.0)
        for _ in range(256)
    ]
    with pytest.raises(SequenceExhausted):
        client.submit(smpos.EchoWriteRequest(d="x"), smpos.EchoWriteResponse)
    for future in futures:
        future.cancel()
    await asyncio.sleep(0)
    assert client.in_flight == 0


@pytest.mark.parametrize("framing", [RawFraming(), ConsoleFraming()], ids=lambda f: f.name)
async def test_requests_through_a_byte_stream_one_byte_at_a_time(framing: RawFraming) -> None:
    host, hub = memory_pair(framing=framing, chunk_size=1)
    client = SmpClient(host, timeout_s=WAIT_S)
    peer = Peer(hub)
    try:
        task = asyncio.ensure_future(
            client.request(smpos.EchoWriteRequest(d="stream"), smpos.EchoWriteResponse)
        )
        head = await peer.next()
        hub.send_bytes(b"log noise\n\x06\x09junk")
        peer.echo_reply(head, "stream")
        assert (await task).r == "stream"
        assert host.bytes_dropped > 0
    finally:
        await client.close()
