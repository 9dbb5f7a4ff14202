"""Simulator keys and images: deterministic, signed by imgtool, as the tools expect them."""

from __future__ import annotations

import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import imgtool.image
import imgtool.keys
import pytest

from jigd.model import DeviceModel, FirmwareVersion
from sim.cli import main as jigsim_main
from sim.images import HEADER_SIZE, make_manufacturer_keys, make_signed_image

MODEL = DeviceModel.parse("1086/57310102")
VERSION = FirmwareVersion.parse("04000007")


def test_keys_are_deterministic_per_seed_and_manufacturer() -> None:
    a, again = make_manufacturer_keys(0x1086, 1), make_manufacturer_keys(0x1086, 1)
    assert a.private_pem() == again.private_pem()
    assert a.master_key == again.master_key
    assert len(a.master_key) == 32
    others = [make_manufacturer_keys(0x1086, 2), make_manufacturer_keys(0x10AB, 1)]
    for other in others:
        assert other.private_pem() != a.private_pem()
        assert other.master_key != a.master_key
    assert a.public_pem().startswith(b"-----BEGIN PUBLIC KEY-----\n")


def test_signed_image_is_deterministic_and_verifies(tmp_path: Path) -> None:
    keys = make_manufacturer_keys(0x1086, 1)
    image = make_signed_image(keys, MODEL, VERSION, 10_000, seed=3)
    assert image == make_signed_image(keys, MODEL, VERSION, 10_000, seed=3)
    assert image != make_signed_image(keys, MODEL, VERSION, 10_000, seed=4)
    assert len(image) == 10_000
    assert image[:4] == bytes.fromhex("3db8f396")  # MCUboot magic, little-endian
    assert int.from_bytes(image[8:10], "little") == HEADER_SIZE

    path = tmp_path / "image.bin"
    path.write_bytes(image)
    public = tmp_path / "1086.pem"
    public.write_bytes(keys.public_pem())
    result, version, _, _ = imgtool.image.Image.verify(str(path), imgtool.keys.load(str(public)))
    assert result.name == "OK"
    assert FirmwareVersion.from_mcuboot(*version) == VERSION

    other = tmp_path / "10AB.pem"
    other.write_bytes(make_manufacturer_keys(0x10AB, 1).public_pem())
    result, *_ = imgtool.image.Image.verify(str(path), imgtool.keys.load(str(other)))
    assert result.name == "INVALID_SIGNATURE"


def test_unsigned_image_has_no_signature(tmp_path: Path) -> None:
    path = tmp_path / "image.bin"
    path.write_bytes(make_signed_image(None, MODEL, VERSION, 4096, seed=0))
    assert path.stat().st_size == 4096
    key = imgtool.keys.Ed25519Public(make_manufacturer_keys(0x1086, 1).signing_key.public_key())
    result, *_ = imgtool.image.Image.verify(str(path), key)
    assert result.name == "INVALID_SIGNATURE"


def test_too_small_image_is_refused() -> None:
    with pytest.raises(ValueError, match="too small"):
        make_signed_image(make_manufacturer_keys(0x1086, 1), MODEL, VERSION, 600, seed=0)


def test_jigsim_keys_writes_key_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "keys"
    assert (
        jigsim_main(["keys", "--out", str(out), "--manufacturers", "1086,10ab", "--seed", "5"]) == 0
    )
    assert sorted(p.name for p in out.iterdir()) == [
        "1086.pem",
        "1086.signing.pem",
        "10AB.pem",
        "10AB.signing.pem",
        "master-keys.toml",
    ]
    assert len(capsys.readouterr().out.splitlines()) == 5
    for secret in ("1086.signing.pem", "10AB.signing.pem", "master-keys.toml"):
        assert stat.S_IMODE((out / secret).stat().st_mode) == 0o600
    masters = tomllib.loads((out / "master-keys.toml").read_text(encoding="ascii"))
    assert masters == {
        "1086": make_manufacturer_keys(0x1086, 5).master_key.hex(),
        "10AB": make_manufacturer_keys(0x10AB, 5).master_key.hex(),
    }
    # The public key is exactly what imgtool prints for the signing key.
    signing_key = str(out / "1086.signing.pem")
    getpub = subprocess.run(
        [sys.executable, "-m", "imgtool.main", "getpub", "-k", signing_key, "-e", "pem"],
        capture_output=True,
        check=True,
    )
    assert getpub.stdout == (out / "1086.pem").read_bytes()


def test_jigsim_needs_a_command_and_good_manufacturers(tmp_path: Path) -> None:
    for args in ([], ["keys", "--out", str(tmp_path), "--manufacturers", "1086,XYZ"]):
        with pytest.raises(SystemExit) as caught:
            jigsim_main(args)
        assert caught.value.code == 2
