"""Selection: the highest production version for exactly the Device Model, never a downgrade."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from firmware_catalog import Catalog, SelectionCode, SelectionError, Status
from jigd.model import DeviceModel, FirmwareVersion, Stage
from tests.firmware_catalog.helpers import MODEL, OTHER_MODEL, MakeImage

V = FirmwareVersion.parse

# MODEL: 04000005 and 04000007 production, 04000009 withdrawn, 0400000A pilot.
# OTHER_MODEL: only 05000001 pilot.
RELEASES = [
    (MODEL, "04000005", Status.PRODUCTION),
    (MODEL, "04000007", Status.PRODUCTION),
    (MODEL, "04000009", Status.WITHDRAWN),
    (MODEL, "0400000A", Status.PILOT),
    (OTHER_MODEL, "05000001", Status.PILOT),
]


@pytest.fixture
def catalog(catalog_dir: Path, make_image: MakeImage) -> Catalog:
    catalog = Catalog.open(catalog_dir)
    for model, version, status in RELEASES:
        catalog.add(make_image(version, model=model), model, V(version), status, date(2026, 1, 1))
    return catalog


def test_highest_production_version_wins(catalog: Catalog) -> None:
    entry = catalog.select(MODEL, V("04000001"))
    assert entry.firmware_version == V("04000007")
    assert entry.status == Status.PRODUCTION


def test_withdrawn_newest_is_skipped(catalog: Catalog) -> None:
    assert catalog.latest(MODEL) == catalog.find(MODEL, V("04000007"))
    assert catalog.select(MODEL, V("04000005")).firmware_version == V("04000007")


def test_pilot_selected_only_where_allowed_for_that_model(catalog: Catalog) -> None:
    assert catalog.select(MODEL, V("04000001"), {MODEL}).firmware_version == V("0400000A")
    # An allowance for another model does not apply.
    assert catalog.select(MODEL, V("04000001"), {OTHER_MODEL}).firmware_version == V("04000007")
    assert catalog.select(OTHER_MODEL, V("01000000"), [OTHER_MODEL]).status == Status.PILOT
    with pytest.raises(SelectionError) as caught:
        catalog.select(OTHER_MODEL, V("01000000"))
    assert caught.value.code == SelectionCode.NO_FIRMWARE


def test_hub_on_latest_version_gets_that_entry(catalog: Catalog) -> None:
    entry = catalog.select(MODEL, V("04000007"))
    assert entry.firmware_version == V("04000007")
    assert entry == catalog.find(MODEL, V("04000007"))


def test_hub_newer_than_catalog_is_never_downgraded(catalog: Catalog) -> None:
    # 04000008 is below the withdrawn 04000009, but above every selectable entry.
    with pytest.raises(SelectionError) as caught:
        catalog.select(MODEL, V("04000008"))
    error = caught.value
    assert (error.code, error.stage) == (SelectionCode.NEWER_THAN_CATALOG, Stage.SELECT)
    assert (error.model, error.running) == (MODEL, V("04000008"))
    assert "never downgraded" in str(error)
    # With pilot allowed, 0400000A is selectable, so the same hub is upgraded.
    assert catalog.select(MODEL, V("04000008"), {MODEL}).firmware_version == V("0400000A")


def test_unknown_device_model_has_no_firmware(catalog: Catalog) -> None:
    unknown = DeviceModel.parse("1086/00000000")
    assert catalog.latest(unknown, {unknown}) is None
    with pytest.raises(SelectionError) as caught:
        catalog.select(unknown, V("04000001"))
    assert caught.value.code == SelectionCode.NO_FIRMWARE
    assert str(caught.value.code) == "no_firmware"
    assert "1086/00000000" in str(caught.value)


def test_withdrawing_the_latest_changes_the_selection(catalog: Catalog, catalog_dir: Path) -> None:
    reader = Catalog.open(catalog_dir)
    catalog.set_status(MODEL, V("04000007"), Status.WITHDRAWN)

    assert catalog.select(MODEL, V("04000001")).firmware_version == V("04000005")
    with pytest.raises(SelectionError) as caught:
        catalog.select(MODEL, V("04000007"))
    assert caught.value.code == SelectionCode.NEWER_THAN_CATALOG
    # Another reader sees the change after reload, as the daemon does on SIGHUP.
    assert reader.select(MODEL, V("04000001")).firmware_version == V("04000007")
    reader.reload()
    assert reader.select(MODEL, V("04000001")).firmware_version == V("04000005")


def test_entries_filtered_and_sorted(catalog: Catalog) -> None:
    assert [str(e.firmware_version) for e in catalog.entries(MODEL)] == [
        "04000005",
        "04000007",
        "04000009",
        "0400000A",
    ]
    assert [e.device_model for e in catalog.entries()] == [MODEL] * 4 + [OTHER_MODEL]
