"""The physical bound of a flash and the `jigsim bound` command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jigd.model import DeviceModel
from sim.cli import main as jigsim
from sim.serve import TimingFileError, load_timing_table
from sim.timing import Timing, flash_time_s, physical_bound


def test_bound_is_max_of_wire_and_flash_plus_fixed() -> None:
    timing = Timing(baud=115_200, swap_s=1.0, boot_s=0.5, reset_s=0.1)
    bound = physical_bound(10 * 1024, timing, "raw")
    assert bound.wire_s == pytest.approx(10 * 1024 * 10 / 115_200)
    assert bound.flash_s == pytest.approx(3 * 0.010 + 40 * 0.0005)
    assert bound.fixed_s == pytest.approx(1.6)
    assert bound.total_s == pytest.approx(bound.wire_s + 1.6)
    assert bound.framed_wire_s > bound.wire_s


def test_default_flash_is_faster_than_a_921600_baud_wire() -> None:
    timing = Timing()
    bound = physical_bound(256 * 1024, timing, "raw")
    assert bound.flash_s < bound.wire_s
    assert flash_time_s(4096, timing) < 4096 * 10 / timing.baud


def test_slow_flash_bounds_the_upload() -> None:
    timing = Timing(sector_erase_s=0.2)
    bound = physical_bound(64 * 1024, timing)
    assert bound.total_s == pytest.approx(bound.flash_s + bound.fixed_s)


def test_console_framing_costs_more_wire_than_raw() -> None:
    raw = physical_bound(64 * 1024, Timing(), "raw")
    console = physical_bound(64 * 1024, Timing(), "console")
    assert console.wire_s == raw.wire_s  # the bound counts image bytes only
    assert console.framed_wire_s > 1.3 * raw.framed_wire_s


def test_bound_command_prints_the_bound(capsys: pytest.CaptureFixture[str]) -> None:
    assert jigsim(["bound", "--image-size", "262144", "--baud", "115200", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["wire_s"] == pytest.approx(262144 * 10 / 115_200)
    assert printed["total_s"] == pytest.approx(printed["wire_s"] + printed["fixed_s"])
    assert jigsim(["bound", "--image-size", "1024", "--swap-s", "2"]) == 0
    assert "fixed_s 2.600" in capsys.readouterr().out


def test_timing_table_gives_each_model_its_timing(tmp_path: Path) -> None:
    path = tmp_path / "timing.toml"
    path.write_text(
        '[default]\nbaud = 115200\n\n["10AB/00000001"]\nswap_s = 3.0\n', encoding="utf-8"
    )
    table = load_timing_table(path, Timing(boot_s=0.2))
    assert table.for_model(DeviceModel.parse("1086/57310102")) == Timing(baud=115_200, boot_s=0.2)
    other = table.for_model(DeviceModel.parse("10AB/00000001"))
    assert (other.baud, other.swap_s, other.boot_s) == (115_200, 3.0, 0.2)
    path.write_text('["10AB/00000001"]\nswap_s = -1\n', encoding="utf-8")
    with pytest.raises(TimingFileError, match=r"timing\.toml: \[10AB/00000001\] swap_s"):
        load_timing_table(path, Timing())
