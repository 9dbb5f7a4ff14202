"""docs/asyncapi.yaml: generated from the payload models, valid AsyncAPI 3.0.0, consistent."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from referencing import Registry, Resource

from jigd import asyncapi
from jigd.payloads import (
    AlertPayload,
    Payload,
    ResultPayload,
    SlotPayload,
    StatusPayload,
    SummaryPayload,
)

REPO = Path(__file__).resolve().parents[2]
SCHEMA_PATH = REPO / "tests" / "data" / "asyncapi-3.0.0.schema.json"
MODELS: dict[str, type[Payload]] = {
    "status": StatusPayload,
    "slot": SlotPayload,
    "result": ResultPayload,
    "summary": SummaryPayload,
    "alert": AlertPayload,
}


def _offline(uri: str) -> Resource[Any]:
    raise LookupError(f"{uri}: the tests never fetch a schema from the internet")


# `retrieve` is the attrs alias of Registry._retrieve, which mypy's attrs support misses.
OFFLINE: Registry[Any] = Registry(retrieve=_offline)  # type: ignore[call-arg]


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(asyncapi.DOCUMENT_PATH.read_text(encoding="utf-8"))
    return data


@pytest.fixture(scope="module")
def asyncapi_validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    return validator_class(schema, registry=OFFLINE)


def test_committed_document_is_what_the_generator_writes() -> None:
    committed = asyncapi.DOCUMENT_PATH.read_text(encoding="utf-8")
    assert committed == asyncapi.render(), (
        "docs/asyncapi.yaml is out of date: run `.venv/bin/python -m jigd.asyncapi`"
    )


def test_check_flag_reports_drift(tmp_path: Path) -> None:
    stale = tmp_path / "asyncapi.yaml"
    stale.write_text("asyncapi: 3.0.0\n", encoding="utf-8")
    command = [sys.executable, "-m", "jigd.asyncapi", "--check", "--out"]
    drifted = subprocess.run(
        [*command, str(stale)], capture_output=True, text=True, cwd=REPO, check=False, timeout=60
    )
    assert drifted.returncode == 1
    assert "out of date" in drifted.stderr
    current = subprocess.run(
        [*command, str(asyncapi.DOCUMENT_PATH)], cwd=REPO, check=False, timeout=60
    )
    assert current.returncode == 0


def test_document_is_valid_asyncapi_3(
    document: dict[str, Any], asyncapi_validator: jsonschema.protocols.Validator
) -> None:
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in asyncapi_validator.iter_errors(document)
    ]
    assert errors == []
    assert document["asyncapi"] == "3.0.0"


@pytest.mark.parametrize(
    ("where", "value"),
    [
        (("operations", "sendResult", "action"), "publish"),  # AsyncAPI 2 wording
        (("operations", "sendSlot", "bindings", "mqtt", "qos"), 3),
        (("components", "schemas", "ResultPayload", "required"), "guid"),
        (("channels", "status", "address"), 42),
    ],
)
def test_the_validator_catches_mistakes(
    document: dict[str, Any],
    asyncapi_validator: jsonschema.protocols.Validator,
    where: tuple[str, ...],
    value: object,
) -> None:
    broken = json.loads(json.dumps(document))
    node = broken
    for key in where[:-1]:
        node = node[key]
    node[where[-1]] = value
    assert not asyncapi_validator.is_valid(broken)


def _refs(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def _resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def test_every_reference_resolves(document: dict[str, Any]) -> None:
    refs = set(_refs(document))
    assert refs
    for ref in refs:
        _resolve(document, ref)


def test_channels_operations_and_parameters_agree(document: dict[str, Any]) -> None:
    channels = document["channels"]
    assert {c["address"] for c in channels.values()} == {
        "jigd/v1/{station}/status",
        "jigd/v1/{station}/slots/{rig}/{slot}",
        "jigd/v1/{station}/batches/{batch}/results/{guid}",
        "jigd/v1/{station}/batches/{batch}/summary",
        "jigd/v1/{station}/alerts",
    }
    for channel in channels.values():
        assert set(re.findall(r"{(\w+)}", channel["address"])) == set(channel["parameters"])
    expected = {
        "status": (1, True),
        "slot": (0, True),
        "result": (1, False),
        "summary": (1, True),
        "alerts": (1, False),
    }
    for operation in document["operations"].values():
        assert operation["action"] == "send"
        channel_key = operation["channel"]["$ref"].removeprefix("#/channels/")
        binding = operation["bindings"]["mqtt"]
        assert (binding["qos"], binding["retain"]) == expected[channel_key]
        for message in operation["messages"]:
            assert message["$ref"].startswith(f"#/channels/{channel_key}/messages/")


def _payload_validator(document: dict[str, Any], message: str) -> jsonschema.protocols.Validator:
    """A validator for a message's payload; its `#/components/schemas/...` refs resolve within."""
    ref = document["components"]["messages"][message]["payload"]["$ref"]
    schema = {
        "allOf": [{"$ref": ref}],
        "components": {"schemas": document["components"]["schemas"]},
    }
    return jsonschema.Draft7Validator(
        schema, registry=OFFLINE, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER
    )


@pytest.mark.parametrize("message", sorted(MODELS))
def test_examples_fit_both_the_schema_and_the_model(document: dict[str, Any], message: str) -> None:
    validator = _payload_validator(document, message)
    examples = document["components"]["messages"][message]["examples"]
    assert examples
    for example in examples:
        assert list(validator.iter_errors(example["payload"])) == []
        MODELS[message].model_validate(example["payload"])
    # A payload without its event_id, or with another schema name, is refused.
    payload = dict(examples[0]["payload"])
    del payload["event_id"]
    assert not validator.is_valid(payload)
    assert not validator.is_valid({**examples[0]["payload"], "schema": "jigd.other/1"})
