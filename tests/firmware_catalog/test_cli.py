"""`jigd catalog list|latest|set-status`, and finding the catalog through the configuration."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from firmware_catalog import Catalog, Status
from jigd.cli import main as jigd_main
from jigd.model import FirmwareVersion
from tests.firmware_catalog.helpers import MODEL, OTHER_MODEL, MakeImage

V = FirmwareVersion.parse


@pytest.fixture
def catalog(catalog_dir: Path, make_image: MakeImage) -> Catalog:
    catalog = Catalog.open(catalog_dir)
    for version, status in [("04000005", Status.PRODUCTION), ("04000007", Status.PILOT)]:
        catalog.add(
            make_image(version), MODEL, V(version), status, date(2026, 1, 31), notes="bench"
        )
    return catalog


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = jigd_main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_list_is_a_table(catalog: Catalog, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "catalog", "--dir", str(catalog.directory), "list")
    assert code == 0
    header, *rows = out.splitlines()
    assert header.split() == [
        "DEVICE",
        "MODEL",
        "VERSION",
        "MCUBOOT",
        "STATUS",
        "RELEASED",
        "GBCS",
        "CHTS",
        "SIZE",
        "SHA256",
        "IMAGE",
        "HASH",
        "NOTES",
    ]
    assert rows[0].split()[:6] == [
        "1086/57310102",
        "04000005",
        "4.0.0+5",
        "production",
        "2026-01-31",
        "-",
    ]
    assert rows[1].split()[3] == "pilot"
    assert rows[1].endswith("bench")


def test_list_long_shows_both_hashes_whole(
    catalog: Catalog, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "catalog", "--dir", str(catalog.directory), "list", "--long")
    assert code == 0
    entry = catalog.entries()[0]
    assert entry.image_hash is not None
    assert entry.image_hash != entry.sha256
    first = out.splitlines()[1].split()
    assert entry.sha256 in first
    assert entry.image_hash in first


def test_list_filters_by_model(catalog: Catalog, capsys: pytest.CaptureFixture[str]) -> None:
    where = ["catalog", "--dir", str(catalog.directory), "list", "--device-model"]
    code, out, _ = run(capsys, *where, str(OTHER_MODEL))
    assert (code, out) == (0, f"{catalog.catalog_path}: no entries for {OTHER_MODEL}\n")
    code, out, _ = run(capsys, *where, str(MODEL))
    assert len(out.splitlines()) == 3


def test_latest(catalog: Catalog, capsys: pytest.CaptureFixture[str]) -> None:
    where = ["catalog", "--dir", str(catalog.directory), "latest"]
    code, out, _ = run(capsys, *where, str(MODEL))
    assert code == 0
    assert "firmware version: 04000005 (4.0.0+5)" in out
    assert "status:           production" in out
    code, out, _ = run(capsys, *where, str(MODEL), "--pilot")
    assert "firmware version: 04000007 (4.0.0+7)" in out
    code, out, err = run(capsys, *where, str(OTHER_MODEL))
    assert (code, out) == (1, "")
    assert f"no production firmware for Device Model {OTHER_MODEL}" in err


def test_set_status(catalog: Catalog, capsys: pytest.CaptureFixture[str]) -> None:
    where = ["catalog", "--dir", str(catalog.directory), "set-status", str(MODEL)]
    code, out, _ = run(capsys, *where, "04000007", "production")
    assert (code, out) == (0, "1086/57310102 04000007 is production\n")
    catalog.reload()
    assert catalog.select(MODEL, V("04000001")).firmware_version == V("04000007")

    code, _, err = run(capsys, *where, "04000006", "withdrawn")
    assert code == 2
    assert f"{catalog.catalog_path}: 1086/57310102 04000006: no such entry" in err


def test_bad_arguments_exit_2(catalog: Catalog, capsys: pytest.CaptureFixture[str]) -> None:
    where = ["catalog", "--dir", str(catalog.directory)]
    for args in (
        [*where, "latest", "1086"],
        [*where, "set-status", str(MODEL), "04000007", "beta"],
        [
            *where,
            "add",
            "x.bin",
            "--device-model",
            str(MODEL),
            "--version",
            "4.0.0",
            "--status",
            "production",
            "--released",
            "2026-01-31",
        ],
        ["catalog", "--dir", "a", "--config", "b", "list"],
    ):
        with pytest.raises(SystemExit) as caught:
            jigd_main(args)
        assert caught.value.code == 2
    assert "write 8 hex characters" in capsys.readouterr().err


def test_catalog_dir_comes_from_the_config(
    catalog: Catalog, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "station.toml"
    # Relative to the configuration file, as every path in it.
    config.write_text('station = "bench-a"\ncatalog_dir = "catalog"\n', encoding="utf-8")
    code, out, _ = run(capsys, "catalog", "--config", str(config), "latest", str(MODEL))
    assert code == 0
    assert "04000005" in out


def test_bad_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "station.toml"
    config.write_text('station = "bench a"\n', encoding="utf-8")
    code, _, err = run(capsys, "catalog", "--config", str(config), "list")
    assert code == 2
    assert f"{config}: 1 problem(s)" in err
    code, _, err = run(capsys, "catalog", "--config", str(tmp_path / "none.toml"), "list")
    assert code == 2
    assert "none.toml" in err
