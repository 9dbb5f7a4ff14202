"""docs/openapi.yaml: generated from jigd.control_api, valid OpenAPI 3.1, and what a running
daemon really answers (the `daemon` fixture of conftest.py, over its Unix socket)."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import pytest

from jigd import control_api as api
from jigd import openapi
from jigd.control import make_app
from jigd.station import Station
from tests.jigd.generated_docs import (
    OFFLINE,
    REPO,
    assert_check_flag_reports_drift,
    broken,
    errors_of,
    load_document,
    refs,
    resolve,
    spec_validator,
)

SCHEMA_PATH = REPO / "tests" / "data" / "openapi-3.1.schema.json"
MANIFEST = """guid,manufacturer,model,firmware_version
00-DB-00-00-00-00-00-01,1086,57310102,04000006
00-DB-00-00-00-00-00-02,1086,57310102,04000006
"""


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return load_document(openapi.DOCUMENT_PATH)


@pytest.fixture(scope="module")
def openapi_validator() -> jsonschema.protocols.Validator:
    return spec_validator(SCHEMA_PATH)


def test_committed_document_is_what_the_generator_writes() -> None:
    committed = openapi.DOCUMENT_PATH.read_text(encoding="utf-8")
    assert committed == openapi.render(), (
        "docs/openapi.yaml is out of date: run `.venv/bin/python -m jigd.openapi`"
    )


def test_check_flag_reports_drift(tmp_path: Path) -> None:
    assert_check_flag_reports_drift("jigd.openapi", openapi.DOCUMENT_PATH, tmp_path)


def test_document_is_valid_openapi_3_1(
    document: dict[str, Any], openapi_validator: jsonschema.protocols.Validator
) -> None:
    assert errors_of(openapi_validator, document) == []
    assert document["openapi"] == "3.1.0"
    # The OpenAPI schema leaves Schema Objects to JSON Schema 2020-12, OpenAPI 3.1's dialect.
    for schema in document["components"]["schemas"].values():
        jsonschema.Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize(
    ("where", "value"),
    [
        (("openapi",), "3.0.3"),
        (("paths", "/v1/status", "get", "responses", "200", "description"), None),
        (("components", "parameters", "batch", "in"), "body"),
        (("paths", "/v1/batches", "post", "requestBody", "content"), "application/json"),
    ],
)
def test_the_validator_catches_mistakes(
    document: dict[str, Any],
    openapi_validator: jsonschema.protocols.Validator,
    where: tuple[str, ...],
    value: object,
) -> None:
    assert not openapi_validator.is_valid(broken(document, where, value))


def test_every_reference_resolves(document: dict[str, Any]) -> None:
    found = set(refs(document))
    assert found
    for ref in found:
        resolve(document, ref)


def test_paths_and_methods_are_what_the_daemon_serves(
    document: dict[str, Any], daemon: Station
) -> None:
    served = {
        (route.method, route.resource.canonical)
        for route in make_app(daemon).router.routes()
        if route.resource is not None and route.method != "HEAD"
    }
    documented = {
        (method.upper(), path)
        for path, operations in document["paths"].items()
        for method in operations
    }
    assert documented == served
    assert len(served) == 15


def _validator(document: dict[str, Any], schema: dict[str, Any]) -> jsonschema.Draft202012Validator:
    """A validator for a schema of the document; its `#/components/schemas/...` refs resolve."""
    root = {"allOf": [schema], "components": {"schemas": document["components"]["schemas"]}}
    return jsonschema.Draft202012Validator(root, registry=OFFLINE)


def _response_schema(
    document: dict[str, Any], method: str, path: str, status: int
) -> dict[str, Any]:
    response = document["paths"][path][method.lower()]["responses"][str(status)]
    if "$ref" in response:
        response = resolve(document, response["$ref"])
    schema: dict[str, Any] = response["content"]["application/json"]["schema"]
    return schema


async def _raw(station: Station, method: str, path: str, body: object = None) -> tuple[int, Any]:
    connector = aiohttp.UnixConnector(path=str(station.config.control_socket))
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.request(method, f"http://jigd{path}", json=body) as response,
    ):
        return response.status, json.loads(await response.read())


async def test_the_daemon_answers_as_documented(document: dict[str, Any], daemon: Station) -> None:
    body = {"manifest": MANIFEST, "source": "p.csv", "booking": "WO-1", "party": "P"}
    request_schema = document["paths"]["/v1/batches"]["post"]["requestBody"]["content"]
    assert _validator(document, request_schema["application/json"]["schema"]).is_valid(body)
    status, imported = await _raw(daemon, "POST", "/v1/batches", body)
    assert status == 201
    batch = imported["batch"]
    calls = [
        ("GET", "/v1/status", "/v1/status", None, 200),
        ("GET", "/v1/batches", "/v1/batches", None, 200),
        ("GET", f"/v1/batches/{batch}", "/v1/batches/{batch}", None, 200),
        ("GET", f"/v1/batches/{batch}/report", "/v1/batches/{batch}/report", None, 200),
        ("GET", f"/v1/batches/{batch}/guids", "/v1/batches/{batch}/guids", None, 200),
        ("GET", "/v1/batches/B999999/guids", "/v1/batches/{batch}/guids", None, 404),
        ("GET", "/v1/rejected", "/v1/rejected", None, 200),
        ("POST", "/v1/catalog/reload", "/v1/catalog/reload", None, 200),
        ("GET", "/v1/stage-times", "/v1/stage-times", None, 200),
        ("POST", f"/v1/batches/{batch}/close", "/v1/batches/{batch}/close", None, 200),
        ("POST", f"/v1/batches/{batch}/close", "/v1/batches/{batch}/close", None, 409),
        ("GET", "/v1/batches/B999999", "/v1/batches/{batch}", None, 404),
        ("POST", "/v1/batches", "/v1/batches", {**body, "party": " "}, 400),
        ("POST", "/v1/batches", "/v1/batches", {**body, "manifest": "guid\nx\n"}, 400),
    ]
    for method, url, path, request, expected in calls:
        status, answer = await _raw(daemon, method, url, request)
        assert status == expected, (url, answer)
        validator = _validator(document, _response_schema(document, method, path, status))
        assert list(validator.iter_errors(answer)) == [], (url, answer)
        # What jigctl parses it into serialises back to the very same JSON.
        endpoint = next(e for e in api.ENDPOINTS if (e.method, e.path) == (method, path))
        model = endpoint.response if status < 400 else api.ErrorResponse
        assert model.model_validate(answer).to_json() == answer


def _body(**fields: object) -> bytes:
    body = {"manifest": MANIFEST, "source": "s", "booking": "b", "party": "p", **fields}
    return json.dumps(body).encode()


DEEP = 100_000  # far past Python's recursion limit


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"[1, 2]", "the request body is not a JSON object"),  # was an HTTP 500
        (b"[]", "the request body is not a JSON object"),
        (b"42", "the request body is not a JSON object"),
        (b'"x"', "the request body is not a JSON object"),
        (b"null", "the request body is not a JSON object"),
        (b'"manifest"', "the request body is not a JSON object"),  # was an HTTP 500
        (b"{", "the request body is not JSON"),
        (b"", "the request body is not JSON"),
        (b"[" * DEEP + b"]" * DEEP, "the request body is not JSON: nested too deeply"),  # was 500
        (
            b'{"manifest": ' + b"[" * DEEP + b"]" * DEEP + b"}",
            "the request body is not JSON: nested too deeply",  # was an HTTP 500
        ),
        (
            b'{"manifest": ' + b'{"a": ' * DEEP + b"1" + b"}" * DEEP + b"}",
            "the request body is not JSON: nested too deeply",  # was an HTTP 500
        ),
        (
            b'{"manifest": 1, "party": "P"}',
            "missing or empty: source, booking; not a string: manifest",
        ),
        (b"{}", "missing or empty: manifest, source, booking, party"),
        (
            b'{"manifest": [], "source": {}, "booking": 10, "party": true}',
            "not a string: manifest, source, booking, party",
        ),
        (
            b'{"manifest": "\\udcff", "source": "s", "booking": "b", "party": "p"}',
            "not UTF-8 text: manifest",  # was an HTTP 500
        ),
        (_body(booking=" ", party=[[[[]]]]), "missing or empty: booking; not a string: party"),
        (_body(booking="W" * 257), "longer than 256 characters: booking"),
        (_body(party="P\n2099-01-01 00:00:00 ERROR forged"), "control characters in: party"),
        (_body(booking="\x1b[31mWO", party="\u202eP"), "control characters in: booking, party"),
    ],
)
async def test_a_body_that_is_not_an_import_request_is_bad_input(
    daemon: Station, body: bytes, error: str, caplog: pytest.LogCaptureFixture
) -> None:
    connector = aiohttp.UnixConnector(path=str(daemon.config.control_socket))
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.post("http://jigd/v1/batches", data=body) as response,
    ):
        assert response.status == 400
        assert await response.json() == {"error": error}
    assert await daemon.store.list_batches() == []
    assert [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info] == []


HALF_REQUESTS = [
    b'POST /v1/batches HTTP/1.1\r\nHost: jigd\r\nContent-Length: 1000\r\n\r\n{"manif',
    b"POST /v1/batc",
    b"GET /v1/status HTTP/1.1\r\nHost: jigd\r\n\r\n",  # gone before the answer
    b"GET /v1/status HTTP/1.1\r\nBad Header\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",  # TLS on the socket
]


async def test_clients_that_hang_up_mid_request_cost_a_debug_line_each(
    daemon: Station, caplog: pytest.LogCaptureFixture
) -> None:
    """20 clients send half a request (or junk) and close: no ERROR, no traceback; the daemon
    then answers the next client as usual."""
    socket_path = str(daemon.config.control_socket)
    with caplog.at_level(logging.DEBUG):
        for number in range(20):
            _, writer = await asyncio.open_unix_connection(socket_path)
            writer.write(HALF_REQUESTS[number % len(HALF_REQUESTS)])
            await writer.drain()
            if number % 2:
                await asyncio.sleep(0.01)  # let the daemon start on it first
            writer.transport.abort()
        status, _ = await _raw(daemon, "GET", "/v1/status", None)
    assert status == 200
    noisy = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert noisy == [], [r.getMessage() for r in noisy]
    assert "Traceback" not in caplog.text


async def test_a_batchs_guids_say_where_each_one_is(daemon: Station) -> None:
    body = {"manifest": MANIFEST, "source": "p.csv", "booking": "WO-G", "party": "P"}
    status, imported = await _raw(daemon, "POST", "/v1/batches", body)
    assert status == 201
    status, answer = await _raw(daemon, "GET", f"/v1/batches/{imported['batch']}/guids")
    assert status == 200
    guids = api.BatchGuids.model_validate(answer)
    assert guids.batch == imported["batch"]
    assert [(str(g.guid), g.line, g.status, g.outcome) for g in guids.guids] == [
        ("00-DB-00-00-00-00-00-01", 2, "pending", None),
        ("00-DB-00-00-00-00-00-02", 3, "pending", None),
    ]
    first = guids.guids[0]
    # Before the hub is seen: what the manifest declared.
    assert (str(first.model), str(first.from_version), first.to_version) == (
        "1086/57310102",
        "04000006",
        None,
    )
    assert first.attempts == 0
