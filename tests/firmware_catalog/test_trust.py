"""Trust at load: with `verify`, an entry whose image fails any check is never selected.

The checks are `jigd catalog add`'s and `verify`'s (`Catalog.check`): the file's sha256 and size,
the MCUboot signature by the manufacturer's trusted key, the header version, the image hash. An
untrusted latest entry stops its Device Model (`image_untrusted`): no older entry is chosen in
its place. Real signed images throughout (sim.images).
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

from firmware_catalog import Catalog, SelectionCode, SelectionError, Status
from jigd.model import FirmwareVersion
from tests.firmware_catalog.helpers import MODEL, OTHER_MODEL, MakeImage, hand_add
from tests.firmware_catalog.test_images import corrupt

V = FirmwareVersion.parse
RUNNING = V("03000001")


@pytest.fixture
def catalog_dir_with_latest(catalog_dir: Path, make_image: MakeImage) -> Path:
    """MODEL at 04000006 and 04000007 (the latest), and OTHER_MODEL at 04000001, all added by
    `jigd catalog add`."""
    catalog = Catalog.open(catalog_dir)
    for model, version in [(MODEL, "04000006"), (MODEL, "04000007"), (OTHER_MODEL, "04000001")]:
        image = make_image(version, model=model)
        catalog.add(image, model, V(version), Status.PRODUCTION, date(2026, 1, 31))
    return catalog_dir


def _untrusted_select(catalog: Catalog, version: str) -> SelectionError:
    with pytest.raises(SelectionError) as caught:
        catalog.select(MODEL, RUNNING)
    assert caught.value.code is SelectionCode.IMAGE_UNTRUSTED
    assert f"{version} (sha256 " in caught.value.detail
    return caught.value


@pytest.mark.parametrize(
    ("how", "reason"),
    [
        ("unsigned", "no valid signature by the trusted key"),
        ("foreign_key", "no valid signature by the trusted key"),
        ("other_version", "header version 4.0.0+9 (04000009) differs from the entry's 04000010"),
        ("other_image_hash", "image hash"),
    ],
)
def test_an_image_added_by_hand_that_fails_a_check_is_never_selected(
    catalog_dir_with_latest: Path, make_image: MakeImage, how: str, reason: str
) -> None:
    """catalog.json edited by hand: a newer "latest" whose image `add` would have refused."""
    version = "04000010"
    image_hash = None
    if how == "unsigned":
        image = make_image(version, unsigned=True)
    elif how == "foreign_key":
        image = make_image(version, signer=0x10AB)  # another manufacturer's key
    elif how == "other_version":
        image = make_image("04000009", seed=3)  # signed, but says 04000009 in its header
    else:
        image = make_image(version, seed=4)
        image_hash = "00" * 32
    entry = hand_add(catalog_dir_with_latest, image, MODEL, version, image_hash=image_hash)

    catalog = Catalog.open(catalog_dir_with_latest, verify=True)

    (bad,) = catalog.untrusted()
    assert (bad.entry.firmware_version, bad.entry.sha256) == (V(version), entry["sha256"])
    assert bad.code == "image_untrusted"
    assert reason in bad.reason
    error = _untrusted_select(catalog, version)
    assert reason in error.detail
    # Not a fallback to the older 04000006/04000007 either: the model stops, visibly.
    assert catalog.latest(MODEL) == bad.entry
    # Other Device Models are not affected.
    assert catalog.select(OTHER_MODEL, RUNNING).firmware_version == V("04000001")


def test_an_image_changed_after_it_was_added_is_rejected_at_load(
    catalog_dir_with_latest: Path,
) -> None:
    latest = Catalog.open(catalog_dir_with_latest).find(MODEL, V("04000007"))
    assert latest is not None
    corrupt(catalog_dir_with_latest / "images" / latest.image_name, 0x300)

    catalog = Catalog.open(catalog_dir_with_latest, verify=True)

    assert [(u.entry, u.code) for u in catalog.untrusted()] == [(latest, "image_untrusted")]
    assert "changed on disk" in catalog.untrusted()[0].reason
    _untrusted_select(catalog, "04000007")


def test_a_missing_image_or_trusted_key_is_rejected_at_load(
    catalog_dir_with_latest: Path,
) -> None:
    latest = Catalog.open(catalog_dir_with_latest).find(MODEL, V("04000007"))
    assert latest is not None
    (catalog_dir_with_latest / "images" / latest.image_name).unlink()
    catalog = Catalog.open(catalog_dir_with_latest, verify=True)
    assert [u.entry for u in catalog.untrusted()] == [latest]
    assert "is missing" in catalog.untrusted()[0].reason

    (catalog_dir_with_latest / "keys" / "1086.pem").unlink()
    catalog.reload(verify=True)
    assert len(catalog.untrusted()) == 3  # every entry of manufacturer 1086
    assert all("trusted key" in u.reason for u in catalog.untrusted())


def test_an_untrusted_older_entry_does_not_stop_a_trusted_latest(
    catalog_dir_with_latest: Path, make_image: MakeImage
) -> None:
    hand_add(catalog_dir_with_latest, make_image("04000002", unsigned=True), MODEL, "04000002")
    catalog = Catalog.open(catalog_dir_with_latest, verify=True)
    assert [str(u.entry.firmware_version) for u in catalog.untrusted()] == ["04000002"]
    assert catalog.select(MODEL, RUNNING).firmware_version == V("04000007")


def test_without_verify_nothing_is_checked(
    catalog_dir_with_latest: Path, make_image: MakeImage
) -> None:
    """`jigd catalog list/latest` read without checking images (`verify` is for those)."""
    hand_add(catalog_dir_with_latest, make_image("04000010", unsigned=True), MODEL, "04000010")
    catalog = Catalog.open(catalog_dir_with_latest)
    assert catalog.untrusted() == ()
    assert len(catalog.verify()) == 1


def test_distrust_stops_an_entry_until_the_catalog_is_read_again(
    catalog_dir_with_latest: Path,
) -> None:
    catalog = Catalog.open(catalog_dir_with_latest, verify=True)
    latest = catalog.select(MODEL, RUNNING)
    assert catalog.untrusted() == ()

    assert catalog.distrust(latest, "image_rejected", "verify: the bootloader refused it")
    assert not catalog.distrust(latest, "image_rejected", "again")  # already
    (bad,) = catalog.untrusted()
    assert (bad.entry, bad.code, bad.reason) == (
        latest,
        "image_rejected",
        "verify: the bootloader refused it",
    )
    _untrusted_select(catalog, "04000007")
    # A write keeps it untrusted (the same image); an entry not in the catalog is refused.
    catalog.set_status(OTHER_MODEL, V("04000001"), Status.PILOT)
    assert [u.entry for u in catalog.untrusted()] == [latest]
    stranger = latest.model_copy(update={"sha256": "cd" * 32})
    assert not catalog.distrust(stranger, "image_rejected", "not ours")

    catalog.reload(verify=True)  # the image still passes every check: trusted again
    assert catalog.untrusted() == ()
    assert catalog.select(MODEL, RUNNING) == latest


def test_a_fixed_catalog_is_trusted_again_on_reload(
    catalog_dir_with_latest: Path, make_image: MakeImage
) -> None:
    """The person's fix: withdraw the bad entry and reload; the previous one is selected."""
    hand_add(catalog_dir_with_latest, make_image("04000010", unsigned=True), MODEL, "04000010")
    catalog = Catalog.open(catalog_dir_with_latest, verify=True)
    _untrusted_select(catalog, "04000010")

    Catalog.open(catalog_dir_with_latest).set_status(MODEL, V("04000010"), Status.WITHDRAWN)
    catalog.reload(verify=True)

    assert catalog.select(MODEL, RUNNING).firmware_version == V("04000007")
    # A withdrawn entry is never selected: its image is not checked (`verify` still does).
    assert catalog.untrusted() == ()
    assert len(catalog.verify()) == 1
    document = json.loads((catalog_dir_with_latest / "catalog.json").read_text("utf-8"))
    assert len(document["entries"]) == 4
