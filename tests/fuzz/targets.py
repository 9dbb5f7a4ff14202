"""The fuzz targets: each parser of outside input, what it is fed, and the errors it documents.

A target's property: whatever the input, the code returns a well-formed result or raises one of
its documented errors (with a message); any other exception is a defect. A target opens a
`session` (an event loop, a scratch directory) once per run and checks one input per call, so
the suite (`test_fuzz.py`) and the long run (`bench/fuzz.py`) share every definition.

The documented errors, target by target:

- manifest_bytes, manifest_csv (`jigd.manifest.parse_manifest`): `ManifestError`.
- config (`jigd.config.load_config`): `ConfigError`.
- console_stream, raw_stream (`drivers.framing` decoders): none; bad bytes are dropped and
  counted.
- usb_transfers (`drivers.usb_bulk`): none; ValueError only for a read longer than asked, a
  caller's mistake, never generated.
- smp_response (`drivers.smp_client.SmpClient`, a reply to a pending request): the request's
  future fails with `ProtocolError`; `frame_received` itself never raises.
- control_body (`jigd.control_api.BatchImportRequest.parse`): `ApiError`, status 400.
- catalog_index (`firmware_catalog.Catalog.open` on a catalog.json): `CatalogError`.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import cbor2
import tomli_w
from hypothesis import strategies as st
from smp import image_management as smpimg
from smp import message as smpmsg
from smp import os_management as smpos

from drivers import jig_group
from drivers.errors import DriverError, LinkError, ProtocolError
from drivers.framing import (
    ALL_OPS,
    CONTINUE,
    DEFAULT_MAX_FRAME,
    REQUEST_OPS,
    RESPONSE_OPS,
    SMP_HEADER_SIZE,
    START,
    ConsoleDecoder,
    ConsoleFraming,
    RawDecoder,
    parse_header,
)
from drivers.hub_link import LinkOptions, SmpHubLink
from drivers.memory import MemoryTransport, memory_pair
from drivers.smp_client import SmpClient
from drivers.usb_bulk import TransferAssembler, TransferDecoder, split_packets
from firmware_catalog import Catalog, CatalogError
from jigd.config import ConfigError, StationConfig, load_config
from jigd.control_api import ApiError, BatchImportRequest
from jigd.manifest import COLUMNS, ManifestError, parse_manifest
from tests.fuzz.strategies import (
    GOOD_BODIES,
    answers,
    byte_mutations,
    cbor_bodies,
    json_text,
    json_values,
    mutated,
    one_string_replaced,
    smp_frame,
    smp_frames,
    structure_text,
    toml_values,
    url_like,
)

__all__ = ["CATALOG_ENTRY", "TARGETS", "AnsweringHub", "Target"]

Check = Callable[[Any], None]
_T = TypeVar("_T")
_E = TypeVar("_E", bound=Exception)


@dataclass(frozen=True)
class Target:
    """One fuzz target: its inputs and a session that checks one input per call."""

    name: str
    code: str  # what it exercises, for the printed table
    strategy: st.SearchStrategy[Any]
    session: Callable[[], AbstractContextManager[Check]]


def _outcome(call: Callable[[], _T], documented: type[_E]) -> _T | _E:
    """What `call` returned, or the documented error it raised; anything else propagates."""
    try:
        return call()
    except documented as exc:
        return exc


def _pure(check: Check) -> Callable[[], AbstractContextManager[Check]]:
    return lambda: nullcontext(check)


# --- manifest -------------------------------------------------------------------------------

_HEX = "0123456789abcdefABCDEF"
_HEADER_NAMES = [*COLUMNS, "GUID", " guid ", "Model", "", "serial", "guid\x00", "\ufeffguid"]


def _guid_form(value: int, form: int) -> str:
    text = f"{value:016X}"
    pairs = [text[i : i + 2] for i in range(0, 16, 2)]
    return [text, text.lower(), "-".join(pairs), ":".join(pairs).lower()][form]


def _hex_cells(width: int) -> st.SearchStrategy[str]:
    return st.one_of(
        st.integers(0, 16**width - 1).map(lambda v: f"{v:0{width}X}"),
        st.text(alphabet=_HEX + " g-", max_size=width + 2),
        st.sampled_from(["\uff11" * width, "\u0661" * width, "0x" + "1" * (width - 2)]),
    )


_CELLS: dict[str, st.SearchStrategy[str]] = {
    "guid": st.one_of(
        st.builds(
            _guid_form, st.integers(0, 2**64 - 1) | st.sampled_from([1, 0xDB]), st.integers(0, 3)
        ),
        st.text(alphabet=_HEX + "-: ", max_size=24),
    ),
    "manufacturer": _hex_cells(4),
    "model": _hex_cells(8),
    "firmware_version": _hex_cells(8),
}
_ANY_CELL = st.text(max_size=12) | st.text(alphabet='",\r\n \x00\ufeff', max_size=4)
_QUOTING = st.sampled_from(["plain", "plain", "plain", "quoted", "broken"])


def _csv_cell(text: str, quoting: str) -> str:
    if quoting == "quoted":
        return '"' + text.replace('"', '""') + '"'
    if quoting == "broken":
        return '"' + text
    return text


# A written cell for each header name: a value of that column's kind, or anything.
_CSV_CELLS = {
    name: st.builds(_csv_cell, _CELLS.get(name.strip().lower(), _ANY_CELL) | _ANY_CELL, _QUOTING)
    for name in _HEADER_NAMES
}
_HEADERS = st.permutations(list(COLUMNS)).map(list) | st.lists(
    st.sampled_from(_HEADER_NAMES), min_size=1, max_size=6
)
_BOM = st.sampled_from(["", "\ufeff"])
_LINE_END = st.sampled_from(["\n", "\r\n", "\r", "\n\n"])


@st.composite
def manifest_csv(draw: st.DrawFn) -> bytes:
    """A CSV manifest that is nearly right: known and unknown columns, cells of each column's
    kind or not, rows of the wrong width, quotes, line ends of every kind, a BOM, bad bytes."""
    header = draw(_HEADERS)
    text = draw(_BOM) + ",".join(header)
    text += draw(_LINE_END)
    for _ in range(draw(st.integers(0, 6))):
        width = len(header) if draw(st.booleans()) else draw(st.integers(0, len(header) + 2))
        names = header + [""] * max(0, width - len(header))
        text += ",".join(draw(_CSV_CELLS[name]) for name in names[:width]) + draw(_LINE_END)
    data = text.encode("utf-8")
    return data if draw(st.booleans()) else draw(byte_mutations(data))


def _check_manifest(data: bytes) -> None:
    rows = _outcome(lambda: parse_manifest(data, "fuzz.csv"), ManifestError)
    if isinstance(rows, ManifestError):
        assert rows.problems, "a ManifestError without problems"
        assert all(p.startswith("fuzz.csv") for p in rows.problems)
        return
    assert rows, "a manifest accepted with no rows"
    guids = [row.guid for row in rows]
    assert len(set(guids)) == len(guids), "a GUID accepted twice"


# --- config ---------------------------------------------------------------------------------

_BASE_CONFIG: dict[str, Any] = {
    "station": "fuzz-1",
    "catalog_dir": "catalog",
    "control_socket": "control.sock",
    "metrics_port": 9100,
    "pilot_models": ["1086/57310102"],
    "store": {"url": "sqlite:store.sqlite3"},
    "rigs": [
        {
            "rig": 1,
            "controller": "/dev/rig1-ctl",
            "slots": [
                {"slot": 1, "port": "/dev/rig1-slot1", "framing": "console", "buf_size": 2048},
                {
                    "slot": 2,
                    "transport": "usb",
                    "port": "1-1.3",
                    "usb_vendor_id": 0x2FE3,
                    "usb_product_id": 0x0100,
                },
            ],
        }
    ],
    "hub_models": [{"device_model": "1086/57310102", "line_buffers": 4}],
    "mqtt": {"enabled": True, "host": "broker", "port": 8883, "tls": True, "keepalive_s": 10.0},
    "secrets": {"master_keys_file": "keys.toml"},
    "retries": {"stage_attempts": 3, "request_retries": 2, "rig_reconnect_max_s": 5.0},
    "timeouts": {"request_s": 2.0, "upload_s": 600.0, "shutdown_s": 30.0},
}
_BASE_TOML = tomli_w.dumps(_BASE_CONFIG).encode("utf-8")

config_inputs = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=300).map(lambda t: t.encode("utf-8")),
    byte_mutations(_BASE_TOML),
    mutated(_BASE_CONFIG, toml_values).map(lambda tree: tomli_w.dumps(tree).encode("utf-8")),
    # One string (a path, a URL, a name) replaced, the rest valid.
    one_string_replaced(_BASE_CONFIG, url_like | structure_text).map(
        lambda tree: tomli_w.dumps(tree).encode("utf-8")
    ),
)


@contextmanager
def _config_session() -> Iterator[Check]:
    with tempfile.TemporaryDirectory(prefix="fuzz-config-") as scratch:
        path = Path(scratch) / "jigd.toml"

        def check(data: bytes) -> None:
            path.write_bytes(data)
            config = _outcome(lambda: load_config(path), ConfigError)
            if isinstance(config, ConfigError):
                assert config.problems, "a ConfigError without problems"
                assert str(config).startswith(str(path))
                return
            assert isinstance(config, StationConfig)

        yield check


# --- framing --------------------------------------------------------------------------------

_CONSOLE = ConsoleFraming()
_MAX_FRAMES = [64, 256, DEFAULT_MAX_FRAME]
_OPS = [ALL_OPS, REQUEST_OPS, RESPONSE_OPS]


def _stream_pieces(encode: Callable[[bytes], bytes]) -> st.SearchStrategy[bytes]:
    """Noise, encoded frames whole or damaged, and lone delimiters."""
    frames = smp_frames.map(encode)
    return st.one_of(
        st.binary(max_size=80),
        frames,
        frames.flatmap(byte_mutations),
        st.sampled_from([START, CONTINUE, b"\n", b"\x06", b"\x04", START + b"QUFB" * 40]),
    )


def _streams(encode: Callable[[bytes], bytes]) -> st.SearchStrategy[Any]:
    return st.tuples(
        st.lists(_stream_pieces(encode), max_size=6).map(b"".join),
        # Bytes per feed() call; 0 is a reset() (the link went idle) at that point.
        st.lists(st.integers(0, 200), min_size=1, max_size=10).map(
            lambda c: c if any(c) else [*c, 1]
        ),
        st.sampled_from(_MAX_FRAMES),
        st.sampled_from(_OPS),
    )


def _feed(decoder: RawDecoder | ConsoleDecoder, stream: bytes, chunks: list[int]) -> list[bytes]:
    frames: list[bytes] = []
    pos = turn = 0
    while pos < len(stream):
        size = chunks[turn % len(chunks)]
        turn += 1
        if size == 0:
            decoder.reset()
            continue
        frames += decoder.feed(stream[pos : pos + size])
        pos += size
    decoder.reset()
    return frames


def _assert_frame(frame: bytes, max_frame: int, ops: frozenset[int]) -> None:
    head = parse_header(frame)
    assert head is not None, f"not an SMP frame: {frame!r}"
    assert len(frame) == SMP_HEADER_SIZE + head.length <= max_frame
    assert head.op in ops
    assert head.flags == 0
    assert isinstance(cbor2.loads(frame[SMP_HEADER_SIZE:]), dict)


def _check_raw(value: tuple[bytes, list[int], int, frozenset[int]]) -> None:
    stream, chunks, max_frame, ops = value
    decoder = RawDecoder(max_frame=max_frame, accept_ops=ops)
    frames = _feed(decoder, stream, chunks)
    for frame in frames:
        _assert_frame(frame, max_frame, ops)
    assert decoder.dropped_bytes + sum(map(len, frames)) == len(stream), "bytes unaccounted"


def _check_console(value: tuple[bytes, list[int], int, frozenset[int]]) -> None:
    stream, chunks, max_frame, _ = value
    decoder = ConsoleDecoder(max_frame=max_frame)
    frames = _feed(decoder, stream, chunks)
    for frame in frames:
        assert SMP_HEADER_SIZE <= len(frame) <= max_frame
    assert decoder.dropped_bytes <= len(stream)


# --- USB ------------------------------------------------------------------------------------


_READ_SIZES = st.sampled_from([1, 8, 64, 512, 4096])
_MAX_TRANSFERS = st.sampled_from([64, 512, DEFAULT_MAX_FRAME])
_READ_KINDS = st.sampled_from(("transfer", "transfer", "stray", "reset"))
_TRANSFERS = st.lists(smp_frames, min_size=1, max_size=2).map(b"".join)
_TRANSFERS = _TRANSFERS | _TRANSFERS.flatmap(byte_mutations)


@st.composite
def usb_reads(draw: st.DrawFn) -> tuple[int, int, frozenset[int], list[bytes | None]]:
    """What successive bulk reads of `read_size` bytes return: transfers cut into packets,
    stray short reads, and None for a reopened link."""
    read_size = draw(_READ_SIZES)
    reads: list[bytes | None] = []
    for _ in range(draw(st.integers(0, 5))):
        kind = draw(_READ_KINDS)
        if kind == "reset":
            reads.append(None)
        elif kind == "stray":
            reads.append(draw(st.binary(max_size=read_size)))
        else:
            data = draw(_TRANSFERS)
            reads += split_packets(data, read_size, terminate=draw(st.booleans()))
    return read_size, draw(_MAX_TRANSFERS), draw(st.sampled_from(_OPS)), reads


def _check_usb(value: tuple[int, int, frozenset[int], list[bytes | None]]) -> None:
    read_size, max_transfer, ops, reads = value
    assembler = TransferAssembler(read_size=read_size, max_transfer=max_transfer)
    decoder = TransferDecoder(accept_ops=ops)
    fed = transferred = 0
    frames: list[bytes] = []
    for chunk in reads:
        if chunk is None:
            assembler.reset()
            continue
        fed += len(chunk)
        transfer = assembler.feed(chunk)
        if transfer is not None:
            transferred += len(transfer)
            frames += decoder.feed(transfer)
    for frame in frames:
        _assert_frame(frame, DEFAULT_MAX_FRAME, ops)
    assert assembler.dropped_bytes + transferred + assembler.pending == fed
    assert decoder.dropped_bytes + sum(map(len, frames)) == transferred


# --- SMP responses --------------------------------------------------------------------------

# Every request jigd sends, with the response model it expects.
_EXCHANGES: list[tuple[smpmsg.Request, type[smpmsg.Response]]] = [
    (smpos.EchoWriteRequest(d="fuzz"), smpos.EchoWriteResponse),
    (smpos.ResetWriteRequest(), smpos.ResetWriteResponse),
    (smpos.MCUMgrParametersReadRequest(), smpos.MCUMgrParametersReadResponse),
    (smpimg.ImageStatesReadRequest(), smpimg.ImageStatesReadResponse),
    (smpimg.ImageStatesWriteRequest(confirm=True), smpimg.ImageStatesWriteResponse),
    (smpimg.ImageUploadWriteRequest(off=0, data=b"fuzz"), smpimg.ImageUploadWriteResponse),
    (jig_group.IdentityReadRequest(), jig_group.IdentityReadResponse),
    (jig_group.UnlockChallengeRequest(), jig_group.UnlockChallengeResponse),
    (jig_group.UnlockWriteRequest(mac=bytes(32)), jig_group.UnlockWriteResponse),
    (jig_group.LockWriteRequest(), jig_group.LockWriteResponse),
]


@dataclass(frozen=True)
class Reply:
    """A frame that answers request `exchange` (its header fields None: the request's own),
    or `raw` bytes handed to the client as a frame."""

    exchange: int
    body: bytes = b""
    op: int | None = None
    version: int = 1
    flags: int = 0
    length: int | None = None
    group: int | None = None
    command: int | None = None
    sequence_shift: int = 0
    raw: bytes | None = None


def _mostly_none(values: st.SearchStrategy[int]) -> st.SearchStrategy[int | None]:
    return st.one_of(*[st.none()] * 7, values)  # mostly the request's own value


def _replies_to(exchange: int) -> st.SearchStrategy[Reply]:
    request, _ = _EXCHANGES[exchange]
    head = request.header
    return st.builds(
        Reply,
        exchange=st.just(exchange),
        body=answers(int(head.op), int(head.group_id), int(head.command_id)),
        op=_mostly_none(st.integers(0, 7)),
        version=st.sampled_from([1] * 6 + [0, 2, 3]),
        flags=st.sampled_from([0] * 7 + [1, 0xFF]),
        length=_mostly_none(st.integers(0, 0xFFFF)),
        group=_mostly_none(st.sampled_from([0, 1, 64, 9])),
        command=_mostly_none(st.integers(0, 255)),
        sequence_shift=st.sampled_from([0] * 7 + [1, 255]),
    )


_REPLIES = [_replies_to(i) for i in range(len(_EXCHANGES))]

_ANSWERS = st.integers(0, len(_EXCHANGES) - 1).flatmap(_REPLIES.__getitem__)
smp_replies = st.one_of(
    _ANSWERS,
    _ANSWERS,
    _ANSWERS,
    st.builds(
        Reply, exchange=st.integers(0, len(_EXCHANGES) - 1), raw=st.binary(max_size=60) | smp_frames
    ),
)


@contextmanager
def _smp_session() -> Iterator[Check]:
    with asyncio.Runner() as runner:
        host, _hub = memory_pair(names=("rig1/slot1", "hub"))
        client = SmpClient(host, timeout_s=60.0)

        async def answer(reply: Reply) -> None:
            request, response_type = _EXCHANGES[reply.exchange]
            future = client.submit(request, response_type)
            head = parse_header(host.frames_sent.pop())
            assert head is not None
            if reply.raw is not None:
                frame = reply.raw
            else:
                frame = smp_frame(
                    op=head.op + 1 if reply.op is None else reply.op,
                    version=reply.version,
                    flags=reply.flags,
                    length=reply.length,
                    group=head.group_id if reply.group is None else reply.group,
                    sequence=head.sequence + reply.sequence_shift,
                    command=head.command_id if reply.command is None else reply.command,
                    body=reply.body,
                )
            client.frame_received(frame)
            if not future.done():
                future.cancel()
            await asyncio.sleep(0)  # the client forgets the request
            if future.cancelled():
                return
            error = future.exception()
            if error is None:
                assert isinstance(future.result(), response_type)
            elif not isinstance(error, ProtocolError):
                raise error
            else:
                assert str(error).startswith("rig1/slot1: ")

        def check(reply: Reply) -> None:
            runner.run(answer(reply))

        try:
            yield check
        finally:
            runner.run(client.close())


# --- hub link: what the daemon makes of a hub's answers ------------------------------------

_LINK_CALLS: dict[str, Callable[[SmpHubLink], Awaitable[object]]] = {
    "identify": lambda link: link.identify(),
    "unlock": lambda link: link.unlock(bytes(32)),
    "image_state": lambda link: link.image_state(),
    "mark_test": lambda link: link.mark_test(bytes(32)),
    "confirm": lambda link: link.confirm(),
    "reset": lambda link: link.reset(),
    "lock": lambda link: link.lock(),
    "echo": lambda link: link.echo("fuzz"),
    "params": lambda link: link.params(),
}

# A HubLink call, and the bodies the hub answers its requests with, in turn (None: the right
# body for the request, so that a call of several requests gets past the first).
hub_conversations = st.tuples(
    st.sampled_from(sorted(_LINK_CALLS)),
    st.lists(st.none() | cbor_bodies, min_size=1, max_size=4),
)


class AnsweringHub:
    """The hub end of the link: answers every request, in a header that matches it, with the
    next of `bodies` (so the host never waits for a timeout)."""

    def __init__(self, end: MemoryTransport) -> None:
        self.end = end
        self.bodies: list[bytes | None] = [None]
        self.turn = 0
        end.set_listener(self)

    def frame_received(self, frame: bytes) -> None:
        head = parse_header(frame)
        assert head is not None
        body = self.bodies[self.turn % len(self.bodies)]
        self.turn += 1
        if body is None:
            body = GOOD_BODIES[(head.op, head.group_id, head.command_id)]
        reply = smp_frame(
            op=head.op + 1,
            group=head.group_id,
            sequence=head.sequence,
            command=head.command_id,
            body=body,
        )
        self.end.send(reply)

    def connection_lost(self, error: LinkError) -> None:
        pass


@contextmanager
def _hub_link_session() -> Iterator[Check]:
    with asyncio.Runner() as runner:
        host, hub_end = memory_pair(names=("rig1/slot1", "hub"))
        hub = AnsweringHub(hub_end)
        options = LinkOptions(timeout_s=60.0, request_retries=1)
        link = SmpHubLink(SmpClient(host, timeout_s=60.0), options=options)

        async def converse(value: tuple[str, list[bytes | None]]) -> None:
            name, hub.bodies = value
            hub.turn = 0
            error: DriverError | None = None
            try:
                await _LINK_CALLS[name](link)
            except DriverError as exc:
                error = exc
            assert error is None or str(error).startswith("rig1/slot1: ")

        def check(value: tuple[str, list[bytes | None]]) -> None:
            runner.run(converse(value))

        try:
            yield check
        finally:
            runner.run(link.close())


# --- control API ----------------------------------------------------------------------------

_IMPORT_BODY = {
    "manifest": "guid\n00-DB-12-34-56-78-90-A0\n",
    "source": "pallet.csv",
    "booking": "WO-1",
    "party": "SEC-P1",
}

control_bodies = st.one_of(
    st.text(max_size=200),
    json_values.map(json_text),
    mutated(_IMPORT_BODY, json_values).map(json_text),
    byte_mutations(json.dumps(_IMPORT_BODY).encode("utf-8")).map(
        lambda b: b.decode("utf-8", errors="replace")  # a body that is not UTF-8 is refused first
    ),
)


def _check_control(body: str) -> None:
    request = _outcome(lambda: BatchImportRequest.parse(body), ApiError)
    if isinstance(request, ApiError):
        assert request.status == 400
        assert request.body.error
        json.dumps(request.body.to_json())  # what the middleware sends
        return
    request.manifest.encode("utf-8")  # no lone surrogate: the daemon encodes it (was a 500)
    for name in ("source", "booking", "party"):
        assert getattr(request, name).strip()


# --- catalog --------------------------------------------------------------------------------

# A valid catalog.json entry (its image is not there: that is for `jigd catalog verify`).
CATALOG_ENTRY = {
    "manufacturer": "1086",
    "model": "57310102",
    "firmware_version": "04000007",
    "sha256": "ab" * 32,
    "image_hash": "cd" * 32,
    "size": 4096,
    "status": "production",
    "released": "2025-06-02",
    "gbcs": "4.1",
    "chts": "1.0",
    "notes": "",
}
_CATALOG = {
    "schema": "jigd.catalog/2",
    "entries": [
        CATALOG_ENTRY,
        {**CATALOG_ENTRY, "firmware_version": "04010000", "status": "pilot"},
    ],
}
_ENCODINGS = ["utf-8", "utf-8", "utf-8-sig", "utf-16", "utf-32"]

catalog_inputs = st.one_of(
    st.binary(max_size=300),
    st.tuples(json_values.map(json_text), st.sampled_from(_ENCODINGS)).map(
        lambda t: t[0].encode(t[1])
    ),
    st.tuples(mutated(_CATALOG, json_values).map(json_text), st.sampled_from(_ENCODINGS)).map(
        lambda t: t[0].encode(t[1])
    ),
    byte_mutations(json.dumps(_CATALOG).encode("utf-8")),
)


@contextmanager
def _catalog_session() -> Iterator[Check]:
    with tempfile.TemporaryDirectory(prefix="fuzz-catalog-") as scratch:
        directory = Path(scratch)
        index = directory / "catalog.json"

        def check(data: bytes) -> None:
            index.write_bytes(data)
            catalog = _outcome(lambda: Catalog.open(directory), CatalogError)
            if isinstance(catalog, CatalogError):
                assert str(catalog)
                return
            for entry in catalog.entries():
                catalog.latest(entry.device_model)

        yield check


TARGETS: tuple[Target, ...] = (
    Target(
        "manifest_bytes",
        "jigd.manifest.parse_manifest, any bytes",
        st.binary(max_size=600),
        _pure(_check_manifest),
    ),
    Target(
        "manifest_csv",
        "jigd.manifest.parse_manifest, CSV nearly right",
        manifest_csv(),
        _pure(_check_manifest),
    ),
    Target("config", "jigd.config.load_config", config_inputs, _config_session),
    Target(
        "console_stream",
        "drivers.framing.ConsoleDecoder",
        _streams(_CONSOLE.encode),
        _pure(_check_console),
    ),
    Target("raw_stream", "drivers.framing.RawDecoder", _streams(bytes), _pure(_check_raw)),
    Target(
        "usb_transfers",
        "drivers.usb_bulk.TransferAssembler + TransferDecoder",
        usb_reads(),
        _pure(_check_usb),
    ),
    Target("smp_response", "drivers.smp_client.SmpClient", smp_replies, _smp_session),
    Target(
        "hub_link",
        "drivers.hub_link.SmpHubLink, every call",
        hub_conversations,
        _hub_link_session,
    ),
    Target(
        "control_body",
        "jigd.control_api.BatchImportRequest.parse",
        control_bodies,
        _pure(_check_control),
    ),
    Target("catalog_index", "firmware_catalog.Catalog.open", catalog_inputs, _catalog_session),
)
