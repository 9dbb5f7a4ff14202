"""What the fuzz campaign found, each kept as a plain test with its minimal input.

Each was an exception the code does not document (a traceback, or an HTTP 500 from the daemon)
or a result its contract rules out; each now ends in the code's own error, with a message that
says what is wrong.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import cbor2
import pytest

from drivers.errors import UnexpectedResponse
from drivers.hub_link import LinkOptions, SmpHubLink
from drivers.memory import memory_pair
from drivers.smp_client import SmpClient
from firmware_catalog import Catalog, CatalogFileError
from jigd.cli import main as jigd_main
from jigd.config import ConfigError, load_config
from jigd.control_api import ApiError, BatchImportRequest
from jigd.manifest import ManifestError, parse_manifest
from jigd.station import Station
from tests.fuzz.targets import CATALOG_ENTRY, AnsweringHub

# Deeper than any stack, whatever depth the parser is called at.
DEEP_ARRAY = "[" * 100_000 + "]" * 100_000
LONG_NUMBER = "9" * 4301  # Python's int(str) limit is 4300 digits


async def _post(daemon: Station, url: str, body: bytes | None = None) -> tuple[int, Any]:
    connector = aiohttp.UnixConnector(path=str(daemon.config.control_socket))
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.post(f"http://jigd{url}", data=body) as response,
    ):
        return response.status, await response.json()


# --- catalog_index: json.loads' RecursionError and int-limit ValueError escaped -------------


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[" * 1987 + "]" * 1987, "nested too deeply"),  # the campaign's minimal example
        (DEEP_ARRAY, "nested too deeply"),
        ('{"schema": "jigd.catalog/2", "entries": [' * 2000, "nested too deeply"),
        (LONG_NUMBER, "a number too long"),  # the campaign's minimal example
        (
            json.dumps(
                {"schema": "jigd.catalog/2", "entries": [{**CATALOG_ENTRY, "size": 0}]}
            ).replace('"size": 0', f'"size": {LONG_NUMBER}'),
            "a number too long",
        ),
    ],
    ids=["minimal-nesting", "deep-array", "deep-document", "minimal-number", "entry-size"],
)
def test_a_catalog_json_python_cannot_read_is_a_catalog_file_error(
    tmp_path: Path, text: str, problem: str
) -> None:
    (tmp_path / "catalog.json").write_text(text, encoding="utf-8")
    with pytest.raises(CatalogFileError) as caught:
        Catalog.open(tmp_path)
    assert caught.value.problems == [f"not usable JSON: {problem} to read"]
    assert str(caught.value).startswith(str(tmp_path / "catalog.json"))


@pytest.mark.parametrize("text", [DEEP_ARRAY, LONG_NUMBER], ids=["deep-array", "long-number"])
async def test_reloading_an_unreadable_catalog_is_bad_input(daemon: Station, text: str) -> None:
    (daemon.config.catalog_dir / "catalog.json").write_text(text, encoding="utf-8")
    status, answer = await _post(daemon, "/v1/catalog/reload")
    assert status == 400, answer  # was an HTTP 500 with a traceback in the log
    assert "not usable JSON" in answer["error"]
    assert str(daemon.config.catalog_dir / "catalog.json") in answer["error"]


# --- hub_link: int()'s ValueError on a hub's image version escaped SmpHubLink ---------------
# In the daemon it cost the hub an "unexpected error" and left its attempt in progress.


@pytest.mark.parametrize(
    ("call", "version"),
    [
        ("confirm", "0.0." + "9" * 4301),  # the campaign's minimal example
        ("image_state", "9" * 4301 + ".0.0"),
        ("mark_test", "4.0.0+" + "9" * 5000),
        ("image_state", "\u0664.0.0"),  # not ASCII digits: was read as 4.0.0
    ],
    ids=["minimal", "major", "build", "arabic-indic"],
)
async def test_an_image_version_that_is_no_number_is_an_unexpected_response(
    call: str, version: str
) -> None:
    host, hub_end = memory_pair(names=("rig1/slot1", "hub"))
    hub = AnsweringHub(hub_end)
    hub.bodies = [cbor2.dumps({"images": [{"slot": 0, "version": version, "hash": bytes(32)}]})]
    link = SmpHubLink(
        SmpClient(host, timeout_s=5.0), options=LinkOptions(timeout_s=5.0, request_retries=1)
    )
    calls: dict[str, Callable[[], Awaitable[object]]] = {
        "image_state": link.image_state,
        "confirm": link.confirm,
        "mark_test": lambda: link.mark_test(bytes(32)),
    }
    try:
        with pytest.raises(UnexpectedResponse, match=r"is not major\.minor\.revision"):
            await calls[call]()
    finally:
        await link.close()


# --- control_body: json.loads' RecursionError escaped BatchImportRequest.parse --------------


@pytest.mark.parametrize(
    "body",
    ["[" * 1000 + "]" * 1000, DEEP_ARRAY, '{"manifest": ' + DEEP_ARRAY + "}"],
    ids=["minimal", "deep-array", "deep-field"],
)
def test_an_import_body_nested_too_deeply_is_bad_input(body: str) -> None:
    with pytest.raises(ApiError) as caught:
        BatchImportRequest.parse(body)
    assert caught.value.status == 400
    assert caught.value.body.error == "the request body is not JSON: nested too deeply"


async def test_the_daemon_answers_a_deeply_nested_import_with_400(daemon: Station) -> None:
    status, answer = await _post(daemon, "/v1/batches", DEEP_ARRAY.encode())
    assert status == 400, answer  # was an HTTP 500 with a traceback in the log
    assert answer == {"error": "the request body is not JSON: nested too deeply"}
    assert await daemon.store.list_batches() == []


# --- manifest: a file of only separators and quotes was accepted with no rows ---------------


@pytest.mark.parametrize("data", [b",", b'""', b" , \n,,\r\n", "\ufeff,,,\n".encode()])
def test_a_manifest_of_only_empty_fields_is_an_empty_file(data: bytes) -> None:
    with pytest.raises(ManifestError) as caught:
        parse_manifest(data, "pallet.csv")  # returned [] with no problem
    assert caught.value.problems == [
        "pallet.csv:1: (file): the file is empty; the first line must name the columns, "
        "e.g. guid,manufacturer,model,firmware_version"
    ]


async def test_the_daemon_names_an_empty_manifest_as_such(daemon: Station) -> None:
    body = {"manifest": ",,,\n", "source": "pallet.csv", "booking": "WO-1", "party": "P1"}
    status, answer = await _post(daemon, "/v1/batches", json.dumps(body).encode())
    assert status == 400
    assert answer["problems"] == [  # was "pallet.csv: (file): no GUIDs to import", no line
        "pallet.csv:1: (file): the file is empty; the first line must name the columns, "
        "e.g. guid,manufacturer,model,firmware_version"
    ]


# --- config: urlsplit's ValueError on a store URL escaped load_config -----------------------


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("sqlite://[", "Invalid IPv6 URL"),  # the campaign's minimal examples
        ("sqlite://[]", "'' does not appear to be an IPv4 or IPv6 address"),
        ("sqlite://a]b/jigd.sqlite3", "Invalid IPv6 URL"),
    ],
)
def test_a_store_url_with_stray_brackets_is_a_config_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], url: str, reason: str
) -> None:
    path = tmp_path / "jigd.toml"
    path.write_text(f'station = "s1"\n[store]\nurl = "{url}"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.problems == [f"store.url: store URL {url!r} is not a URL: {reason}"]
    assert jigd_main(["config", "check", str(path)]) == 2  # was a traceback, exit 1
    assert "store.url" in capsys.readouterr().err


# --- config: issue 13 item 6 ------------------------------------------------------------------


@pytest.mark.parametrize(
    "toml",
    [
        'station = "s1"\nx = ' + "[" * 5000 + "]" * 5000 + "\n",
        'station = "s1"\nmetrics_port = ' + "9" * 5000 + "\n",
    ],
    ids=["deep-array", "5000-digit-int"],
)
def test_config_inputs_python_cannot_read_are_config_errors(tmp_path: Path, toml: str) -> None:
    path = tmp_path / "jigd.toml"
    path.write_text(toml, encoding="utf-8")
    with pytest.raises(ConfigError):  # was RecursionError / ValueError, a traceback
        load_config(path)
