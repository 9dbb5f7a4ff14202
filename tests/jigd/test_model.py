"""Identifiers round-trip through text and bytes; bad input is rejected with a quoting message."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from jigd.model import (
    DeviceModel,
    DeviceModelField,
    FirmwareVersion,
    FirmwareVersionField,
    Guid,
    GuidField,
    IdentifierError,
    Outcome,
    Stage,
)

u64 = st.integers(min_value=0, max_value=2**64 - 1)
u32 = st.integers(min_value=0, max_value=2**32 - 1)
u16 = st.integers(min_value=0, max_value=2**16 - 1)
octet = st.integers(min_value=0, max_value=255)


@given(u64)
def test_guid_round_trips_text_and_bytes(value: int) -> None:
    guid = Guid(value)
    text = str(guid)
    assert len(text) == 23
    assert text == text.upper()
    assert Guid.parse(text) == guid
    assert Guid.from_bytes(guid.to_bytes()) == guid


@given(u64, st.sampled_from(["-", ":", ""]), st.booleans())
def test_guid_accepts_every_input_form(value: int, sep: str, lower: bool) -> None:
    octets = [f"{b:02X}" for b in value.to_bytes(8, "big")]
    text = sep.join(octets)
    if lower:
        text = text.lower()
    assert Guid.parse(text) == Guid(value)


def test_guid_canonical_form_matches_duis_example() -> None:
    assert str(Guid.parse("00db1234567890a0")) == "00-DB-12-34-56-78-90-A0"
    assert str(Guid.parse("00:db:12:34:56:78:90:a0")) == "00-DB-12-34-56-78-90-A0"


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "00-DB-12-34-56-78-90",
        "00-DB-12-34-56-78-90-A0-11",
        "00-DB-12-34-56-78-90-AG",
        "00-DB:12-34-56-78-90-A0",
        "00DB1234567890A",
        "0x00DB1234567890A0",
        "00 DB 12 34 56 78 90 A0",
    ],
)
def test_guid_rejects_bad_text_quoting_it(bad: str) -> None:
    with pytest.raises(IdentifierError) as info:
        Guid.parse(bad)
    assert repr(bad) in str(info.value)
    assert "00-DB-12-34-56-78-90-A0" in str(info.value)


@given(st.text(max_size=30))
def test_guid_parse_never_crashes_on_garbage(text: str) -> None:
    try:
        guid = Guid.parse(text)
    except IdentifierError as exc:
        assert repr(text) in str(exc)  # noqa: PT017 - hypothesis input may parse
    else:
        assert Guid.parse(str(guid)) == guid


@given(st.binary(max_size=12).filter(lambda b: len(b) != 8))
def test_guid_rejects_wrong_byte_count(data: bytes) -> None:
    with pytest.raises(IdentifierError, match="not 8"):
        Guid.from_bytes(data)


@given(u16, u32)
def test_device_model_round_trips(manufacturer: int, model: int) -> None:
    dm = DeviceModel(manufacturer, model)
    assert DeviceModel.parse(str(dm)) == dm
    assert DeviceModel.parse(str(dm).lower()) == dm
    assert DeviceModel.from_parts(dm.manufacturer_hex, dm.model_hex) == dm


def test_device_model_prints_canonically() -> None:
    assert str(DeviceModel.parse("1086/57310102")) == "1086/57310102"
    assert str(DeviceModel(0x1086, 0xABC)) == "1086/00000ABC"


@pytest.mark.parametrize(
    "bad", ["", "1086", "1086/5731010", "10860/57310102", "1086-57310102", "108G/57310102"]
)
def test_device_model_rejects_bad_text_quoting_it(bad: str) -> None:
    with pytest.raises(IdentifierError) as info:
        DeviceModel.parse(bad)
    assert repr(bad) in str(info.value)
    assert "1086/57310102" in str(info.value)


@given(u32)
def test_firmware_version_round_trips_text_and_mcuboot(value: int) -> None:
    fv = FirmwareVersion(value)
    assert FirmwareVersion.parse(str(fv)) == fv
    assert FirmwareVersion.from_mcuboot(*fv.mcuboot) == fv
    assert FirmwareVersion.parse_mcuboot(fv.mcuboot_str()) == fv


@given(u32, u32)
def test_firmware_version_orders_by_value(a: int, b: int) -> None:
    assert (FirmwareVersion(a) < FirmwareVersion(b)) == (a < b)
    assert (FirmwareVersion(a) == FirmwareVersion(b)) == (a == b)


def test_firmware_version_maps_to_mcuboot_as_domain_says() -> None:
    fv = FirmwareVersion.parse("04000007")
    assert fv.mcuboot == (4, 0, 0, 7)
    assert fv.mcuboot_str() == "4.0.0+7"
    assert str(FirmwareVersion.parse_mcuboot("4.1.2+3")) == "04010203"


@given(
    st.tuples(octet, octet, octet, octet),
    st.integers(min_value=0, max_value=3),
    st.integers(min_value=256, max_value=100_000),
)
def test_firmware_version_rejects_out_of_range_parts(
    parts: tuple[int, int, int, int], index: int, big: int
) -> None:
    values = list(parts)
    values[index] = big
    with pytest.raises(IdentifierError, match="outside 0-255"):
        FirmwareVersion.from_mcuboot(*values)


@pytest.mark.parametrize("bad", ["", "4000007", "040000070", "0400000G", "4.0.0+7"])
def test_firmware_version_rejects_bad_text_quoting_it(bad: str) -> None:
    with pytest.raises(IdentifierError) as info:
        FirmwareVersion.parse(bad)
    assert repr(bad) in str(info.value)


class _Row(BaseModel):
    guid: GuidField
    model: DeviceModelField
    version: FirmwareVersionField


def test_pydantic_fields_parse_and_serialise_canonically() -> None:
    row = _Row.model_validate(
        {"guid": "00db1234567890a0", "model": "1086/57310102", "version": "04000007"}
    )
    assert row.guid == Guid.parse("00-DB-12-34-56-78-90-A0")
    assert row.model_dump() == {
        "guid": "00-DB-12-34-56-78-90-A0",
        "model": "1086/57310102",
        "version": "04000007",
    }


def test_pydantic_fields_report_bad_input() -> None:
    with pytest.raises(ValidationError) as info:
        _Row.model_validate({"guid": "nope", "model": "1086/57310102", "version": "04000007"})
    assert "'nope'" in str(info.value)


def test_enums_name_the_contract_values() -> None:
    assert {o.value for o in Outcome} == {
        "reflashed",
        "already_current",
        "failed",
        "not_received",
    }
    assert [s.value for s in Stage][:3] == ["identify", "authorize", "select"]
    assert Stage.RECORD.value == "record"
