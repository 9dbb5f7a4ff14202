"""One simulated hub on a real pseudo-terminal, for tests and benchmarks.

    async with running_hub(tmp_path, timing=Timing(baud=115200)) as handle:
        with serial.Serial(handle.path) as port: ...
        handle.hub.power_off(); handle.hub.power_on()
        image = handle.make_image(FirmwareVersion.parse("04000007"), 64 * 1024)
        assert handle.hub.truth()["active_version"] == "01000000"

Keys and images are derived from `seed` (`sim.images`), so a test can rebuild them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import imgtool.keys
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel, ConfigDict, Field

from jigd.model import (
    DeviceModel,
    DeviceModelField,
    FirmwareVersion,
    FirmwareVersionField,
    Guid,
    GuidField,
)
from sim.faults import Faults
from sim.hub import HubState, SimHub
from sim.image_check import ImageKey
from sim.images import ManufacturerKeys, make_manufacturer_keys, make_signed_image
from sim.pty_port import PtyPort
from sim.timing import Timing

__all__ = [
    "DEFAULT_FIRMWARE_VERSION",
    "DEFAULT_IMAGE_SIZE",
    "DEFAULT_MODEL",
    "HubHandle",
    "HubSpec",
    "image_key_of",
    "running_hub",
]

_LOGGER = logging.getLogger(__name__)

DEFAULT_MODEL: Final = DeviceModel(0x1086, 0x57310102)
DEFAULT_FIRMWARE_VERSION: Final = FirmwareVersion(0x01000000)
DEFAULT_IMAGE_SIZE: Final = 8 * 1024
DEFAULT_GUID_BASE: Final = 0x00DB_0000_0000_0000
BOOT_WAIT_MARGIN_S: Final = 5.0  # on top of the timing's own boot time
STOP_TIMEOUT_S: Final = 5.0


class HubSpec(BaseModel):
    """What one simulated hub is: identity, initial firmware, lock state."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    guid: GuidField = Guid(DEFAULT_GUID_BASE | 1)
    model: DeviceModelField = DEFAULT_MODEL
    firmware_version: FirmwareVersionField = DEFAULT_FIRMWARE_VERSION
    image_size: int = Field(default=DEFAULT_IMAGE_SIZE, ge=1024)
    locked: bool = True


def image_key_of(keys: ManufacturerKeys) -> ImageKey:
    """The public image-verification key a manufacturer's hubs hold."""
    return imgtool.keys.Ed25519Public(keys.signing_key.public_key())


@dataclass
class HubHandle:
    """A running simulated hub and what a test needs to talk to it."""

    path: str
    hub: SimHub
    spec: HubSpec
    keys: ManufacturerKeys
    timing: Timing
    seed: int
    port: PtyPort

    @property
    def master_key(self) -> bytes:
        """The manufacturer's unlock master key (a secret: never log it)."""
        return self.keys.master_key

    @property
    def signing_key(self) -> Ed25519PrivateKey:
        return self.keys.signing_key

    def make_image(self, version: FirmwareVersion, size: int = DEFAULT_IMAGE_SIZE) -> bytes:
        """An image for this hub's model at `version`, signed with its manufacturer's key."""
        return make_signed_image(self.keys, self.spec.model, version, size, self.seed)


@asynccontextmanager
async def running_hub(
    directory: Path,
    *,
    spec: HubSpec | None = None,
    timing: Timing | None = None,
    framing: str = "raw",
    faults: Faults | None = None,
    seed: int = 0,
) -> AsyncIterator[HubHandle]:
    """Serve one hub on a pty at `<directory>/hub-<GUID>`, powered on and booted.

    The hub runs `spec`'s firmware (default: GUID 00-DB-00-00-00-00-00-01 plus `seed`, model
    1086/57310102, version 01000000, 8 KiB, locked) from an image signed with the keys of
    `seed`. `framing` is "raw" or "console". Every task started here is cancelled and awaited
    on exit.
    """
    spec = spec or HubSpec(guid=Guid(DEFAULT_GUID_BASE | ((seed + 1) & 0xFFFF_FFFF)))
    timing = timing or Timing()
    keys = make_manufacturer_keys(spec.model.manufacturer, seed)
    image = make_signed_image(keys, spec.model, spec.firmware_version, spec.image_size, seed)
    hub = SimHub(
        guid=spec.guid,
        model=spec.model,
        image=image,
        master_key=keys.master_key,
        image_key=image_key_of(keys),
        timing=timing,
        framing=framing,
        faults=faults,
        locked=spec.locked,
    )
    port = PtyPort(directory / f"hub-{spec.guid.value:016X}")
    port.open()
    task = asyncio.get_running_loop().create_task(hub.serve(port), name=f"{hub.name} serve")
    try:
        hub.power_on()
        await hub.wait_for_state(
            HubState.RUNNING, timeout_s=timing.boot_s + timing.swap_s + BOOT_WAIT_MARGIN_S
        )
        yield HubHandle(
            path=port.path, hub=hub, spec=spec, keys=keys, timing=timing, seed=seed, port=port
        )
    finally:
        task.cancel()
        done, _pending = await asyncio.wait([task], timeout=STOP_TIMEOUT_S)
        port.close()
        if task in done and not task.cancelled() and task.exception() is not None:
            raise RuntimeError(f"{hub.name} failed") from task.exception()
