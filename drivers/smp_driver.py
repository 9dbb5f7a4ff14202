"""The `smp` hub driver: an SmpHubLink over a serial port (raw or console framing)."""

from __future__ import annotations

from drivers import serial
from drivers.errors import UnsupportedTransport
from drivers.hub_link import LinkOptions, SmpHubLink
from drivers.registry import SlotParams
from drivers.smp_client import SmpClient

__all__ = ["open_smp_link"]


async def open_smp_link(
    params: SlotParams, /, *, name: str | None = None, options: LinkOptions | None = None
) -> SmpHubLink:
    """Open the slot's port and return an SMP hub link on it (registered as driver `smp`)."""
    label = name or params.port
    if params.transport != "serial":
        raise UnsupportedTransport(
            label,
            f"the smp driver speaks serial ports; transport {params.transport!r} is not "
            "supported yet; set the slot's `transport` to serial",
        )
    if params.framing not in ("raw", "console"):
        raise UnsupportedTransport(
            label, f"unknown framing {params.framing!r}; set the slot's `framing` to raw or console"
        )
    options = options or LinkOptions()
    transport = await serial.open(params.port, params.baudrate, params.framing, name=label)
    client = SmpClient(transport, timeout_s=options.timeout_s, name=label)
    return SmpHubLink(client, options=options, name=label)
