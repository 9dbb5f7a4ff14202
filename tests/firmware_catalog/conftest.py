"""Fixtures: a catalog directory with trusted keys, and real signed images on disk."""

from __future__ import annotations

from pathlib import Path

import pytest

from jigd.model import DeviceModel, FirmwareVersion
from sim.images import ManufacturerKeys, make_manufacturer_keys, make_signed_image
from tests.firmware_catalog.helpers import MODEL, SEED, MakeImage


@pytest.fixture
def keys() -> dict[int, ManufacturerKeys]:
    return {m: make_manufacturer_keys(m, SEED) for m in (0x1086, 0x10AB, 0x2222)}


@pytest.fixture
def catalog_dir(tmp_path: Path, keys: dict[int, ManufacturerKeys]) -> Path:
    """A catalog directory trusting manufacturers 1086 and 10AB (not 2222), with no entries."""
    directory = tmp_path / "catalog"
    (directory / "keys").mkdir(parents=True)
    for manufacturer in (0x1086, 0x10AB):
        (directory / "keys" / f"{manufacturer:04X}.pem").write_bytes(
            keys[manufacturer].public_pem()
        )
    return directory


@pytest.fixture
def make_image(tmp_path: Path, keys: dict[int, ManufacturerKeys]) -> MakeImage:
    """Write a signed image: `make_image("04000007", model=..., signer=0x10AB, seed=...)`."""
    (tmp_path / "build").mkdir()

    def make(
        version: str,
        *,
        model: DeviceModel = MODEL,
        signer: int | None = None,
        size: int = 4096,
        seed: int = 0,
        unsigned: bool = False,
    ) -> Path:
        key = None if unsigned else keys[model.manufacturer if signer is None else signer]
        data = make_signed_image(key, model, FirmwareVersion.parse(version), size, seed)
        by = "unsigned" if key is None else key.manufacturer_hex
        path = tmp_path / "build" / f"{model.model_hex}-{version}-{seed}-{by}.bin"
        path.write_bytes(data)
        return path

    return make
