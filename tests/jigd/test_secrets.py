"""Secrets load from private files and never show themselves."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from jigd.secrets import Secret, SecretsError, load_master_keys, load_password

KEY = "a1" * 32


def _write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return path


def test_master_keys_load_and_hide(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    keys = load_master_keys(_write(tmp_path / "keys.toml", f'"1086" = "{KEY}"\n'))
    secret = keys.for_manufacturer(0x1086)
    assert secret is not None
    assert secret.reveal() == bytes.fromhex(KEY)
    caplog.set_level(logging.DEBUG)
    logging.getLogger("test").info("keys %s %r %s", keys, keys, secret)
    text = caplog.text + str(keys) + repr(keys) + repr(secret) + f"{secret}"
    assert KEY not in text
    assert bytes.fromhex(KEY).hex() not in text
    assert "1086" in repr(keys)
    assert keys.for_manufacturer(0x10AB) is None


def test_group_readable_file_is_refused_naming_the_fix(tmp_path: Path) -> None:
    path = _write(tmp_path / "keys.toml", f'"1086" = "{KEY}"\n', mode=0o644)
    with pytest.raises(SecretsError, match=r"chmod 600") as info:
        load_master_keys(path)
    assert KEY not in str(info.value)


def test_bad_key_file_errors_never_quote_values(tmp_path: Path) -> None:
    path = _write(tmp_path / "keys.toml", f'"1086" = "{KEY[:-2]}"\n"XYZ" = "{KEY}"\n')
    with pytest.raises(SecretsError) as info:
        load_master_keys(path)
    message = str(info.value)
    assert "64 hex characters" in message
    assert "'XYZ'" in message
    assert KEY[:-2] not in message
    broken = _write(tmp_path / "broken.toml", f"1086 = {KEY}zz\n")
    with pytest.raises(SecretsError) as info:
        load_master_keys(broken)
    assert KEY not in str(info.value)
    assert str(broken) in str(info.value)


def test_password_file(tmp_path: Path) -> None:
    secret = load_password(_write(tmp_path / "pw", "s3cret-pass\n"))
    assert secret.reveal() == b"s3cret-pass"
    assert "s3cret" not in repr(secret)
    assert Secret(b"x") == Secret(b"x")
    with pytest.raises(SecretsError, match="empty"):
        load_password(_write(tmp_path / "empty", ""))
    with pytest.raises(SecretsError, match="cannot read"):
        load_password(tmp_path / "missing")
