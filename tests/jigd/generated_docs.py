"""What the tests of jigd's generated documents share (docs/asyncapi.yaml, docs/openapi.yaml):
the committed file is what its generator writes, `--check` notices drift, and the document is
checked offline against its specification's vendored JSON Schema (tests/data)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from referencing import Registry, Resource

REPO = Path(__file__).resolve().parents[2]


def _offline(uri: str) -> Resource[Any]:
    raise LookupError(f"{uri}: the tests never fetch a schema from the internet")


# `retrieve` is the attrs alias of Registry._retrieve, which mypy's attrs support misses.
OFFLINE: Registry[Any] = Registry(retrieve=_offline)  # type: ignore[call-arg]


def load_document(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return data


def spec_validator(schema_path: Path) -> jsonschema.protocols.Validator:
    """A validator of documents against a specification's JSON Schema, resolving nothing online."""
    schema = json.loads(schema_path.read_text(encoding="utf-8"))
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    return validator_class(schema, registry=OFFLINE)


def errors_of(validator: jsonschema.protocols.Validator, document: dict[str, Any]) -> list[str]:
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(document)
    ]


def assert_check_flag_reports_drift(module: str, committed: Path, tmp_path: Path) -> None:
    """`python -m MODULE --check` exits 1 for a stale file, 0 for the committed one."""
    stale = tmp_path / committed.name
    stale.write_text("stale: true\n", encoding="utf-8")
    command = [sys.executable, "-m", module, "--check", "--out"]
    drifted = subprocess.run(
        [*command, str(stale)], capture_output=True, text=True, cwd=REPO, check=False, timeout=60
    )
    assert drifted.returncode == 1
    assert "out of date" in drifted.stderr
    current = subprocess.run([*command, str(committed)], cwd=REPO, check=False, timeout=60)
    assert current.returncode == 0


def broken(document: dict[str, Any], where: tuple[str, ...], value: object) -> dict[str, Any]:
    """A copy of `document` with the value at `where` replaced (deleted if `value` is None)."""
    copy: dict[str, Any] = json.loads(json.dumps(document))
    node = copy
    for key in where[:-1]:
        node = node[key]
    if value is None:
        del node[where[-1]]
    else:
        node[where[-1]] = value
    return copy


def refs(node: object) -> Iterator[str]:
    """Every `$ref` in a document."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


def resolve(document: dict[str, Any], ref: str) -> Any:
    """What a local `#/...` reference points at (KeyError if nothing)."""
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node
