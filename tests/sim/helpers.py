"""Shared pieces of the simulator tests: fast timings and small protocol steps."""

from __future__ import annotations

import asyncio
import hashlib
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Final

from smp import image_management as smpimg
from smp import os_management as smpos

from drivers import jig_group
from sim.harness import HubHandle
from sim.image_check import inspect_image
from sim.timing import Timing
from tests.sim.wire import REPLY_TIMEOUT_S, Wire, body

# Fast enough that a test never waits long, slow enough that ordering still shows.
FAST: Final = Timing(
    baud=921_600,
    sector_erase_s=0.001,
    page_program_s=0.0001,
    swap_s=0.05,
    boot_s=0.02,
    reset_s=0.01,
    reset_delay_s=0.02,
)
MGMT_EUNKNOWN: Final = 1
MGMT_EACCESSDENIED: Final = 11
MGMT_EINVAL: Final = 3
MGMT_EBADSTATE: Final = 6
MGMT_ENOTSUP: Final = 8


def image_hash(image: bytes) -> bytes:
    """The image's MCUboot hash (its SHA256 TLV): what image state shows and state write takes."""
    digest = inspect_image(image).tlv_hash
    assert digest is not None
    return digest


async def unlock(wire: Wire, handle: HubHandle) -> dict[str, Any]:
    challenge = body(await wire.request(jig_group.UnlockChallengeRequest()))
    mac = jig_group.unlock_mac(
        jig_group.device_key(handle.master_key, handle.spec.guid.to_bytes()),
        challenge["nonce"],
        handle.spec.guid.to_bytes(),
    )
    return body(await wire.request(jig_group.UnlockWriteRequest(mac=mac)))


async def upload(
    wire: Wire,
    image: bytes,
    *,
    chunk: int = 1024,
    start: int = 0,
    stop: int | None = None,
    timeout_s: float = REPLY_TIMEOUT_S,
) -> dict[str, Any]:
    """Stop-and-wait upload from `start` until the hub's offset reaches `stop` (or the end)."""
    stop = len(image) if stop is None else stop
    offset = start
    answer: dict[str, Any] = {}
    while offset < stop:
        first = offset == 0
        request = smpimg.ImageUploadWriteRequest(
            off=offset,
            data=image[offset : min(offset + chunk, stop)],
            len=len(image) if first else None,
            sha=hashlib.sha256(image).digest() if first else None,
            image=0 if first else None,
        )
        answer = body(await wire.request(request, timeout_s))
        if "off" not in answer:
            return answer
        offset = answer["off"]
    return answer


async def state(wire: Wire) -> list[dict[str, Any]]:
    images = body(await wire.request(smpimg.ImageStatesReadRequest()))["images"]
    assert isinstance(images, list)
    return images


async def reset(wire: Wire, handle: HubHandle) -> None:
    """Reset and wait until the application answers again (after the model's reset delay)."""
    from sim.hub import HubState

    assert body(await wire.request(smpos.ResetWriteRequest())) == {}
    await handle.hub.wait_for_state(HubState.BOOTING, timeout_s=2.0)
    await handle.hub.wait_for_state(HubState.RUNNING, HubState.BRICKED, timeout_s=5.0)


@asynccontextmanager
async def jigsim_serve(*args: str) -> AsyncIterator[asyncio.subprocess.Process]:
    """`jigsim serve ARGS` as a separate process, its stdout piped; killed on the way out if
    the test did not stop it."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sim.cli", "serve", *args, stdout=asyncio.subprocess.PIPE
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
