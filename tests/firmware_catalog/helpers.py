"""Shared constants and helpers of the catalog tests."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from firmware_catalog.mcuboot import read_image_hash
from jigd.model import DeviceModel

SEED = 7
MODEL = DeviceModel.parse("1086/57310102")
OTHER_MODEL = DeviceModel.parse("1086/57310103")
OTHER_MFR_MODEL = DeviceModel.parse("10AB/00000001")
KEYLESS_MODEL = DeviceModel.parse("2222/00000001")

MakeImage = Callable[..., Path]


def snapshot(catalog_dir: Path) -> tuple[bytes | None, list[str]]:
    """catalog.json's bytes and the images/ listing: what a refused write must leave alone."""
    index = catalog_dir / "catalog.json"
    images = catalog_dir / "images"
    return (
        index.read_bytes() if index.exists() else None,
        sorted(p.name for p in images.iterdir()) if images.exists() else [],
    )


def hand_add(
    catalog_dir: Path,
    image: Path,
    model: DeviceModel,
    version: str,
    *,
    status: str = "production",
    image_hash: str | None = None,
) -> dict[str, object]:
    """Put `image` in the catalog as a person editing catalog.json by hand would: copied to
    images/<sha256>.bin and listed with its sha256, size and image hash (read from the image,
    unchecked, unless given), without `jigd catalog add`'s checks. Returns the entry written."""
    data = image.read_bytes()
    sha256 = hashlib.sha256(data).hexdigest()
    images = catalog_dir / "images"
    images.mkdir(exist_ok=True)
    (images / f"{sha256}.bin").write_bytes(data)
    entry: dict[str, object] = {
        "manufacturer": model.manufacturer_hex,
        "model": model.model_hex,
        "firmware_version": version,
        "sha256": sha256,
        "image_hash": image_hash or read_image_hash(image),
        "size": len(data),
        "status": status,
        "released": "2026-02-01",
    }
    index = catalog_dir / "catalog.json"
    entries: list[object] = []
    document = {"schema": "jigd.catalog/2", "entries": entries}
    if index.exists():
        document = json.loads(index.read_text("utf-8"))
        entries = document["entries"]
    entries.append(entry)
    index.write_text(json.dumps(document, indent=2), encoding="utf-8")
    return entry
