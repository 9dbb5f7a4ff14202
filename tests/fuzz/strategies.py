"""Input generators shared by the fuzz targets: hostile values, mutations of valid documents,
and the pieces of SMP byte streams.

Two kinds of input matter for a parser: bytes no one would write (the parser must refuse them
cleanly), and documents that are almost right (a key of the wrong type, a number out of range,
one character deleted), which reach its deeper checks. `mutated` and `byte_mutations` make the
second kind from a valid document.
"""

from __future__ import annotations

import copy
import json
import struct
from dataclasses import dataclass
from datetime import UTC
from typing import Any

import cbor2
from hypothesis import strategies as st

from drivers.framing import SMP_HEADER_SIZE
from tests.drivers.messages import error_frames, request_frames, response_frames

__all__ = [
    "GOOD_BODIES",
    "RawJson",
    "answers",
    "byte_mutations",
    "cbor_bodies",
    "json_text",
    "json_values",
    "mutated",
    "one_string_replaced",
    "smp_frame",
    "smp_frames",
    "structure_text",
    "toml_values",
    "url_like",
]

# Characters that carry structure in JSON, TOML, CSV and SMP console lines.
STRUCTURE = [
    *"[]{}\"',.:=#\\\n\r\t ",
    "\x00",
    "\ufeff",
    "\u2028",
    "\x85",
    "\x1b[31m",
    '"""',
    "'''",
    "\x06\x09",
    "\x04\x14",
]


# Text made of those: the strings that break naive quoting and splitting.
structure_text = st.lists(st.sampled_from(STRUCTURE), max_size=8).map("".join)


@dataclass(frozen=True, slots=True)
class RawJson:
    """JSON text put into a document as it is: what `json.dumps` would refuse or never write."""

    text: str


def json_text(value: Any) -> str:
    """`value` as JSON text, with `RawJson` leaves written verbatim."""
    if isinstance(value, RawJson):
        return value.text
    if isinstance(value, dict):
        items = ",".join(f"{json.dumps(str(k))}:{json_text(v)}" for k, v in value.items())
        return "{" + items + "}"
    if isinstance(value, list):
        return "[" + ",".join(json_text(v) for v in value) + "]"
    return json.dumps(value)


def _nested(opening: str, inner: str, closing: str) -> st.SearchStrategy[RawJson]:
    return st.integers(1, 3000).map(lambda n: RawJson(opening * n + inner + closing * n))


# Numbers and nesting that Python's json module turns into exceptions other than ValueError
# subclasses it documents (RecursionError) or into ValueError outside JSONDecodeError.
HOSTILE_JSON = st.one_of(
    st.integers(1, 6000).map(lambda n: RawJson("9" * n)),
    _nested("[", "", "]"),
    _nested('{"a":', "1", "}"),
    st.sampled_from(
        [RawJson(t) for t in ("NaN", "Infinity", "-Infinity", "1e400", "-1e400", "-0", "1E-400")]
    ),
)

_JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**30), 10**30),
    st.floats(),
    st.text(max_size=40),
    structure_text,
)

json_values: st.SearchStrategy[Any] = st.recursive(
    _JSON_SCALARS | HOSTILE_JSON,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=12,
)

# TOML has no null; integers stay below Python's 4300-digit conversion limit (a known config
# finding of its own, tests/fuzz/test_findings.py), and nesting stays shallow.
# Strings that start like the URLs and device paths a config names.
url_like = st.tuples(
    st.sampled_from(["sqlite:", "sqlite://", "sqlite:///", "socket://", "/dev/", "sim+unix://"]),
    structure_text | st.text(max_size=12),
).map("".join)

_TOML_SCALARS = st.one_of(
    url_like,
    st.booleans(),
    st.integers(),
    st.integers(-(10**300), 10**300),
    st.sampled_from([0, -1, 1, 65535, 65536, 2**63, -(2**63) - 1, 10**19]),
    st.floats(),
    st.text(max_size=40),
    structure_text,
    st.dates(),
    st.datetimes(timezones=st.none() | st.just(UTC)),
    st.times(),
)

toml_values: st.SearchStrategy[Any] = st.recursive(
    _TOML_SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=8,
)


def _paths(tree: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path in a tree of dicts and lists, the root `()` first."""
    out = [prefix]
    if isinstance(tree, dict):
        for key, value in tree.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(tree, list):
        for index, value in enumerate(tree):
            out += _paths(value, (*prefix, index))
    return out


def _at(tree: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        tree = tree[key]
    return tree


_CHANGES = st.sampled_from(("replace", "delete", "insert"))
_KEYS = st.text(max_size=12)


@st.composite
def mutated(
    draw: st.DrawFn, base: dict[str, Any], values: st.SearchStrategy[Any], max_mutations: int = 4
) -> dict[str, Any]:
    """`base` with 1 to `max_mutations` changes, each at a random key path: the value replaced
    by one from `values`, deleted, or a neighbour the schema does not have inserted."""
    tree = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, max_mutations))):
        paths = _paths(tree)[1:]
        if not paths:
            break
        path = paths[draw(st.integers(0, len(paths) - 1))]
        parent, key = _at(tree, path[:-1]), path[-1]
        op = draw(_CHANGES)
        if op == "replace":
            parent[key] = draw(values)
        elif op == "delete":
            del parent[key]
        elif isinstance(parent, dict):
            parent[draw(_KEYS)] = draw(values)
        else:
            parent.insert(key, draw(values))
    return tree


@st.composite
def one_string_replaced(
    draw: st.DrawFn, base: dict[str, Any], values: st.SearchStrategy[str]
) -> dict[str, Any]:
    """`base` with exactly one of its strings replaced: everything else stays valid, so the
    new string reaches the checks that run after the schema's (a store URL's, a path's)."""
    tree = copy.deepcopy(base)
    paths = [p for p in _paths(tree)[1:] if isinstance(_at(tree, p), str)]
    path = paths[draw(st.integers(0, len(paths) - 1))]
    _at(tree, path[:-1])[path[-1]] = draw(values)
    return tree


_EDITS = st.sampled_from(("delete", "insert", "replace"))
_SPAN = st.integers(1, 8)
_INSERTIONS = st.binary(min_size=1, max_size=4) | st.sampled_from(
    [s.encode("utf-8") for s in STRUCTURE]
)


@st.composite
def byte_mutations(draw: st.DrawFn, data: bytes, max_edits: int = 5) -> bytes:
    """`data` with a few bytes deleted, inserted or overwritten (structure characters often)."""
    buf = bytearray(data)
    for _ in range(draw(st.integers(1, max_edits))):
        pos = draw(st.integers(0, len(buf)))
        op = draw(_EDITS)
        if op == "delete":
            del buf[pos : pos + draw(_SPAN)]
        elif op == "insert":
            buf[pos:pos] = draw(_INSERTIONS)
        else:
            piece = draw(_INSERTIONS)
            buf[pos : pos + len(piece)] = piece
    return bytes(buf)


# --- SMP ------------------------------------------------------------------------------------

RESPONSES = response_frames()
REQUESTS = request_frames()
ERRORS = error_frames()
_HEADER = struct.Struct("!BBHHBB")

# Tags cbor2 decodes into Python objects (dates, bignums, fractions, regexes, sets, shared
# references, ...), where a decoder's own exceptions hide.
_CBOR_TAGS = [0, 1, 2, 3, 4, 5, 24, 25, 28, 29, 30, 32, 33, 34, 35, 36, 37, 52, 54, 256, 258, 260]

_CBOR_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**64), 2**64),
    st.integers(),
    st.floats(),
    st.text(max_size=30),
    st.binary(max_size=40),
)

cbor_items: st.SearchStrategy[Any] = st.recursive(
    _CBOR_SCALARS,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=8) | st.integers(-5, 5), children, max_size=4)
        | st.builds(cbor2.CBORTag, st.sampled_from(_CBOR_TAGS), children)
    ),
    max_leaves=6,
)


def _known_bodies() -> list[dict[Any, Any]]:
    """The CBOR maps of every response and error response the driver knows."""
    return [cbor2.loads(frame[SMP_HEADER_SIZE:]) for frame in RESPONSES]


# A response's own fields, the error keys, and anything else.
_RESPONSE_KEYS = sorted(
    {str(k) for body in _known_bodies() for k in body} | {"rc", "rsn", "err", "group"}
)


_RESPONSE_KEY = st.sampled_from(_RESPONSE_KEYS) | st.text(max_size=6)
_SMALL_INT = st.integers(-5, 300)


@st.composite
def _near_responses(draw: st.DrawFn, bases: st.SearchStrategy[dict[Any, Any]]) -> bytes:
    """One of `bases` with a few keys removed, added or given any CBOR value."""
    tree = dict(draw(bases))
    for _ in range(draw(st.integers(1, 4))):
        key = draw(_RESPONSE_KEY)
        if draw(st.booleans()) and key in tree:
            del tree[key]
        else:
            tree[key] = draw(cbor_items)
    return cbor2.dumps(tree)


_ERROR_FIELDS = st.dictionaries(st.sampled_from(["group", "rc", "x"]), cbor_items | _SMALL_INT)


@st.composite
def _smp_errors(draw: st.DrawFn) -> bytes:
    body: dict[str, Any]
    if draw(st.booleans()):
        body = {"rc": draw(cbor_items | _SMALL_INT)}
        if draw(st.booleans()):
            body["rsn"] = draw(cbor_items)
    else:
        body = {"err": draw(_ERROR_FIELDS | cbor_items)}
    return cbor2.dumps(body)


# Image state's version text as a hub could write it: numbers of any size (past Python's
# 4300-digit int() limit), separators, non-ASCII digits.
_NUMBER = st.integers(0, 2**40).map(str) | st.integers(4000, 6000).map(lambda n: "9" * n)
image_versions = st.one_of(
    st.tuples(_NUMBER, _NUMBER, _NUMBER, st.sampled_from(["", ".", "+"]), _NUMBER).map(
        lambda p: f"{p[0]}.{p[1]}.{p[2]}" + (p[3] + p[4] if p[3] else "")
    ),
    st.text(alphabet="0123456789.+-x \u0663\uff11", max_size=16),
)
_IMAGE_STATE = st.fixed_dictionaries(
    {"slot": st.integers(-1, 3), "version": image_versions, "hash": st.binary(max_size=40)},
    optional={
        name: st.booleans() | cbor_items
        for name in ("active", "confirmed", "pending", "bootable", "permanent")
    }
    | {"image": st.integers(-1, 3) | cbor_items},
)
_IMAGE_STATES = st.lists(_IMAGE_STATE, max_size=3).map(
    lambda images: cbor2.dumps({"images": images})
)


cbor_bodies: st.SearchStrategy[bytes] = st.one_of(
    _IMAGE_STATES,
    st.binary(max_size=200),
    cbor_items.map(cbor2.dumps),
    _near_responses(st.sampled_from(_known_bodies())),
    _smp_errors(),
    st.sampled_from([frame[SMP_HEADER_SIZE:] for frame in RESPONSES]).flatmap(byte_mutations),
)


def _good_bodies() -> dict[tuple[int, int, int], bytes]:
    """The body of a successful response to each request the driver sends, by the request's
    (op, group, command): the pool's responses carry their requests' sequence numbers."""
    by_sequence = {frame[6]: frame for frame in REQUESTS}
    good = {}
    for frame in RESPONSES:
        request = by_sequence.get(frame[6])
        if request is not None and frame not in ERRORS:
            op, group, command = request[0] & 0b111, int.from_bytes(request[4:6], "big"), request[7]
            good[(op, group, command)] = frame[SMP_HEADER_SIZE:]
    return good


GOOD_BODIES = _good_bodies()


def answers(op: int, group: int, command: int) -> st.SearchStrategy[bytes]:
    """Bodies answering a request: the right one, nearly right ones, any at all."""
    good = GOOD_BODIES[(op, group, command)]
    return st.one_of(
        st.just(good),
        _near_responses(st.just(cbor2.loads(good))),
        byte_mutations(good),
        cbor_bodies,
    )


def smp_frame(
    *,
    op: int,
    group: int,
    sequence: int,
    command: int,
    body: bytes,
    version: int = 1,
    flags: int = 0,
    length: int | None = None,
) -> bytes:
    """An SMP frame with any header (masked to its field widths) and any body."""
    ver_op = ((version & 0b11) << 3) | (op & 0b111)
    size = len(body) if length is None else length & 0xFFFF
    head = _HEADER.pack(ver_op, flags & 0xFF, size, group & 0xFFFF, sequence & 0xFF, command & 0xFF)
    return head + body


_KNOWN_FRAMES = st.sampled_from(RESPONSES + REQUESTS)

# A frame that is a real one, a real one damaged, or a header of any kind on any body.
smp_frames: st.SearchStrategy[bytes] = st.one_of(
    _KNOWN_FRAMES,
    _KNOWN_FRAMES.flatmap(byte_mutations),
    st.builds(
        smp_frame,
        op=st.integers(0, 7),
        version=st.integers(0, 3),
        flags=st.sampled_from([0, 0, 0, 1, 0xFF]),
        length=st.none() | st.integers(0, 0xFFFF),
        group=st.sampled_from([0, 1, 64, 0xFFFF]),
        sequence=st.integers(0, 255),
        command=st.integers(0, 255),
        body=cbor_bodies,
    ),
)
