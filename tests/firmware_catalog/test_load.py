"""A bad catalog.json is reported with the file, the entry and the field; good ones round-trip."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

from firmware_catalog import Catalog, CatalogFileError, Status
from firmware_catalog.entry import CATALOG_SCHEMA, dump_catalog, parse_catalog
from jigd.flash import FlashError, image_hash_of
from jigd.model import FirmwareVersion, Stage
from tests.firmware_catalog.helpers import MODEL, MakeImage

GOOD = {
    "manufacturer": "1086",
    "model": "57310102",
    "firmware_version": "04000007",
    "sha256": "ab" * 32,
    "size": 1000,
    "status": "production",
    "released": "2026-01-31",
}


def write(catalog_dir: Path, document: object) -> Path:
    path = catalog_dir / "catalog.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def test_directory_without_catalog_json_is_empty(catalog_dir: Path) -> None:
    assert Catalog.open(catalog_dir).entries() == ()


def test_round_trip(catalog_dir: Path) -> None:
    pilot = GOOD | {"firmware_version": "04000008", "status": "pilot", "gbcs": "3.2"}
    write(catalog_dir, {"schema": "jigd.catalog/1", "entries": [pilot, GOOD]})
    entries = Catalog.open(catalog_dir).entries()
    assert [e.device_model for e in entries] == [MODEL, MODEL]
    data = dump_catalog(entries)
    assert json.loads(data)["entries"][0] == GOOD | {
        "gbcs": None,
        "chts": None,
        "notes": "",
        "image_hash": None,  # no image to read it from
    }
    assert parse_catalog(catalog_dir / "catalog.json", data) == list(entries)


def test_invalid_json_names_file_and_line(catalog_dir: Path) -> None:
    path = catalog_dir / "catalog.json"
    path.write_text('{\n  "schema": "jigd.catalog/1",\n  "entries": [,]\n}\n', encoding="utf-8")
    with pytest.raises(CatalogFileError, match=r"not valid JSON at line 3") as caught:
        Catalog.open(catalog_dir)
    assert str(path) in str(caught.value)


def test_bad_entries_are_named(catalog_dir: Path) -> None:
    bad_status = GOOD | {"firmware_version": "04000008", "status": "beta"}
    bad_sha = GOOD | {"firmware_version": "04000009", "sha256": "XYZ"}
    bad_model = GOOD | {"model": "5731010Z"}
    path = write(
        catalog_dir, {"schema": "jigd.catalog/1", "entries": [GOOD, bad_status, bad_sha, bad_model]}
    )
    with pytest.raises(CatalogFileError) as caught:
        Catalog.open(catalog_dir)
    message = str(caught.value)
    assert message.startswith(f"{path}: 3 problem(s)")
    assert "entries[1] (1086/57310102 04000008).status: Input should be" in message
    assert "entries[2] (1086/57310102 04000009).sha256: String should match" in message
    assert "entries[3] (1086/5731010Z 04000007).model: " in message


def test_duplicate_entries_are_named(catalog_dir: Path) -> None:
    write(catalog_dir, {"schema": "jigd.catalog/1", "entries": [GOOD, GOOD | {"size": 5}]})
    with pytest.raises(
        CatalogFileError, match=r"entries\[1\] \(1086/57310102 04000007\): the same"
    ):
        Catalog.open(catalog_dir)


def test_unknown_schema_and_keys_are_refused(catalog_dir: Path) -> None:
    write(catalog_dir, {"schema": "jigd.catalog/9", "entries": [GOOD | {"colour": "red"}]})
    with pytest.raises(CatalogFileError) as caught:
        Catalog.open(catalog_dir)
    assert caught.value.problems == [
        "schema: Input should be 'jigd.catalog/1' or 'jigd.catalog/2'",
        "entries[0] (1086/57310102 04000007).colour: Extra inputs are not permitted",
    ]


def test_failed_reload_keeps_the_entries_in_use(catalog_dir: Path) -> None:
    write(catalog_dir, {"schema": "jigd.catalog/1", "entries": [GOOD]})
    catalog = Catalog.open(catalog_dir)
    (catalog_dir / "catalog.json").write_text("[", encoding="utf-8")
    with pytest.raises(CatalogFileError):
        catalog.reload()
    assert len(catalog.entries()) == 1


def test_cli_reports_bad_catalog_with_exit_2(
    catalog_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from jigd.cli import main as jigd_main

    path = write(catalog_dir, {"schema": "jigd.catalog/1", "entries": [GOOD | {"size": 0}]})
    assert jigd_main(["catalog", "--dir", str(catalog_dir), "list"]) == 2
    err = capsys.readouterr().err
    assert str(path) in err
    assert "entries[0] (1086/57310102 04000007).size: Input should be greater than 0" in err


def test_schema_1_catalog_is_migrated_on_open(catalog_dir: Path, make_image: MakeImage) -> None:
    """A catalog written before image hashes were recorded gets them from its images."""
    catalog = Catalog.open(catalog_dir)
    added = catalog.add(
        make_image("04000007"), MODEL, FirmwareVersion(0x04000007), Status.PRODUCTION, date.today()
    )
    assert added.image_hash is not None
    old = json.loads(catalog.catalog_path.read_text(encoding="utf-8"))
    for entry in old["entries"]:
        del entry["image_hash"]
    write(catalog_dir, old | {"schema": "jigd.catalog/1"})

    reopened = Catalog.open(catalog_dir)

    assert reopened.entries() == (added,)
    on_disk = json.loads(reopened.catalog_path.read_text(encoding="utf-8"))
    assert on_disk["schema"] == CATALOG_SCHEMA
    assert on_disk["entries"][0]["image_hash"] == added.image_hash
    # The image hash is MCUboot's SHA256 TLV, not the file's sha256.
    assert added.image_hash != added.sha256


def test_entry_whose_image_is_missing_keeps_no_hash_and_cannot_be_flashed(
    catalog_dir: Path,
) -> None:
    write(catalog_dir, {"schema": "jigd.catalog/1", "entries": [GOOD]})
    (entry,) = Catalog.open(catalog_dir).entries()
    assert entry.image_hash is None
    with pytest.raises(FlashError, match="no image hash") as caught:
        image_hash_of(entry)
    assert (caught.value.stage, caught.value.code) == (Stage.SELECT, "image_missing")
