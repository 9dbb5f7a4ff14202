"""`jigd demo`'s options: bad input is refused with exit 2 before anything is prepared."""

from __future__ import annotations

from pathlib import Path

import pytest

from jigd.cli import main


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://127.0.0.1:1883", "scheme must be mqtt:// or mqtts://"),
        ("mqtt://jigd:hunter2-secret@127.0.0.1", "carries a password"),
    ],
)
def test_demo_refuses_a_bad_mqtt_url_with_exit_2(
    url: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["demo", "--workdir", str(tmp_path / "demo"), "--mqtt", url])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert "hunter2-secret" not in err
    assert not (tmp_path / "demo").exists()  # refused before anything was prepared


@pytest.mark.parametrize("port", ["0", "70000"])
@pytest.mark.parametrize("option", ["--metrics-port", "--web-port"])
def test_demo_refuses_a_port_out_of_range(
    option: str, port: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["demo", "--workdir", str(tmp_path / "demo"), option, port])
    assert code == 2
    assert f"{option} {port} is not a TCP port" in capsys.readouterr().err
    assert not (tmp_path / "demo").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--transport", "usb"], "Zephyr hubs are on serial slots"),
        (["--framing", "raw"], "Zephyr hubs speak console framing"),
        (["--faults", "light"], "no faults are injected"),
        (["--image-size", str(512 * 1024)], "--image-size must be 1024 to"),
    ],
)
def test_demo_refuses_options_that_zephyr_hubs_cannot_have(
    extra: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exe = tmp_path / "jig_hub.exe"
    exe.write_bytes(b"")  # only its existence is checked before anything is prepared
    code = main(["demo", "--workdir", str(tmp_path / "demo"), "--hub-exe", str(exe), *extra])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "demo").exists()


def test_demo_refuses_a_missing_hub_exe(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nowhere" / "jig_hub.exe"
    code = main(["demo", "--workdir", str(tmp_path / "demo"), "--hub-exe", str(missing)])
    assert code == 2
    assert f"--hub-exe {missing}: no such executable" in capsys.readouterr().err
