"""Manifests import all or nothing, and every problem is reported with its file, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from jigd.manifest import ManifestError, ManifestRow, load_manifest, parse_manifest
from jigd.model import DeviceModel, FirmwareVersion, Guid

SOURCE = "pallet-7.csv"


def problems_of(data: bytes) -> list[str]:
    with pytest.raises(ManifestError) as caught:
        parse_manifest(data, SOURCE)
    error = caught.value
    for problem in error.problems:
        assert problem in str(error)
    return error.problems


def test_accepts_bom_lowercase_colons_and_canonicalises() -> None:
    data = (
        "\ufeffguid,manufacturer,model,firmware_version\r\n"
        "00:db:12:34:56:78:90:a0,1086,57310102,03000001\r\n"
        "00db1234567890a1,,,\r\n"
        " 00-DB-12-34-56-78-90-A2 , 1086 , 5731010a , 0300000f \r\n"
        "\r\n"
    ).encode()
    rows = parse_manifest(data, SOURCE)
    assert rows == [
        ManifestRow(
            line=2,
            guid=Guid.parse("00-DB-12-34-56-78-90-A0"),
            model=DeviceModel(0x1086, 0x57310102),
            firmware_version=FirmwareVersion(0x03000001),
        ),
        ManifestRow(line=3, guid=Guid(0x00DB1234567890A1), model=None, firmware_version=None),
        ManifestRow(
            line=4,
            guid=Guid(0x00DB1234567890A2),
            model=DeviceModel(0x1086, 0x5731010A),
            firmware_version=FirmwareVersion(0x0300000F),
        ),
    ]
    assert [str(r.guid) for r in rows] == [
        "00-DB-12-34-56-78-90-A0",
        "00-DB-12-34-56-78-90-A1",
        "00-DB-12-34-56-78-90-A2",
    ]


def test_guid_column_alone_is_enough_and_header_is_case_insensitive() -> None:
    rows = parse_manifest(b"GUID\n00DB1234567890A0\n", SOURCE)
    assert rows == [ManifestRow(2, Guid(0x00DB1234567890A0), None, None)]


def test_bad_guid_duplicate_and_bad_model_on_three_lines_are_one_error() -> None:
    data = (
        b"guid,manufacturer,model,firmware_version\n"
        b"00-DB-12-34-56-78-90-A0,1086,57310102,03000001\n"
        b"00-DB-12-34-56-78-90-ZZ,1086,57310102,03000001\n"
        b"00:db:12:34:56:78:90:a0,1086,57310102,03000001\n"
        b"00-DB-12-34-56-78-90-A3,1086,5731,03000001\n"
    )
    problems = problems_of(data)
    assert len(problems) == 3
    bad_guid, duplicate, bad_model = problems
    assert bad_guid.startswith(f"{SOURCE}:3: guid: ")
    assert "'00-DB-12-34-56-78-90-ZZ'" in bad_guid
    assert duplicate.startswith(f"{SOURCE}:4: guid: ")
    assert "00-DB-12-34-56-78-90-A0" in duplicate
    assert "lines 2 and 4" in duplicate
    assert bad_model.startswith(f"{SOURCE}:5: model: ")
    assert "'5731'" in bad_model


def test_error_message_lists_every_problem_and_says_nothing_was_imported() -> None:
    data = b"guid\nnot-a-guid\nalso-bad\n"
    with pytest.raises(ManifestError) as caught:
        parse_manifest(data, SOURCE)
    text = str(caught.value)
    assert "2 problem(s)" in text
    assert "nothing was imported" in text
    assert f"{SOURCE}:2: guid:" in text
    assert f"{SOURCE}:3: guid:" in text
    assert [(p.line, p.field) for p in caught.value.details] == [(2, "guid"), (3, "guid")]


def test_header_problems_unknown_and_missing_columns() -> None:
    problems = problems_of(b"serial,manufacturer,colour\n00DB1234567890A0,1086,red\n")
    assert f"{SOURCE}:1: serial: unknown column 'serial'" in problems[0]
    assert any(p.startswith(f"{SOURCE}:1: colour: unknown column 'colour'") for p in problems)
    assert any(p.startswith(f"{SOURCE}:1: guid: required column 'guid'") for p in problems)
    assert any(
        p.startswith(f"{SOURCE}:1: model: column 'model' is missing") and "go together" in p
        for p in problems
    )
    assert all(p.startswith(f"{SOURCE}:1: ") for p in problems)


def test_manufacturer_and_model_go_together_in_each_row() -> None:
    data = (
        b"guid,manufacturer,model\n"
        b"00DB1234567890A0,1086,\n"
        b"00DB1234567890A1,,57310102\n"
        b"00DB1234567890A2,10G6,57310102\n"
    )
    problems = problems_of(data)
    assert problems[0].startswith(f"{SOURCE}:2: model: empty while manufacturer is '1086'")
    assert problems[1].startswith(f"{SOURCE}:3: manufacturer: empty while model is '57310102'")
    assert problems[2].startswith(f"{SOURCE}:4: manufacturer: manufacturer '10G6'")


def test_bad_firmware_version_quotes_the_value() -> None:
    problems = problems_of(b"guid,firmware_version\n00DB1234567890A0,4.0.0\n")
    assert problems == [
        f"{SOURCE}:2: firmware_version: Firmware Version '4.0.0' is not a Firmware Version; "
        "write 8 hex characters, e.g. 04000007"
    ]


def test_wrong_number_of_fields() -> None:
    problems = problems_of(b"guid,firmware_version\n00DB1234567890A0,03000001,extra\n")
    assert problems == [
        f"{SOURCE}:2: (row): 3 field(s) where the header has 2; check for a missing or extra comma"
    ]


@pytest.mark.parametrize("data", [b"", b"\xef\xbb\xbf", b"\n\n  \n"])
def test_empty_file(data: bytes) -> None:
    problems = problems_of(data)
    assert len(problems) == 1
    assert problems[0].startswith(f"{SOURCE}:1: (file): the file is empty")


def test_header_without_rows() -> None:
    assert problems_of(b"guid,model,manufacturer\n") == [
        f"{SOURCE}:1: (file): no GUIDs: the file has a header and no rows"
    ]


def test_not_utf8_is_reported_by_line_with_the_other_problems() -> None:
    data = (
        b"guid,manufacturer,model\n00DB1234567890A0,1086,57310102\n00DB12345678\xe990A1,,\nbad,,\n"
    )
    problems = problems_of(data)
    assert problems[0].startswith(f"{SOURCE}:3: (file): not UTF-8 text: byte 0xE9 at column 13")
    assert problems[-1].startswith(f"{SOURCE}:4: guid: GUID 'bad'")


def test_line_numbers_count_lines_of_quoted_multiline_fields() -> None:
    data = b'guid,firmware_version\n00DB1234567890A0,"03000001\nmore"\nnope,\n'
    problems = problems_of(data)
    assert problems[0].startswith(f"{SOURCE}:2: firmware_version: ")
    assert problems[1].startswith(f"{SOURCE}:4: guid: GUID 'nope'")


def test_unterminated_quote_is_reported() -> None:
    problems = problems_of(b'guid\n"00DB1234567890A0\n')
    assert len(problems) == 1
    assert "(row): not valid CSV" in problems[0]


def test_load_manifest_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_bytes(b"guid\n00DB1234567890A0\nbad\n")
    with pytest.raises(ManifestError) as caught:
        load_manifest(path)
    assert caught.value.problems[0].startswith(f"{path}:3: guid: ")
    with pytest.raises(ManifestError, match="cannot read the file"):
        load_manifest(tmp_path / "missing.csv")
