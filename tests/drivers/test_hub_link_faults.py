"""Each fault the simulator injects (`sim.faults.Faults`), end to end over a real pty and over the
simulated USB bus: what the `smp` driver does about it, the typed error it raises or the
recovery it makes. `transport` (and `framing`) come from tests/drivers/conftest.py.

The fault decisions are seeded, so every run corrupts and drops the same responses (as long as
the driver sends the same requests). Timings are shrunk so the whole file takes seconds. A USB
hub that loses power leaves the bus, so after a power cycle the test opens a new link, as the
slot worker does (`HubLinks.after_power_cycle`); a serial port stays and so does its link.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Final

import pytest

from drivers import jig_group
from drivers.errors import (
    AccessDenied,
    DeviceDisconnected,
    LinkError,
    LinkTimeout,
    UnexpectedResponse,
    UnlockRefused,
)
from drivers.hub_link import HubIdentity, LinkOptions, SmpHubLink, await_boot, await_reset
from drivers.smp_upload import UploadResult, max_chunk_data
from jigd.model import FirmwareVersion
from sim.faults import Faults
from sim.harness import HubHandle, HubSpec, running_hub
from sim.hub import HubState
from sim.timing import Timing
from tests.drivers.helpers import HubLinks
from tests.sim.helpers import image_hash

TIMING: Final = Timing(
    baud=921_600,
    sector_erase_s=0.001,
    page_program_s=0.0001,
    swap_s=0.05,
    boot_s=0.02,
    reset_s=0.01,
)
# A hub that keeps its upload's state in flash, so an upload resumes after a power cycle
# (Zephyr 3.4 keeps it in RAM: the upload starts over).
RESUMABLE: Final = TIMING.model_copy(update={"upload_state": "flash"})
OPTIONS: Final = LinkOptions(timeout_s=0.3, request_retries=3)
# A noisy console link keeps one request in flight (its hub has two line buffers), so each lost
# answer costs a timeout: a short one, as answers here come within a few milliseconds.
NOISY: Final = LinkOptions(timeout_s=0.1, request_retries=3)
# A hub that stops answering is given up on after two short rounds.
IMPATIENT: Final = LinkOptions(timeout_s=0.2, request_retries=1)
BOOT_TIMEOUT_S: Final = 3.0
SILENT_BOOT_TIMEOUT_S: Final = 0.5  # waiting for a hub that is not going to answer
STATE_TIMEOUT_S: Final = 3.0
NEW_VERSION: Final = FirmwareVersion(0x02000007)
IMAGE_SIZE: Final = 64 * 1024
SMALL_IMAGE_SIZE: Final = 16 * 1024


def noisy_image_size(framing: str) -> int:
    """Console frames carry a tenth of a raw frame's bytes (two line buffers), so a noisy console
    link meets as many faults in a smaller image."""
    return SMALL_IMAGE_SIZE if framing == "console" else IMAGE_SIZE


@asynccontextmanager
async def faulty_hub(
    directory: Path,
    faults: Faults,
    *,
    transport: str,
    framing: str = "raw",
    locked: bool = False,
    options: LinkOptions = OPTIONS,
    timing: Timing = TIMING,
) -> AsyncIterator[tuple[HubHandle, SmpHubLink, HubLinks]]:
    """A simulated hub with `faults` and an `smp` driver link to it, as a slot opens one."""
    async with running_hub(
        directory,
        spec=HubSpec(locked=locked),
        timing=timing,
        framing=framing,
        faults=faults,
        transport=transport,
    ) as handle:
        links = HubLinks(handle, framing, options)
        try:
            yield handle, await links.open(), links
        finally:
            await links.close()


def power_cycle_error(transport: str) -> type[LinkError]:
    """What a request meets while the hub is off: silence on a serial line; on USB, the device
    left the bus."""
    return LinkTimeout if transport == "serial" else DeviceDisconnected


async def flash(link: SmpHubLink, image: bytes) -> tuple[UploadResult, HubIdentity]:
    """The station's stages from upload on: upload, mark test, reset, await boot, confirm."""
    result = await link.upload(image)
    await link.mark_test(image_hash(image))
    # Reset is never retried (a second reset could revert the image on test), so when its own
    # answer is the one lost or garbled the call fails; the hub resets all the same and the
    # station's next attempt finds the image active, as await_reset does here.
    with contextlib.suppress(LinkTimeout, UnexpectedResponse):
        await link.reset()
    await await_reset(link, timeout_s=BOOT_TIMEOUT_S, pending_hash=image_hash(image))
    identity = await link.identify()
    await link.confirm()
    return result, identity


def assert_flashed(handle: HubHandle, image: bytes) -> None:
    truth = handle.hub.truth()
    assert truth["active_version"] == str(NEW_VERSION)
    assert truth["active_sha256"] == hashlib.sha256(image).hexdigest()
    assert truth["confirmed"] is True
    assert truth["bricked"] is False


# --- recoverable: the driver retries and the flash completes -----------------------------------


async def test_corrupted_responses_are_dropped_and_the_flash_completes(
    tmp_path: Path, transport: str, framing: str
) -> None:
    """Console framing: the base64 and CRC checks drop a corrupted response (counted in
    `bytes_dropped`); the request times out and is resent, or, in an upload, a later answer
    shows the loss and the upload goes on from the offset the hub reports. Raw framing has no
    checksum: a corrupted response fails to decode (the decoder resynchronises byte by byte),
    is matched to no request (`unsolicited`), carries a wrong offset (the upload resyncs from
    the hub's next answer), or goes unnoticed with a wrong value in a reply that still decodes,
    which is why this test checks the hub's real state rather than the replies. USB carries raw
    frames too, one per transfer: a corrupted one that does not decode is dropped whole."""
    faults = Faults(seed=7, corrupt_rate=0.15)
    async with faulty_hub(
        tmp_path, faults, transport=transport, framing=framing, options=NOISY
    ) as (
        handle,
        link,
        _links,
    ):
        image = handle.make_image(NEW_VERSION, noisy_image_size(framing))
        result, identity = await flash(link, image)

        assert result.size == len(image)
        assert identity.firmware_version == NEW_VERSION
        assert_flashed(handle, image)
        assert handle.hub.responses_corrupted >= 3
        carrier = link.client.transport
        errors = link.link_errors
        if framing == "console":
            # Every corrupted packet fails its CRC: nothing corrupted reaches the SMP layer.
            assert carrier.bytes_dropped > 0
            assert errors["garbage"] > 0
            assert errors["undecodable"] == 0
        noticed = (
            carrier.bytes_dropped
            + errors["timeout"]
            + errors["unsolicited"]
            + errors["undecodable"]
            + errors["retry"]
            + result.retries
            + result.resyncs
        )
        assert noticed > 0, (errors, result)


async def test_dropped_responses_are_retried_and_the_flash_completes(
    tmp_path: Path, transport: str, framing: str
) -> None:
    faults = Faults(seed=3, drop_response_rate=0.1)
    async with faulty_hub(
        tmp_path, faults, transport=transport, framing=framing, options=NOISY
    ) as (
        handle,
        link,
        _links,
    ):
        image = handle.make_image(NEW_VERSION, noisy_image_size(framing))
        result, identity = await flash(link, image)

        assert handle.hub.responses_dropped > 0
        assert result.retries > 0  # upload answers lost: chunks resent from the hub's offset
        assert result.size == len(image)
        assert result.bytes_sent >= len(image)
        assert identity.firmware_version == NEW_VERSION
        assert_flashed(handle, image)


async def test_hang_raises_link_timeout_and_a_power_cycle_recovers(
    tmp_path: Path, transport: str
) -> None:
    faults = Faults(seed=1, hang_after_requests=8)  # mcumgr_params and 7 upload chunks
    async with faulty_hub(
        tmp_path, faults, transport=transport, options=IMPATIENT, timing=RESUMABLE
    ) as (
        handle,
        link,
        links,
    ):
        image = handle.make_image(NEW_VERSION, IMAGE_SIZE)
        with pytest.raises(LinkTimeout) as info:
            await link.upload(image)
        assert "image upload" in str(info.value)
        assert handle.hub.state is HubState.HUNG
        with pytest.raises(LinkTimeout):
            await link.echo("still there?")

        handle.hub.power_off()
        handle.hub.power_on()
        again = await links.after_power_cycle(link)  # serial: the same link, not reopened
        await await_boot(again, timeout_s=BOOT_TIMEOUT_S)
        assert await again.echo("back") == "back"
        result = await again.upload(image)
        assert result.resumed_from > 0  # the chunks programmed before the hang stay
        assert result.size == len(image)


async def test_power_loss_during_upload_then_resume_resends_less_than_buf_count_chunks(
    tmp_path: Path, transport: str, framing: str
) -> None:
    """The injected brown-out. test_hub_link_sim.py's test_upload_cut_by_power_loss_resumes cuts
    the power from the progress callback instead (raw framing only); this one checks the hub's
    own counters too."""
    faults = Faults(seed=1, power_loss_during_upload_at=0.5)
    async with faulty_hub(
        tmp_path, faults, transport=transport, framing=framing, options=IMPATIENT, timing=RESUMABLE
    ) as (handle, link, links):
        hub = handle.hub
        _buf_size, buf_count = await link.params()
        image = handle.make_image(NEW_VERSION, IMAGE_SIZE)

        with pytest.raises(power_cycle_error(transport)):
            await link.upload(image)
        assert hub.power_losses == 1
        assert hub.state is HubState.OFF  # stays off until its slot is powered again
        record = hub.flash.upload
        assert record is not None
        had = record.offset  # programmed before the loss: kept in flash
        assert 0 < had < len(image)

        hub.power_on()
        again = await links.after_power_cycle(link)
        await await_boot(again, timeout_s=BOOT_TIMEOUT_S)
        written_before = hub.chunks_written
        result = await again.upload(image)

        assert result.resumed_from == had
        assert result.size == len(image)
        # Frames as large as the link's sizing allows (on console: the hub's line buffers).
        chunk = max_chunk_data(result.frame_size, had, len(image))
        resent = result.bytes_sent - (len(image) - had)  # bytes of what the hub already had
        assert 0 <= resent < buf_count * chunk
        assert -(-resent // chunk) < buf_count
        # The hub programmed only what it lacked.
        assert hub.chunks_written - written_before == -(-(len(image) - had) // chunk)
        assert hub.truth()["secondary_sha256"] == hashlib.sha256(image).hexdigest()


async def test_power_loss_during_swap_resumes_the_swap_at_power_on(
    tmp_path: Path, transport: str
) -> None:
    faults = Faults(seed=1, power_loss_during_swap=True)
    async with faulty_hub(tmp_path, faults, transport=transport) as (handle, link, links):
        hub = handle.hub
        image = handle.make_image(NEW_VERSION, SMALL_IMAGE_SIZE)
        sha = image_hash(image)
        await link.upload(image)
        await link.mark_test(sha)
        await link.reset()

        await hub.wait_for_state(HubState.OFF, timeout_s=STATE_TIMEOUT_S)
        assert hub.power_losses == 1
        assert hub.truth()["swap_in_progress"] is True
        with pytest.raises(power_cycle_error(transport)):
            await await_boot(link, timeout_s=SILENT_BOOT_TIMEOUT_S)

        hub.power_on()
        again = await links.after_power_cycle(link)
        await await_boot(again, timeout_s=BOOT_TIMEOUT_S)
        identity = await again.identify()
        assert identity.firmware_version == NEW_VERSION
        active = next(s for s in await again.image_state() if s.active)
        assert active.hash == sha
        assert active.version == NEW_VERSION
        assert not active.confirmed  # on test, as after an uninterrupted swap
        assert next(s for s in await again.confirm() if s.active).confirmed
        assert hub.swaps == 1
        assert_flashed(handle, image)


# --- unrecoverable: a typed error, or a state the verify stage refuses -------------------------


async def test_wrong_unlock_key_raises_unlock_refused_without_key_material(
    tmp_path: Path, transport: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    faults = Faults(seed=1, wrong_unlock_key=True)
    async with faulty_hub(tmp_path, faults, transport=transport, locked=True) as (
        handle,
        link,
        _links,
    ):
        with pytest.raises(UnlockRefused) as info:
            await link.unlock(handle.master_key)
        exc = info.value
        assert exc.code == "unlock_refused"
        assert exc.group == jig_group.JIG_GROUP_ID
        assert exc.group_rc == jig_group.JigMgmtErr.BAD_MAC
        assert "master key" in str(exc)  # says what to check

        secrets = [
            handle.master_key,
            jig_group.device_key(handle.master_key, handle.spec.guid.to_bytes()),
        ]
        chain: list[BaseException] = []
        cause: BaseException | None = exc
        while cause is not None:
            chain.append(cause)
            cause = cause.__cause__
        texts = [text for e in chain for text in (str(e), repr(e), repr(e.args))]
        texts.append(caplog.text)
        for secret in secrets:
            for text in texts:
                assert secret.hex() not in text.lower()
                assert secret.hex().upper() not in text
                assert repr(secret) not in text

        assert (await link.identify()).locked
        with pytest.raises(AccessDenied):
            await link.upload(handle.make_image(NEW_VERSION, SMALL_IMAGE_SIZE))


async def test_image_rejected_by_the_bootloader_boots_the_old_image(
    tmp_path: Path, transport: str
) -> None:
    """The driver's part ends at image state: the old image is active and the new one is not,
    which the station's verify stage turns into `image_rejected`."""
    faults = Faults(seed=1, reject_image=True)
    async with faulty_hub(tmp_path, faults, transport=transport) as (handle, link, _links):
        old_sha = bytes.fromhex(str(handle.hub.truth()["active_image_hash"]))
        image = handle.make_image(NEW_VERSION, SMALL_IMAGE_SIZE)
        sha = image_hash(image)
        result = await link.upload(image)
        assert result.size == len(image)  # the upload itself is fine
        await link.mark_test(sha)
        await link.reset()

        await await_reset(link, timeout_s=BOOT_TIMEOUT_S, pending_hash=sha)

        identity = await link.identify()
        assert identity.firmware_version == handle.spec.firmware_version
        states = await link.image_state()
        active = next(s for s in states if s.active)
        assert active.hash == old_sha
        assert active.version == handle.spec.firmware_version
        assert not any(s.active for s in states if s.hash == sha)
        assert handle.hub.images_rejected == 1
        assert handle.hub.truth()["bricked"] is False


async def test_bricked_hub_never_answers_after_reset(tmp_path: Path, transport: str) -> None:
    faults = Faults(seed=1, bricked_after_reset=True)
    async with faulty_hub(tmp_path, faults, transport=transport) as (handle, link, links):
        image = handle.make_image(NEW_VERSION, SMALL_IMAGE_SIZE)
        await link.upload(image)
        await link.mark_test(image_hash(image))
        await link.reset()  # answered: the hub dies after it

        with pytest.raises(LinkTimeout) as info:
            await await_reset(link, timeout_s=SILENT_BOOT_TIMEOUT_S, pending_hash=image_hash(image))
        assert "boot" in str(info.value)
        assert handle.hub.state is HubState.BRICKED

        handle.hub.power_off()  # a power cycle does not help either
        handle.hub.power_on()
        again = await links.after_power_cycle(link)
        with pytest.raises(LinkTimeout):
            await await_boot(again, timeout_s=SILENT_BOOT_TIMEOUT_S)
        assert handle.hub.truth()["bricked"] is True
