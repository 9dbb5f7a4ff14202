"""Shared constants and helpers of the catalog tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

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
