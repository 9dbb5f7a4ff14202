"""Hub driver registry: drivers are found through the `jigd.drivers` entry-point group.

A driver is an async factory `(slot params) -> HubLink`. jigd ships `smp`
(`drivers.smp_driver:open_smp_link`); another manufacturer's protocol is a package that declares
its own entry point in the same group, e.g. in its pyproject.toml:

    [project.entry-points."jigd.drivers"]
    acme = "acme_jig.driver:open_link"
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Final, Protocol

from drivers.errors import DriverLoadFailed, UnknownDriver
from drivers.hub_link import HubLink, LinkOptions

__all__ = [
    "ENTRY_POINT_GROUP",
    "HubDriver",
    "SlotParams",
    "SlotSpec",
    "available_drivers",
    "load_driver",
]

_LOGGER = logging.getLogger(__name__)

ENTRY_POINT_GROUP: Final = "jigd.drivers"


class SlotParams(Protocol):
    """What a driver needs to know about a slot (`jigd.config.SlotConfig` has these)."""

    @property
    def slot(self) -> int: ...

    @property
    def transport(self) -> str: ...

    @property
    def port(self) -> str: ...

    @property
    def framing(self) -> str: ...

    @property
    def baudrate(self) -> int: ...

    @property
    def usb_vendor_id(self) -> int | None:
        """USB slots: the hub's idVendor."""
        ...

    @property
    def usb_product_id(self) -> int | None:
        """USB slots: the hub's idProduct."""
        ...

    @property
    def usb_backend(self) -> str | None:
        """USB slots: the pyusb backend (None: libusb; `sim+unix:///path`: the simulator)."""
        ...


@dataclass(frozen=True, slots=True)
class SlotSpec:
    """Slot parameters without a station config: for tools, benchmarks and tests that open one
    hub (`jigd.config.SlotConfig` is what the daemon passes)."""

    port: str
    framing: str = "raw"
    baudrate: int = 115200
    slot: int = 1
    transport: str = "serial"
    usb_vendor_id: int | None = None
    usb_product_id: int | None = None
    usb_backend: str | None = None


class HubDriver(Protocol):
    """Opens a link to the hub in a slot. `name` labels messages and logs, e.g. `rig1/slot3`."""

    async def __call__(
        self, params: SlotParams, /, *, name: str | None = None, options: LinkOptions | None = None
    ) -> HubLink: ...


def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available_drivers() -> list[str]:
    """Names of every installed driver, sorted."""
    return sorted(_entry_points())


def load_driver(name: str) -> HubDriver:
    """The driver called `name`; UnknownDriver (listing the available ones) if there is none."""
    found = _entry_points()
    entry = found.get(name)
    if entry is None:
        raise UnknownDriver(name, sorted(found))
    try:
        factory = entry.load()
    except (ImportError, AttributeError) as exc:
        raise DriverLoadFailed(name, entry.value, str(exc)) from exc
    if not callable(factory):
        raise DriverLoadFailed(name, entry.value, f"{type(factory).__name__} is not callable")
    _LOGGER.debug("hub driver %r is %s", name, entry.value)
    driver: HubDriver = factory
    return driver
