"""Configuration loads from TOML and every mistake is reported with its key path and file."""

from __future__ import annotations

from pathlib import Path

import pytest

from jigd.cli import main as jigd_main
from jigd.config import ConfigError, format_loc, load_config

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "docs" / "jigd.example.toml"

THREE_MISTAKES = """
station = "bench a"          # mistake 1: space not allowed in a station name

[[rigs]]
rig = 1
controller = "/dev/jigd/rig1/ctl"
slots = [
    { slot = 1, port = "/dev/jigd/rig1/slot1" },
    { slot = 9, port = "/dev/jigd/rig1/slot2" },      # mistake 2: slot 9 on an 8-slot rig
]

[[rigs]]
rig = 2
controller = "/dev/jigd/rig2/ctl"
slots = [
    { slot = 1, port = "/dev/jigd/rig2/slot1" },
    { slot = 2, port = "/dev/jigd/rig2/slot2", framing = "hdlc" },  # mistake 3
]
"""


def test_example_config_is_valid() -> None:
    config = load_config(EXAMPLE)
    assert config.station == "bench-a"
    assert [len(r.slots) for r in config.rigs] == [4, 3]
    assert config.rigs[1].slots[0].transport == "usb"
    assert config.store_url == "sqlite:///var/lib/jigd/jigd.sqlite3"


def test_example_config_check_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert jigd_main(["config", "check", str(EXAMPLE)]) == 0
    assert "OK" in capsys.readouterr().out


def test_three_mistakes_are_all_reported_with_key_paths(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "station.toml"
    path.write_text(THREE_MISTAKES, encoding="utf-8")
    assert jigd_main(["config", "check", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err
    assert "station:" in err
    assert "rigs[0].slots[1].slot:" in err
    assert "rigs[1].slots[1].framing:" in err
    assert "3 problem(s)" in err


def test_unknown_key_is_named(tmp_path: Path) -> None:
    path = tmp_path / "station.toml"
    path.write_text('station = "a"\n[timeouts]\nboot_seconds = 3\n', encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems == ["timeouts.boot_seconds: Extra inputs are not permitted"]


def test_duplicate_ports_are_rejected(tmp_path: Path) -> None:
    path = tmp_path / "station.toml"
    path.write_text(
        'station = "a"\n[[rigs]]\nrig = 1\ncontroller = "/dev/x"\n'
        'slots = [{ slot = 1, port = "/dev/x" }]\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match="used by both rig 1 controller and rig 1 slot 1"):
        load_config(path)


def test_usb_slot_needs_ids(tmp_path: Path) -> None:
    path = tmp_path / "station.toml"
    path.write_text(
        'station = "a"\n[[rigs]]\nrig = 1\ncontroller = "/dev/x"\n'
        'slots = [{ slot = 1, transport = "usb", port = "1-1.1" }]\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match=r"rigs\[0\]\.slots\[0\]: .*usb_vendor_id"):
        load_config(path)


def test_usb_backend_is_a_url_and_only_for_usb_slots(tmp_path: Path) -> None:
    path = tmp_path / "station.toml"
    head = 'station = "a"\n[[rigs]]\nrig = 1\ncontroller = "/dev/x"\nslots = [\n'
    usb = 'transport = "usb", port = "1-1.1", usb_vendor_id = 0x2fe3, usb_product_id = 0x0100'
    path.write_text(
        head + f'{{ slot = 1, {usb}, usb_backend = "sim+unix:///run/jigsim/usb.sock" }},\n'
        f"{{ slot = 2, {usb.replace('1-1.1', '1-1.2')} }},\n]\n",
        encoding="utf-8",
    )
    slots = load_config(path).rigs[0].slots
    assert slots[0].usb_backend == "sim+unix:///run/jigsim/usb.sock"
    assert slots[1].usb_backend is None  # libusb
    path.write_text(
        head + f'{{ slot = 1, {usb}, usb_backend = "/run/jigsim/usb.sock" }},\n'
        '{ slot = 2, port = "/dev/ttyUSB0", usb_backend = "sim+unix:///x" },\n]\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    problems = caught.value.problems
    assert any(p.startswith("rigs[0].slots[0].usb_backend: String should match") for p in problems)
    assert any(p.startswith("rigs[0].slots[1]: ") and "only for a usb slot" in p for p in problems)


def test_bad_toml_and_missing_file_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("station = \n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"(?s)broken.toml.*not valid TOML"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"(?s)missing.toml.*cannot read"):
        load_config(tmp_path / "missing.toml")


def test_relative_paths_resolve_against_the_file(tmp_path: Path) -> None:
    path = tmp_path / "station.toml"
    path.write_text('station = "a"\nstore_path = "state/jigd.sqlite3"\n', encoding="utf-8")
    assert load_config(path).store_path == tmp_path / "state" / "jigd.sqlite3"


def test_every_relative_path_resolves_against_the_file(tmp_path: Path) -> None:
    """MQTT's secret and TLS files too: under systemd the working directory is `/`."""
    path = tmp_path / "etc" / "station.toml"
    path.parent.mkdir()
    path.write_text(
        'station = "a"\n'
        "[mqtt]\n"
        'password_file = "secrets/mqtt.pass"\n'
        'ca_file = "tls/ca.pem"\n'
        'client_cert_file = "/etc/ssl/station.pem"\n'
        "[secrets]\n"
        'master_keys_file = "secrets/master-keys.toml"\n',
        encoding="utf-8",
    )
    config = load_config(path)
    base = tmp_path / "etc"
    assert config.mqtt.password_file == base / "secrets" / "mqtt.pass"
    assert config.mqtt.ca_file == base / "tls" / "ca.pem"
    assert config.mqtt.client_cert_file == Path("/etc/ssl/station.pem")  # absolute: as given
    assert config.mqtt.client_key_file is None
    assert config.secrets.master_keys_file == base / "secrets" / "master-keys.toml"
    assert config.catalog_dir == Path("/var/lib/jigd/catalog")  # the default is absolute


def test_format_loc() -> None:
    assert format_loc(("rigs", 1, "slots", 3, "port")) == "rigs[1].slots[3].port"
    assert format_loc(()) == "(top level)"


# --- where the store is: store_path or [store] url --------------------------------------------


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "etc" / "station.toml"
    path.parent.mkdir(exist_ok=True)
    path.write_text('station = "a"\n' + text, encoding="utf-8")
    return path


def test_the_default_store_is_todays_file(tmp_path: Path) -> None:
    config = load_config(_config(tmp_path, ""))
    assert config.store_path == Path("/var/lib/jigd/jigd.sqlite3")
    assert config.store_url == "sqlite:///var/lib/jigd/jigd.sqlite3"


def test_store_path_still_names_the_store(tmp_path: Path) -> None:
    config = load_config(_config(tmp_path, 'store_path = "state/jigd.sqlite3"\n'))
    assert config.store_path == tmp_path / "etc" / "state" / "jigd.sqlite3"
    assert config.store_url == f"sqlite://{tmp_path}/etc/state/jigd.sqlite3"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///srv/jigd/books.sqlite3", "sqlite:///srv/jigd/books.sqlite3"),
        ("sqlite:state/books.sqlite3", "sqlite://{base}/state/books.sqlite3"),
    ],
)
def test_store_url_names_the_store_relative_to_the_file(
    tmp_path: Path, url: str, expected: str
) -> None:
    config = load_config(_config(tmp_path, f'[store]\nurl = "{url}"\n'))
    assert config.store_url == expected.format(base=tmp_path / "etc")


def test_store_path_and_store_url_together_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _config(
        tmp_path, 'store_path = "/srv/a.sqlite3"\n[store]\nurl = "sqlite:///srv/b.sqlite3"\n'
    )
    with pytest.raises(ConfigError, match=r"store_path and store\.url both"):
        load_config(path)
    assert jigd_main(["config", "check", str(path)]) == 2
    assert "store_path and store.url" in capsys.readouterr().err


def test_a_store_url_no_backend_takes_is_a_config_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _config(tmp_path, '[store]\nurl = "postgresql://db/jigd"\n')
    with pytest.raises(ConfigError, match=r"store\.url: .*postgresql://db/jigd.*known: sqlite:"):
        load_config(path)
    assert jigd_main(["config", "check", str(path)]) == 2
    assert "postgresql://db/jigd" in capsys.readouterr().err
