"""A third-party SMP client (smpclient, console framing over pyserial) flashes a simulated hub."""

from __future__ import annotations

import hashlib
from pathlib import Path

from smpclient import SMPClient
from smpclient.generics import success
from smpclient.requests.image_management import ImageStatesRead, ImageStatesWrite
from smpclient.requests.os_management import EchoWrite, ResetWrite
from smpclient.transport.serial import SMPSerialTransport

from jigd.model import FirmwareVersion
from sim.harness import HubSpec, running_hub
from sim.hub import HubState
from tests.sim.helpers import FAST, image_hash

CLIENT_TIMEOUT_S = 5.0


async def test_smpclient_uploads_tests_and_resets_and_the_hub_boots_it(tmp_path: Path) -> None:
    # smpclient does not know the jig group: the hub starts unlocked.
    async with running_hub(
        tmp_path, timing=FAST, framing="console", spec=HubSpec(locked=False)
    ) as handle:
        image = handle.make_image(FirmwareVersion.parse("04000007"), 24 * 1024)
        sha = hashlib.sha256(image).digest()
        digest = image_hash(image)  # what image state shows: MCUboot's SHA256 TLV
        client = SMPClient(SMPSerialTransport(), handle.path, timeout_s=CLIENT_TIMEOUT_S)
        await client.connect()  # reads mcumgr_params and sizes its frames from buf_size
        try:
            echo = await client.request(EchoWrite(d="hi"))
            assert success(echo)
            assert echo.r == "hi"
            offsets = [offset async for offset in client.upload(image)]
            assert offsets[-1] == len(image)
            assert len(offsets) >= len(image) // 2048  # frames filled to about buf_size
            states = await client.request(ImageStatesRead())
            assert success(states)
            assert [s.hash for s in states.images] == [
                bytes.fromhex(str(handle.hub.truth()["active_image_hash"])),
                digest,
            ]
            marked = await client.request(ImageStatesWrite(hash=digest, confirm=False))
            assert success(marked)
            assert marked.images[1].pending is True
            assert success(await client.request(ResetWrite()))
        finally:
            await client.disconnect()
        await handle.hub.wait_for_state(HubState.BOOTING, timeout_s=CLIENT_TIMEOUT_S)
        await handle.hub.wait_for_state(HubState.RUNNING, timeout_s=CLIENT_TIMEOUT_S)
        truth = handle.hub.truth()
        assert truth["active_version"] == "04000007"
        assert truth["active_sha256"] == sha.hex()
        assert truth["confirmed"] is False  # on test until the application confirms it
