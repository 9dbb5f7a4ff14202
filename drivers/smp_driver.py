"""The `smp` hub driver: an SmpHubLink over a serial port (raw or console framing) or over the
bulk endpoints of a USB hub's vendor-specific interface (raw SMP frames, one per transfer)."""

from __future__ import annotations

from drivers import serial, usb
from drivers.errors import UnsupportedTransport
from drivers.hub_link import LinkOptions, SmpHubLink
from drivers.registry import SlotParams
from drivers.smp_client import SmpClient
from drivers.transport import FrameTransport

__all__ = ["open_smp_link"]


async def _open_transport(params: SlotParams, label: str) -> FrameTransport:
    if params.transport == "usb":
        if params.usb_vendor_id is None or params.usb_product_id is None:
            raise UnsupportedTransport(
                label, "a usb slot needs usb_vendor_id and usb_product_id; set both"
            )
        return await usb.open(
            params.port,
            vendor_id=params.usb_vendor_id,
            product_id=params.usb_product_id,
            backend=params.usb_backend,
            name=label,
        )
    if params.transport != "serial":
        raise UnsupportedTransport(
            label,
            f"the smp driver speaks serial ports and USB; transport {params.transport!r} is "
            "not one of them; set the slot's `transport` to serial or usb",
        )
    if params.framing not in ("raw", "console"):
        raise UnsupportedTransport(
            label, f"unknown framing {params.framing!r}; set the slot's `framing` to raw or console"
        )
    return await serial.open(params.port, params.baudrate, params.framing, name=label)


async def open_smp_link(
    params: SlotParams, /, *, name: str | None = None, options: LinkOptions | None = None
) -> SmpHubLink:
    """Open the slot's port and return an SMP hub link on it (registered as driver `smp`)."""
    label = name or params.port
    options = options or LinkOptions()
    transport = await _open_transport(params, label)
    client = SmpClient(transport, timeout_s=options.timeout_s, name=label)
    return SmpHubLink(client, options=options, name=label)
