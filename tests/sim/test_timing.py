"""The physical bound of a flash and the `jigsim bound` command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jigd.model import DeviceModel
from sim.cli import main as jigsim
from sim.serve import TimingFileError, load_timing_table
from sim.timing import USB_FULL_SPEED, Timing, UsbLink, flash_time_s, physical_bound


def test_bound_is_max_of_wire_and_flash_plus_fixed() -> None:
    timing = Timing(baud=115_200, swap_s=1.0, boot_s=0.5, reset_s=0.1)
    bound = physical_bound(10 * 1024, timing, "raw")
    assert bound.wire_s == pytest.approx(10 * 1024 * 10 / 115_200)
    assert bound.flash_s == pytest.approx(3 * 0.010 + 40 * 0.0005)
    # The reset takes effect 0.25 s after it is answered (Zephyr's CONFIG_MCUMGR_GRP_OS_RESET_MS).
    assert bound.fixed_s == pytest.approx(0.25 + 1.6)
    assert bound.total_s == pytest.approx(bound.wire_s + 1.85)
    prompt = physical_bound(10 * 1024, timing.model_copy(update={"reset_delay_s": 0.0}))
    assert prompt.fixed_s == pytest.approx(1.6)
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


def test_usb_bound_is_the_full_speed_bus_and_the_flash_bounds_it() -> None:
    assert USB_FULL_SPEED.bytes_per_s == 1_216_000  # 19 packets of 64 bytes per 1 ms frame
    assert USB_FULL_SPEED.transfer_s(2048) == pytest.approx(33 / 19_000)  # 32 packets and a ZLP
    assert USB_FULL_SPEED.transfer_s(100) == pytest.approx(2 / 19_000)
    assert UsbLink(max_packet=512, packets_per_frame=13, frame_s=0.000125).bytes_per_s == (
        53_248_000  # high speed: 13 packets of 512 bytes per 125 us microframe
    )
    size = 64 * 1024
    bound = physical_bound(size, Timing(), transport="usb")
    assert (bound.transport, bound.framing, bound.baud) == ("usb", "usb", None)
    assert bound.wire_s == pytest.approx(size / 1_216_000)
    assert bound.total_s == pytest.approx(bound.flash_s + bound.fixed_s)  # 13x the wire: flash
    # Requests fill buf_size (2048): each is 32 full packets and a ZLP.
    requests = -(-size // (2048 - 24))
    assert bound.framed_wire_s == pytest.approx(requests * 33 / 19_000, rel=0.05)
    serial = physical_bound(size, Timing(), "raw")
    assert serial.wire_s > 10 * bound.wire_s
    with pytest.raises(ValueError, match="unknown transport"):
        physical_bound(size, Timing(), transport="can")


def test_bound_command_prints_the_bound(capsys: pytest.CaptureFixture[str]) -> None:
    assert jigsim(["bound", "--image-size", "262144", "--baud", "115200", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["wire_s"] == pytest.approx(262144 * 10 / 115_200)
    assert printed["total_s"] == pytest.approx(printed["wire_s"] + printed["fixed_s"])
    assert jigsim(["bound", "--image-size", "1024", "--swap-s", "2"]) == 0
    assert "fixed_s 2.850  (reset delay + reset + swap + boot)" in capsys.readouterr().out
    assert jigsim(["bound", "--image-size", "1024", "--swap-s", "2", "--reset-delay-s", "0"]) == 0
    assert "fixed_s 2.600" in capsys.readouterr().out
    assert jigsim(["bound", "--image-size", "262144", "--transport", "usb", "--json"]) == 0
    usb = json.loads(capsys.readouterr().out)
    assert (usb["transport"], usb["baud"], usb["bytes_per_s"]) == ("usb", None, 1_216_000)
    assert usb["wire_s"] == pytest.approx(262144 / 1_216_000)
    assert jigsim(["bound", "--image-size", "262144", "--transport", "usb"]) == 0
    assert "on full-speed USB (1,216,000 bytes/s in 64-byte packets)" in capsys.readouterr().out


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
