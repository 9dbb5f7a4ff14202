"""Where the Zephyr reference peers are, and the rule for tests that need them.

The peers (Zephyr's own MCUmgr SMP server built as native_sim executables) live outside the
repository, in `../shared/peers/zephyr/` beside the checkout, or where `$JIGD_ZEPHYR_PEERS`
points. They are never copied into the repository. A test that needs one is skipped with the
reason when they are missing, except under CI (`CI=true`), where a missing peer fails the test:
CI must judge interoperability, not skip it.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Final

import pytest

from jigd.model import DeviceModel, Guid
from sim.exe_hub import ExeHub, prepare_flash
from sim.harness import image_key_of
from sim.hub import HubState
from sim.images import ManufacturerKeys
from sim.native_sim import PEERS_ENV, flash_copy, zephyr_peers_dir
from sim.pty_port import PtyPort

__all__ = [
    "EXE_START_TIMEOUT_S",
    "PEERS_ENV",
    "peer_flash_copy",
    "served_exe_hub",
    "zephyr_peer",
    "zephyr_peers_dir",
]

EXE_START_TIMEOUT_S: Final = 10.0  # boot step and process start, after power on or reset


def zephyr_peer(name: str) -> Path:
    """Path of one peer file (`jig_hub.exe`, `flash_init.bin`, ...); skip or fail if missing."""
    path = zephyr_peers_dir() / name
    if path.is_file():
        return path
    reason = (
        f"Zephyr peer {path} is missing: put Zephyr's native_sim SMP peers in "
        f"{zephyr_peers_dir()} or set ${PEERS_ENV}"
    )
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def peer_flash_copy(directory: Path, name: str = "hub.bin") -> Path:
    """A writable copy of the peers' `flash_init.bin` (the executables write it in place)."""
    return flash_copy(zephyr_peer("flash_init.bin"), directory / name)


@asynccontextmanager
async def served_exe_hub(
    directory: Path,
    *,
    exe: str,
    guid: Guid,
    model: DeviceModel,
    keys: ManufacturerKeys,
    image: bytes,
) -> AsyncIterator[ExeHub]:
    """A Zephyr peer `exe` as a slot's hub (`sim.exe_hub`): its flash file holds `image`
    confirmed in slot 0, it is served on a stable pty at `directory/slot`, powered on and
    running. Cancelling it on the way out stops the process."""
    flash = directory / "hub.bin"
    await asyncio.to_thread(prepare_flash, flash, zephyr_peer("flash_init.bin"), image)
    hub = ExeHub(
        guid=guid,
        model=model,
        exe=zephyr_peer(exe),
        flash=flash,
        master_key=keys.master_key,
        image_key=image_key_of(keys),
    )
    port = PtyPort(directory / "slot")
    port.open()
    serving = asyncio.create_task(hub.serve(port), name="exe hub")
    try:
        hub.power_on()
        await hub.wait_for_state(HubState.RUNNING, timeout_s=EXE_START_TIMEOUT_S)
        yield hub
    finally:
        serving.cancel()
        await asyncio.wait([serving])
        port.close()
