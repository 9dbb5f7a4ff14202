"""Configuration loads from TOML and every mistake is reported with its key path and file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from jigd.cli import main as jigd_main
from jigd.config import ConfigError, check_paths, format_loc, load_config

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


def example_in(root: Path) -> Path:
    """The example config with its /etc/jigd and /var/lib/jigd under `root`."""
    text = EXAMPLE.read_text(encoding="utf-8")
    text = text.replace('"/etc/jigd/', f'"{root}/etc/').replace('"/var/lib/jigd/', f'"{root}/')
    path = root / "jigd.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_example_config_check_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "catalog").mkdir()
    for name in ("master-keys.toml", "mqtt-password", "mqtt-ca.pem", "web-token"):
        (tmp_path / "etc" / name).write_text("", encoding="utf-8")
    assert jigd_main(["config", "check", str(example_in(tmp_path))]) == 0
    assert "OK" in capsys.readouterr().out


def test_config_check_names_each_file_and_directory_that_is_not_there(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = example_in(tmp_path)
    (tmp_path / "catalog").write_text("", encoding="utf-8")  # a file where a directory goes
    assert jigd_main(["config", "check", str(path)]) == 2  # was exit 0: "OK"
    lines = capsys.readouterr().err.splitlines()
    assert lines[1:] == [
        f"  secrets.master_keys_file: {tmp_path}/etc/master-keys.toml: does not exist; create "
        "it or correct the path",
        f"  mqtt.password_file: {tmp_path}/etc/mqtt-password: does not exist; create it or "
        "correct the path",
        f"  mqtt.ca_file: {tmp_path}/etc/mqtt-ca.pem: does not exist; create it or correct the "
        "path",
        f"  web.token_file: {tmp_path}/etc/web-token: does not exist; create it or correct the "
        "path",
        f"  catalog_dir: {tmp_path}/catalog: Not a directory",
    ]


def test_jigd_run_checks_the_files_before_it_creates_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "jigd.toml"
    store = tmp_path / "state" / "jigd.sqlite3"
    path.write_text(
        f'station = "s1"\nstore_path = "{store}"\ncatalog_dir = "{tmp_path}/catalog"\n'
        f'control_socket = "{tmp_path}/run/control.sock"\n'
        f'[secrets]\nmaster_keys_file = "{tmp_path}/keys.toml"\n',
        encoding="utf-8",
    )
    assert jigd_main(["run", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"error: {path}: secrets.master_keys_file: {tmp_path}/keys.toml: does not exist" in err
    assert f"error: {path}: catalog_dir: {tmp_path}/catalog: does not exist" in err
    assert not (tmp_path / "state").exists()  # was created before the daemon failed
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_a_master_key_file_jigd_may_not_read_is_named(tmp_path: Path) -> None:
    keys = tmp_path / "keys.toml"
    keys.write_text("", encoding="utf-8")
    keys.chmod(0)
    (tmp_path / "catalog").mkdir()
    path = tmp_path / "jigd.toml"
    path.write_text(
        'station = "s1"\ncatalog_dir = "catalog"\n[secrets]\nmaster_keys_file = "keys.toml"\n',
        encoding="utf-8",
    )
    assert check_paths(load_config(path)) == [
        f"secrets.master_keys_file: {keys}: Permission denied"
    ]


@pytest.mark.parametrize(
    ("toml", "problem"),
    [
        (
            "[timeouts]\nboot_sec = 3.0\n",
            'unknown key "timeouts.boot_sec" in [timeouts]; did you mean "boot_s"?',
        ),
        ('stations = "x"\n', 'unknown key "stations" at the top level; did you mean "station"?'),
        (
            '[[rigs]]\nrig = 1\ncontroller = "/dev/c"\n'
            'slots = [{ slot = 1, port = "/dev/s1", baud = 9600 }]\n',
            'unknown key "rigs[0].slots[0].baud" in [[rigs.slots]]; did you mean "baudrate"?',
        ),
        (
            "[mqtt]\nzzz = 1\n",
            'unknown key "mqtt.zzz" in [mqtt]; the keys are enabled, host, port, prefix, '
            "client_id, username, password_file, tls, ca_file, client_cert_file, "
            "client_key_file, keepalive_s, reconnect_max_s",
        ),
    ],
    ids=["section", "top-level", "array-of-tables", "no-close-match"],
)
def test_an_unknown_key_suggests_the_key_meant(tmp_path: Path, toml: str, problem: str) -> None:
    path = tmp_path / "jigd.toml"
    text = toml if toml.startswith("stations") else 'station = "s1"\n' + toml
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert problem in caught.value.problems  # was "Extra inputs are not permitted"


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
    assert info.value.problems == [
        'unknown key "timeouts.boot_seconds" in [timeouts]; did you mean "boot_s"?'
    ]


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
    path = _config(tmp_path, '[store]\nurl = "mysql://db/jigd"\n')
    with pytest.raises(
        ConfigError, match=r"store\.url: .*mysql://db/jigd.*known: postgresql:, sqlite:"
    ):
        load_config(path)
    assert jigd_main(["config", "check", str(path)]) == 2
    assert "mysql://db/jigd" in capsys.readouterr().err


def test_a_postgresql_url_without_a_database_is_a_config_error_hiding_its_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _config(tmp_path, '[store]\nurl = "postgresql://jigd:s3cret@db.site"\n')
    with pytest.raises(ConfigError, match=r"store\.url: .*names no database") as raised:
        load_config(path)
    assert "s3cret" not in str(raised.value)
    assert jigd_main(["config", "check", str(path)]) == 2
    err = capsys.readouterr().err
    assert "postgresql://jigd:***@db.site" in err
    assert "s3cret" not in err


# --- every value range-checked; nothing ends in a traceback (issue 13) ------------------------

RIG = '[[rigs]]\nrig = 1\ncontroller = "/dev/jigd/rig1/ctl"\n'
DEEP = 3000  # arrays nested deeper than the TOML parser's recursion goes
DIGITS = 5000  # more digits than Python's int() takes from text (4300)
LONG_SOCKET = "/run/" + "s" * 100 + "/control.sock"


@pytest.mark.parametrize(
    ("text", "key", "message"),
    [
        pytest.param(
            "pilot_models = " + "[" * DEEP + "]" * DEEP, "not valid TOML", "nested too deeply",
            id="deeply-nested-array",
        ),
        pytest.param(
            "metrics_port = " + "9" * DIGITS, "not valid TOML", "line 2 has more than 4300 digits",
            id="5000-digit-integer",
        ),
        pytest.param("metrics_port = true", "metrics_port:", "valid integer", id="port-true"),
        pytest.param("metrics_port = 0", "metrics_port:", "greater than or equal to 1", id="0"),
        pytest.param("metrics_port = 65536", "metrics_port:", "less than or equal to 65535"),
        pytest.param("[mqtt]\nport = false", "mqtt.port:", "valid integer", id="mqtt-port-false"),
        pytest.param("[timeouts]\nshutdown_s = inf", "timeouts.shutdown_s:", "finite", id="inf"),
        pytest.param("[timeouts]\nupload_s = 1e400", "timeouts.upload_s:", "finite", id="1e400"),
        pytest.param("[timeouts]\nrequest_s = nan", "timeouts.request_s:", "finite", id="nan"),
        pytest.param("[timeouts]\nboot_s = true", "timeouts.boot_s:", "valid number", id="s-true"),
        pytest.param(
            "[mqtt]\nkeepalive_s = 1e6", "mqtt.keepalive_s:", "less than or equal to 65535",
            id="keepalive-over-16-bit",
        ),
        pytest.param(
            f'control_socket = "{LONG_SOCKET}"', "control_socket:", "at most 107 bytes",
            id="socket-path-too-long",
        ),
        pytest.param(
            RIG + 'slots = [{ slot = true, port = "/dev/jigd/rig1/slot1" }]',
            "rigs[0].slots[0].slot:", "valid integer", id="slot-true",
        ),
        pytest.param(
            RIG + 'slots = [{ slot = 1, port = "/dev/jigd/rig1/slot1" },'
            ' { slot = 2, port = "/dev/jigd/rig1/../rig1/slot1" }]',
            "rigs[0].slots[1].port:",
            "used by both rig 1 slot 1 and rig 1 slot 2 (both are /dev/jigd/rig1/slot1)",
            id="same-port-spelled-twice",
        ),
        pytest.param(
            RIG + 'slots = [{ slot = 1, port = "/dev/jigd/rig1/slot1", driver = "nonexistent" }]',
            "rigs[0].slots[0].driver:", "unknown driver 'nonexistent'; installed: smp",
            id="unknown-driver",
        ),
        pytest.param(
            RIG + 'slots = [{ slot = 1, port = "/dev/a" }]\n'
            + RIG.replace("rig1/ctl", "rig2/ctl") + 'slots = [{ slot = 1, port = "/dev/b" }]',
            "rigs[1].rig:", "rig numbers repeat: [1, 1]", id="rig-number-repeated",
        ),
        pytest.param(
            RIG + 'slots = [{ slot = 2, port = "/dev/a" }, { slot = 2, port = "/dev/b" }]',
            "rigs[0].slots[1].slot:", "slot numbers repeat: [2, 2]", id="slot-number-repeated",
        ),
    ],
)  # fmt: skip
def test_config_check_names_each_bad_value_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, key: str, message: str
) -> None:
    path = tmp_path / "station.toml"
    path.write_text(f'station = "a"\n{text}\n', encoding="utf-8")
    assert jigd_main(["config", "check", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: 1 problem(s)" in err, err
    problem = next(line.strip() for line in err.splitlines() if line.startswith("  "))
    assert problem.startswith(key), err
    assert message in problem, err


def test_a_symlink_to_another_slots_device_is_the_same_port(tmp_path: Path) -> None:
    """udev's /dev/jigd/... names are symlinks: naming a device by both is caught."""
    device = tmp_path / "ttyUSB1"
    device.touch()
    (tmp_path / "slot1").symlink_to(device)
    path = tmp_path / "station.toml"
    path.write_text(
        f'station = "a"\n{RIG}slots = [{{ slot = 1, port = "{tmp_path}/slot1" }},'
        f' {{ slot = 2, port = "{device}" }}]\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.problems == [
        f"rigs[0].slots[1].port: port '{device}' is used by both rig 1 slot 1 and rig 1 slot 2"
        f" (both are {device})"
    ]
    (tmp_path / "slot1").unlink()
    (tmp_path / "slot1").symlink_to(tmp_path / "ttyUSB0")  # another device: fine
    assert len(load_config(path).rigs[0].slots) == 2


def test_systemd_credentials_are_checked_only_inside_the_service(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "catalog").mkdir()
    path = tmp_path / "jigd.toml"
    keys = "/run/credentials/jigd.service/master-keys.toml"
    path.write_text(
        f'station = "s1"\ncatalog_dir = "catalog"\n[secrets]\nmaster_keys_file = "{keys}"\n',
        encoding="utf-8",
    )
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    assert check_paths(load_config(path)) == []  # `jigd config check` outside the service
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", "/run/credentials/jigd.service")
    assert check_paths(load_config(path)) == [
        f"secrets.master_keys_file: {keys}: does not exist; create it or correct the path"
    ]
