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
def test_demo_refuses_a_metrics_port_out_of_range(
    port: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["demo", "--workdir", str(tmp_path / "demo"), "--metrics-port", port])
    assert code == 2
    assert f"--metrics-port {port} is not a TCP port" in capsys.readouterr().err
    assert not (tmp_path / "demo").exists()
