"""Pallets and their manifests differ as real deliveries do, by the counts asked for."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from jigd.model import DeviceModel, FirmwareVersion, Guid
from sim.cli import main as jigsim
from sim.pallet import PalletError, default_counts, load_pallet, make_pallet, write_pallet

LATEST = FirmwareVersion.parse("04000007")


def _manifest(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def test_pallet_command_writes_pallet_and_manifest_with_the_asked_differences(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "pallet.json"
    counts = ["--missing", "3", "--extra", "4", "--current", "5"]
    code = jigsim(["pallet", "--hubs", "50", "--out", str(out), "--seed", "9", *counts])
    assert code == 0
    manifest_path = tmp_path / "pallet.manifest.csv"
    assert capsys.readouterr().out.split() == [str(out), str(manifest_path)]
    document = json.loads(out.read_text(encoding="utf-8"))
    assert document["schema"] == "jigsim.pallet/1"
    hubs = document["hubs"]
    assert len(hubs) == 50
    rows = _manifest(manifest_path)
    assert list(rows[0]) == ["guid", "manufacturer", "model", "firmware_version"]
    on_pallet = {h["guid"] for h in hubs}
    listed = {r["guid"] for r in rows}
    assert len(rows) == 50 - 4 + 3
    assert len(on_pallet - listed) == 4  # extra: present, not listed
    assert len(listed - on_pallet) == 3  # missing: listed, not present
    assert {h["guid"] for h in hubs if not h["listed"]} == on_pallet - listed
    assert sum(h["firmware_version"] == "04000007" for h in hubs) == 5
    assert all(FirmwareVersion.parse(h["firmware_version"]) <= LATEST for h in hubs)
    for row in rows:
        assert str(Guid.parse(row["guid"])) == row["guid"]  # canonical text
        assert str(DeviceModel.from_parts(row["manufacturer"], row["model"])) == "1086/57310102"
    by_guid = {h["guid"]: h for h in hubs}
    for row in rows:
        if row["guid"] in by_guid:
            assert row["firmware_version"] == by_guid[row["guid"]]["firmware_version"]
    assert [r["guid"] for r in rows] == sorted(r["guid"] for r in rows)


def test_zero_differences_are_allowed_and_defaults_are_a_few() -> None:
    pallet = make_pallet(20, missing=0, extra=0, current=0)
    assert not pallet.missing
    assert all(h.listed for h in pallet.hubs)
    assert all(h.firmware_version < LATEST for h in pallet.hubs)
    assert default_counts(96) == (2, 2, 5)
    default = make_pallet(96)
    assert (len(default.missing), sum(not h.listed for h in default.hubs)) == (2, 2)


def test_same_seed_same_pallet_and_models_and_latest_per_model(tmp_path: Path) -> None:
    a, b = DeviceModel.parse("1086/57310102"), DeviceModel.parse("10AB/00000001")
    latest = {a: LATEST, b: FirmwareVersion.parse("02010000")}
    first = make_pallet(12, seed=5, models=[a, b], latest=latest, current=4, fault_profile="harsh")
    again = make_pallet(12, seed=5, models=[a, b], latest=latest, current=4, fault_profile="harsh")
    assert first == again
    assert {h.model for h in first.hubs} == {a, b}
    assert all(h.firmware_version <= latest[h.model] for h in first.hubs)
    assert first.latest == {"1086/57310102": LATEST, "10AB/00000001": latest[b]}
    assert all(h.faults.names() for h in first.hubs)
    write_pallet(first, tmp_path / "p.json")
    assert load_pallet(tmp_path / "p.json") == first


def test_a_bad_pallet_file_is_named_with_its_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(
        json.dumps(
            {
                "schema": "jigsim.pallet/1",
                "hubs": [{"guid": "nope", "model": "1086/57310102", "firmware_version": "1"}],
            }
        ),
        encoding="utf-8",
    )
    with pytest.raises(PalletError, match=r"bad\.json: hubs\.0\.guid"):
        load_pallet(path)


def test_pallet_command_refuses_impossible_counts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "p.json"
    assert jigsim(["pallet", "--hubs", "3", "--out", str(out), "--extra", "4"]) == 2
    assert "cannot have 4 extra" in capsys.readouterr().err
    assert not out.exists()
