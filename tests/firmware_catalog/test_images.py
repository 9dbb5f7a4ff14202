"""Images: verified by `verify` and before they are handed out; one shared mapping per image."""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path

import pytest

from firmware_catalog import Catalog, CatalogEntry, ImageError, Status
from jigd.cli import main as jigd_main
from jigd.model import FirmwareVersion
from tests.firmware_catalog.helpers import MODEL, OTHER_MFR_MODEL, OTHER_MODEL, MakeImage

V = FirmwareVersion.parse


def corrupt(path: Path, offset: int) -> None:
    """Flip one byte in place, as bit rot or a careless edit would."""
    path.chmod(0o644)
    with path.open("r+b") as file:
        file.seek(offset)
        byte = file.read(1)
        file.seek(offset)
        file.write(bytes([byte[0] ^ 0xFF]))


@pytest.fixture
def catalog(catalog_dir: Path, make_image: MakeImage) -> Catalog:
    catalog = Catalog.open(catalog_dir)
    for model, version in [
        (MODEL, "04000007"),
        (OTHER_MODEL, "04000001"),
        (OTHER_MFR_MODEL, "01000000"),
    ]:
        image = make_image(version, model=model, size=8192)
        catalog.add(image, model, V(version), Status.PRODUCTION, date(2026, 1, 31))
    return catalog


def verify(catalog: Catalog, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = jigd_main(["catalog", "--dir", str(catalog.directory), "verify"])
    out, err = capsys.readouterr()
    return code, out, err


def test_verify_passes_a_good_catalog(catalog: Catalog, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert verify(catalog, capsys) == (
        0,
        f"{catalog.directory}: 3 entries, every image verified\n",
        "",
    )


def test_verify_names_corrupted_and_missing_images(
    catalog: Catalog, capsys: pytest.CaptureFixture[str]
) -> None:
    corrupted = catalog.find(MODEL, V("04000007"))
    missing = catalog.find(OTHER_MFR_MODEL, V("01000000"))
    assert corrupted is not None
    assert missing is not None
    corrupt(catalog.image_path(corrupted), 0x200 + 1000)
    catalog.image_path(missing).unlink()
    capsys.readouterr()

    code, _, err = verify(catalog, capsys)

    assert code == 1
    lines = err.splitlines()
    assert len(lines) == 3
    assert lines[0].startswith(f"error: {catalog.image_path(corrupted)}: 1086/57310102 04000007: ")
    assert "changed on disk" in lines[0]
    assert lines[1] == (
        f"error: {catalog.image_path(missing)}: 10AB/00000001 01000000: is missing; add the "
        "image again"
    )
    assert lines[2] == f"{catalog.directory}: 2 of 3 entries are bad"
    assert "1086/57310103" not in err


def test_verify_rechecks_signature_with_the_trusted_key(
    catalog: Catalog, catalog_dir: Path, keys: dict[int, object], capsys: pytest.CaptureFixture[str]
) -> None:
    from sim.images import ManufacturerKeys

    # The station's trusted key for 1086 is replaced by 10AB's: 1086's images no longer pass.
    other = keys[0x10AB]
    assert isinstance(other, ManufacturerKeys)
    (catalog_dir / "keys" / "1086.pem").write_bytes(other.public_pem())
    (catalog_dir / "keys" / "10AB.pem").unlink()
    capsys.readouterr()

    code, _, err = verify(catalog, capsys)

    assert code == 1
    assert "1086/57310102 04000007: no valid signature by the trusted key" in err
    assert "1086/57310103 04000001: no valid signature by the trusted key" in err
    assert "10AB/00000001 01000000: cannot be checked: " in err
    assert "keys/10AB.pem" in err


def test_image_is_shared_and_verified(catalog: Catalog) -> None:
    entry = catalog.find(MODEL, V("04000007"))
    assert entry is not None
    first, second = catalog.image(entry), catalog.image(entry)
    assert bytes(first.data) == catalog.image_path(entry).read_bytes()
    assert len(first) == entry.size
    assert first.data.readonly
    assert first.data.obj is second.data.obj  # one mapping, shared


def _mappings_of(path: Path) -> int:
    maps = Path(f"/proc/{os.getpid()}/maps").read_text(encoding="utf-8")
    return sum(1 for line in maps.splitlines() if line.endswith(str(path)))


def test_image_changed_on_disk_is_refused(catalog: Catalog) -> None:
    entry = catalog.find(MODEL, V("04000007"))
    assert entry is not None
    path = catalog.image_path(entry)
    good = path.read_bytes()
    held = catalog.image(entry)
    assert _mappings_of(path) == 1

    corrupt(path, 100)
    with pytest.raises(ImageError, match=r"1086/57310102 04000007: changed on disk") as caught:
        catalog.image(entry)
    assert caught.value.path == path

    path.unlink()
    with pytest.raises(ImageError, match=r"1086/57310102 04000007: is missing"):
        catalog.image(entry)

    path.write_bytes(good)  # restored: served again, from a new mapping
    assert bytes(catalog.image(entry).data) == good
    del held


def test_image_for_a_forged_entry_is_refused(catalog: Catalog) -> None:
    entry = catalog.find(MODEL, V("04000007"))
    assert entry is not None
    forged = CatalogEntry.model_validate(entry.model_dump() | {"size": entry.size - 1})
    with pytest.raises(ImageError, match="changed on disk"):
        catalog.image(forged)
