"""`add` accepts only a signed image of the stated version, and a refusal changes nothing."""

from __future__ import annotations

import stat
from collections.abc import Callable
from datetime import date
from pathlib import Path

import pytest

from firmware_catalog import Catalog, CatalogError, ImageError, Status
from jigd.cli import main as jigd_main
from jigd.model import DeviceModel, FirmwareVersion
from tests.firmware_catalog.helpers import KEYLESS_MODEL, MODEL, MakeImage, snapshot

RELEASED = "2026-01-31"


def add_args(catalog_dir: Path, image: Path, model: DeviceModel, version: str) -> list[str]:
    return [
        "catalog",
        "--dir",
        str(catalog_dir),
        "add",
        str(image),
        "--device-model",
        str(model),
        "--version",
        version,
        "--status",
        "production",
        "--released",
        RELEASED,
    ]


def test_add_signed_image_through_cli(
    catalog_dir: Path, make_image: MakeImage, capsys: pytest.CaptureFixture[str]
) -> None:
    image = make_image("04000007", size=20_000)
    args = add_args(catalog_dir, image, MODEL, "04000007")
    assert jigd_main([*args, "--gbcs", "3.2", "--chts", "1.3", "--notes", "first"]) == 0
    assert "added 1086/57310102 04000007" in capsys.readouterr().out

    entry = Catalog.open(catalog_dir).entries()[0]
    assert entry.device_model == MODEL
    assert entry.firmware_version == FirmwareVersion.parse("04000007")
    assert (entry.status, entry.released, entry.size) == (
        Status.PRODUCTION,
        date(2026, 1, 31),
        20_000,
    )
    assert (entry.gbcs, entry.chts, entry.notes) == ("3.2", "1.3", "first")
    stored = catalog_dir / "images" / f"{entry.sha256}.bin"
    assert stored.read_bytes() == image.read_bytes()
    assert stat.S_IMODE(stored.stat().st_mode) == 0o444


# Each case writes the image to refuse and returns (image, model, --version, reason in the error).
Case = Callable[[Path, MakeImage], tuple[Path, DeviceModel, str, str]]


def _unsigned(_: Path, make_image: MakeImage) -> tuple[Path, DeviceModel, str, str]:
    return make_image("04000009", unsigned=True), MODEL, "04000009", "no valid signature"


def _other_manufacturers_key(_: Path, make: MakeImage) -> tuple[Path, DeviceModel, str, str]:
    return make("04000009", signer=0x10AB), MODEL, "04000009", "no valid signature"


def _byte_changed(_: Path, make_image: MakeImage) -> tuple[Path, DeviceModel, str, str]:
    image = make_image("04000009")
    data = bytearray(image.read_bytes())
    data[0x200 + 100] ^= 0x01
    image.write_bytes(bytes(data))
    return image, MODEL, "04000009", "changed after signing"


def _version_differs(_: Path, make_image: MakeImage) -> tuple[Path, DeviceModel, str, str]:
    return make_image("04000008"), MODEL, "04000009", "header version 4.0.0+8 (04000008) differs"


def _duplicate(_: Path, make_image: MakeImage) -> tuple[Path, DeviceModel, str, str]:
    # 04000007 is already in the catalog (see the `refusal` fixture), from another build.
    return make_image("04000007", seed=99), MODEL, "04000007", "already has 1086/57310102 04000007"


def _unknown_manufacturer(_: Path, make: MakeImage) -> tuple[Path, DeviceModel, str, str]:
    return make("04000009", model=KEYLESS_MODEL), KEYLESS_MODEL, "04000009", "keys/2222.pem"


def _not_mcuboot(tmp_path: Path, _: MakeImage) -> tuple[Path, DeviceModel, str, str]:
    image = tmp_path / "firmware.hex"
    image.write_bytes(b":10010000214601360121470136007EFE09D2190140\n" * 100)
    return image, MODEL, "04000009", "not an MCUboot image"


def _truncated(tmp_path: Path, make_image: MakeImage) -> tuple[Path, DeviceModel, str, str]:
    image = make_image("04000009")
    image.write_bytes(image.read_bytes()[:3000])
    return image, MODEL, "04000009", "truncated"


def _tiny(tmp_path: Path, _: MakeImage) -> tuple[Path, DeviceModel, str, str]:
    image = tmp_path / "tiny.bin"
    image.write_bytes(b"\x3d\xb8\xf3\x96")
    return image, MODEL, "04000009", "not an MCUboot image (too short"


def _missing(tmp_path: Path, _: MakeImage) -> tuple[Path, DeviceModel, str, str]:
    return tmp_path / "nowhere.bin", MODEL, "04000009", "cannot read it: No such file"


CASES: dict[str, Case] = {
    "unsigned": _unsigned,
    "signed with another manufacturer's key": _other_manufacturers_key,
    "one byte changed after signing": _byte_changed,
    "header version differs": _version_differs,
    "duplicate model and version": _duplicate,
    "unknown manufacturer key": _unknown_manufacturer,
    "not an MCUboot image": _not_mcuboot,
    "truncated": _truncated,
    "shorter than a header": _tiny,
    "missing file": _missing,
}


@pytest.fixture
def refusal(
    request: pytest.FixtureRequest, tmp_path: Path, catalog_dir: Path, make_image: MakeImage
) -> tuple[Path, DeviceModel, str, str]:
    """A catalog holding 1086/57310102 04000007, and the image of the case to refuse."""
    Catalog.open(catalog_dir).add(
        make_image("04000007"),
        MODEL,
        FirmwareVersion.parse("04000007"),
        Status.PRODUCTION,
        date(2026, 1, 31),
    )
    case: Case = CASES[request.param]
    return case(tmp_path, make_image)


@pytest.mark.parametrize("refusal", CASES, indirect=True)
def test_cli_refuses_and_changes_nothing(
    refusal: tuple[Path, DeviceModel, str, str],
    catalog_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    image, model, version, reason = refusal
    before = snapshot(catalog_dir)
    capsys.readouterr()

    assert jigd_main(add_args(catalog_dir, image, model, version)) == 2

    err = capsys.readouterr().err
    assert f"error: not added to {catalog_dir}: {image}: " in err
    assert reason in err
    assert snapshot(catalog_dir) == before


@pytest.mark.parametrize("refusal", CASES, indirect=True)
def test_library_refuses_and_changes_nothing(
    refusal: tuple[Path, DeviceModel, str, str], catalog_dir: Path
) -> None:
    image, model, version, reason = refusal
    catalog = Catalog.open(catalog_dir)
    before = snapshot(catalog_dir)

    with pytest.raises(ImageError) as caught:
        catalog.add(image, model, FirmwareVersion.parse(version), Status.PILOT, date(2026, 2, 1))

    assert caught.value.path == image
    assert str(image) in str(caught.value)
    assert reason in str(caught.value)
    assert snapshot(catalog_dir) == before
    assert [e.firmware_version for e in catalog.entries()] == [FirmwareVersion.parse("04000007")]


def test_bad_gbcs_version_is_refused(catalog_dir: Path, make_image: MakeImage) -> None:
    image = make_image("04000007")
    with pytest.raises(ImageError, match=r"gbcs: String should match pattern"):
        Catalog.open(catalog_dir).add(
            image,
            MODEL,
            FirmwareVersion.parse("04000007"),
            Status.PRODUCTION,
            date(2026, 1, 31),
            gbcs="three",
        )
    assert snapshot(catalog_dir) == (None, [])


def test_private_key_in_keys_dir_is_refused(
    catalog_dir: Path, make_image: MakeImage, keys: dict[int, object]
) -> None:
    from sim.images import ManufacturerKeys

    key = keys[0x1086]
    assert isinstance(key, ManufacturerKeys)
    (catalog_dir / "keys" / "1086.pem").write_bytes(key.private_pem())
    with pytest.raises(ImageError, match=r"keys/1086.pem: .*holds a private key"):
        Catalog.open(catalog_dir).add(
            make_image("04000007"),
            MODEL,
            FirmwareVersion.parse("04000007"),
            Status.PRODUCTION,
            date(2026, 1, 31),
        )


def test_missing_catalog_directory(tmp_path: Path, make_image: MakeImage) -> None:
    with pytest.raises(CatalogError, match=r"nowhere: the catalog directory does not exist"):
        Catalog.open(tmp_path / "nowhere")


def test_same_image_for_two_models_is_stored_once(catalog_dir: Path, make_image: MakeImage) -> None:
    image = make_image("04000007")
    catalog = Catalog.open(catalog_dir)
    version = FirmwareVersion.parse("04000007")
    first = catalog.add(image, MODEL, version, Status.PRODUCTION, date(2026, 1, 31))
    other = DeviceModel.parse("1086/57310199")
    second = catalog.add(image, other, version, Status.PILOT, date(2026, 1, 31))
    assert first.sha256 == second.sha256
    assert [p.name for p in (catalog_dir / "images").iterdir()] == [f"{first.sha256}.bin"]
    assert [e.device_model for e in Catalog.open(catalog_dir).entries()] == [MODEL, other]
