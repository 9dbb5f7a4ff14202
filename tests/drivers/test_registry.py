"""Driver registry: the `smp` driver is found through the `jigd.drivers` entry points, unknown
and broken drivers fail with messages that say what exists and what to fix."""

from __future__ import annotations

from importlib.metadata import EntryPoint

import pytest

from drivers import registry
from drivers.errors import DriverLoadFailed, UnknownDriver, UnsupportedTransport
from drivers.registry import SlotSpec
from drivers.smp_driver import open_smp_link
from jigd.config import SlotConfig


def test_smp_driver_is_registered() -> None:
    assert "smp" in registry.available_drivers()
    assert registry.load_driver("smp") is open_smp_link


def test_unknown_driver_names_itself_and_the_available_ones() -> None:
    with pytest.raises(UnknownDriver) as caught:
        registry.load_driver("acme")
    assert caught.value.name == "acme"
    assert "smp" in caught.value.available
    text = str(caught.value)
    assert "'acme'" in text
    assert "smp" in text
    assert "jigd.drivers" in text


@pytest.mark.parametrize("target", ["drivers.no_such_module:factory", "drivers.errors:nothing"])
def test_broken_entry_point_is_a_load_failure(monkeypatch: pytest.MonkeyPatch, target: str) -> None:
    broken = EntryPoint(name="broken", value=target, group=registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry, "_entry_points", lambda: {"broken": broken})
    with pytest.raises(DriverLoadFailed, match="broken"):
        registry.load_driver("broken")


def test_entry_point_that_is_not_callable(monkeypatch: pytest.MonkeyPatch) -> None:
    odd = EntryPoint(name="odd", value="drivers.registry:ENTRY_POINT_GROUP", group="x")
    monkeypatch.setattr(registry, "_entry_points", lambda: {"odd": odd})
    with pytest.raises(DriverLoadFailed, match="not callable"):
        registry.load_driver("odd")


async def test_smp_driver_refuses_what_it_cannot_speak() -> None:
    with pytest.raises(UnsupportedTransport, match=r"rig1/slot1.*'can'.*serial or usb"):
        await open_smp_link(SlotSpec("/dev/null", transport="can"), name="rig1/slot1")
    with pytest.raises(UnsupportedTransport, match="framing"):
        await open_smp_link(SlotSpec("/dev/null", framing="hdlc"))
    with pytest.raises(UnsupportedTransport, match="usb_vendor_id and usb_product_id"):
        await open_smp_link(SlotSpec("1-1.1", transport="usb", usb_vendor_id=0x2FE3))


def test_slot_config_satisfies_the_driver_params() -> None:
    config = SlotConfig(slot=2, port="/dev/ttyUSB1", framing="console")
    params: registry.SlotParams = config
    assert (params.slot, params.port, params.framing, params.baudrate) == (
        2,
        "/dev/ttyUSB1",
        "console",
        115200,
    )
    usb = SlotConfig(
        slot=3,
        transport="usb",
        port="1-2.3",
        usb_vendor_id=0x2FE3,
        usb_product_id=0x0100,
        usb_backend="sim+unix:///run/jigsim/usb.sock",
    )
    params = usb
    assert (params.transport, params.usb_vendor_id, params.usb_product_id) == (
        "usb",
        0x2FE3,
        0x0100,
    )
    assert params.usb_backend == "sim+unix:///run/jigsim/usb.sock"
