"""`[web]` in the station's config: off unless `listen` is set, loopback unless allowed, a token
file required; the token file's rules (0600 or stricter, not empty, never shown)."""

from __future__ import annotations

from pathlib import Path

import pytest

from jigd.config import ConfigError, StationConfig, load_config
from jigd.secrets import SecretsError, load_token


def test_the_view_is_off_by_default(tmp_path: Path) -> None:
    path = tmp_path / "station.toml"
    path.write_text('station = "s"\n', encoding="utf-8")
    assert load_config(path).web.listen is None


def test_loopback_with_a_token_file(tmp_path: Path) -> None:
    config = load_config_web(tmp_path, 'listen = "127.0.0.1:8080"\ntoken_file = "tok"')
    assert config.web.address == ("127.0.0.1", 8080)
    assert config.web.token_file == tmp_path / "tok"  # relative to the config file
    ipv6 = load_config_web(tmp_path, 'listen = "[::1]:8080"\ntoken_file = "tok"')
    assert ipv6.web.address == ("::1", 8080)


def load_config_web(tmp_path: Path, web: str) -> StationConfig:
    path = tmp_path / "station.toml"
    path.write_text(f'station = "s"\n[web]\n{web}\n', encoding="utf-8")
    return load_config(path)


@pytest.mark.parametrize(
    ("web", "says"),
    [
        (
            'listen = "0.0.0.0:8080"\ntoken_file = "t"',
            "web.listen: 0.0.0.0 is not a loopback address; set web.allow_remote = true",
        ),
        ('listen = "127.0.0.1:8080"', "web.token_file: required when web.listen is set"),
        ('listen = "8080"\ntoken_file = "t"', "web.listen: write host:port"),
        ('listen = "127.0.0.1:99999"\ntoken_file = "t"', "web.listen: write host:port"),
    ],
)
def test_bad_web_settings_are_named(tmp_path: Path, web: str, says: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config_web(tmp_path, web)
    assert says in str(info.value)


def test_a_network_address_only_when_allowed(tmp_path: Path) -> None:
    config = load_config_web(
        tmp_path, 'listen = "0.0.0.0:8080"\ntoken_file = "t"\nallow_remote = true'
    )
    assert config.web.address == ("0.0.0.0", 8080)


def test_the_token_file_must_be_private_and_not_empty(tmp_path: Path) -> None:
    path = tmp_path / "web-token"
    path.write_text("s3cret-token\n")
    path.chmod(0o640)
    with pytest.raises(SecretsError, match=r"readable by group or others .*chmod 600") as info:
        load_token(path)
    assert "s3cret" not in str(info.value)
    path.chmod(0o600)
    token = load_token(path)
    assert token.reveal() == b"s3cret-token"
    assert "s3cret" not in f"{token} {token!r}"
    path.write_text(" \n")
    with pytest.raises(SecretsError, match="empty"):
        load_token(path)
