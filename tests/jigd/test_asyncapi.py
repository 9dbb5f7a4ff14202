"""docs/asyncapi.yaml: generated from the payload models, valid AsyncAPI 3.0.0, consistent."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from jigd import asyncapi
from jigd.events import Event
from jigd.payloads import (
    AlertPayload,
    ResultPayload,
    SlotPayload,
    StatusPayload,
    SummaryPayload,
)
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

SCHEMA_PATH = REPO / "tests" / "data" / "asyncapi-3.0.0.schema.json"
MODELS: dict[str, type[Event]] = {
    "status": StatusPayload,
    "slot": SlotPayload,
    "result": ResultPayload,
    "summary": SummaryPayload,
    "alert": AlertPayload,
}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return load_document(asyncapi.DOCUMENT_PATH)


@pytest.fixture(scope="module")
def asyncapi_validator() -> jsonschema.protocols.Validator:
    return spec_validator(SCHEMA_PATH)


def test_committed_document_is_what_the_generator_writes() -> None:
    committed = asyncapi.DOCUMENT_PATH.read_text(encoding="utf-8")
    assert committed == asyncapi.render(), (
        "docs/asyncapi.yaml is out of date: run `.venv/bin/python -m jigd.asyncapi`"
    )


def test_check_flag_reports_drift(tmp_path: Path) -> None:
    assert_check_flag_reports_drift("jigd.asyncapi", asyncapi.DOCUMENT_PATH, tmp_path)


def test_document_is_valid_asyncapi_3(
    document: dict[str, Any], asyncapi_validator: jsonschema.protocols.Validator
) -> None:
    assert errors_of(asyncapi_validator, document) == []
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
    assert not asyncapi_validator.is_valid(broken(document, where, value))


def test_every_reference_resolves(document: dict[str, Any]) -> None:
    found = set(refs(document))
    assert found
    for ref in found:
        resolve(document, ref)


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
