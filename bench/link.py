"""Link benchmark: flash one simulated hub with jigd's `smp` driver and with `smpclient`.

Run: .venv/bin/python -m bench.link            (512 KiB image; about five minutes)
     .venv/bin/python -m bench.link --quick    (64 KiB image; a fast check)
     .venv/bin/python -m bench.link --transport usb   (the USB row alone)
     .venv/bin/python -m bench.link --transport zephyr  (the Zephyr peer rows alone)

For each baud rate (115200, 921600) and framing (raw, console) a fresh simulated hub (default
`sim.timing.Timing` except the baud rate, unlocked) is served in this process on a real pty and
flashed the way the station does it: upload, mark test, reset, await boot, confirm. The times are
compared with `sim.timing.physical_bound`, and with `smpclient` doing the same on an identical
hub (same framing, baud rate and buf_size; smpclient's serial transports send one request at a
time and wait for its answer). Then the same hub is flashed by jigd over USB: a device on a
simulated full-speed USB bus served in this process on a Unix socket, reached through pyusb
(`drivers.usb`, `sim.usb_backend`), against the bound of that link (smpclient has no USB bulk
transport).

The Zephyr rows upload a 200 KiB image to Zephyr's own SMP server (`smp_svr_params.exe`, a
native_sim build, from `../shared/peers/zephyr` or `$JIGD_ZEPHYR_PEERS`) over its UART pty with
console framing, at its default pacing (12 bytes per 1 ms tick, about 115200 baud) and unpaced
(`-uart_rx_bytes_per_tick=0`, as a fast USB CDC-ACM adapter delivers bytes), a fresh process per
run: jigd with a console slot's default settings (`jigd.receiver.receiver_settings`), and smpclient
with its default serial transport. The bound at the default pacing is the framed wire time of
what jigd sent (its bytes at 12,000 bytes/s); unpaced there is no wire bound, so the rows compare
upload rates and count timeouts. Those peers have no bootloader: the rows stop at the upload.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hashlib
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from smpclient import SMPClient
from smpclient.exceptions import SMPUploadError
from smpclient.generics import success
from smpclient.requests.image_management import ImageStatesWrite
from smpclient.requests.os_management import ResetWrite
from smpclient.transport.serial import (
    BufferParams,
    BufferSize,
    SMPSerialRawTransport,
    SMPSerialTransport,
)

from drivers import serial
from drivers.hub_link import (
    DEFAULT_REQUEST_RETRIES,
    FrameLimits,
    LinkOptions,
    SmpHubLink,
    await_reset,
)
from drivers.smp_client import SmpClient
from drivers.smp_driver import open_smp_link
from jigd.config import SlotConfig
from jigd.model import FirmwareVersion
from jigd.receiver import receiver_settings
from sim.harness import HubHandle, HubSpec, running_hub
from sim.hub import HubState
from sim.image_check import inspect_image
from sim.images import make_manufacturer_keys, make_signed_image
from sim.native_sim import flash_copy, native_sim, zephyr_peers_dir
from sim.timing import USB_FULL_SPEED, Bound, Timing, physical_bound

BAUDS: Final = (115_200, 921_600)
FRAMINGS: Final = ("raw", "console")
IMAGE_SIZE: Final = 512 * 1024
QUICK_IMAGE_SIZE: Final = 64 * 1024
NEW_VERSION: Final = FirmwareVersion.parse("04000007")
SEED: Final = 1
EFFICIENCY_TARGET: Final = 0.90  # raw framing (and USB), full flash
SPEEDUP_TARGET: Final = 1.3  # jigd vs smpclient, identical settings, upload
BOOT_TIMEOUT_S: Final = 30.0
CLIENT_TIMEOUT_S: Final = 10.0


@dataclass(frozen=True)
class Run:
    """One flash: upload time, full flash time, and what went over the wire to the hub."""

    client: str
    framing: str
    baud: int
    upload_s: float
    flash_s: float
    wire_bytes: int  # bytes the hub received during the upload


_Flash = Callable[[Path, Timing, str, bytes], Awaitable[Run]]


def _check_flashed(handle: HubHandle, sha: bytes, who: str) -> None:
    truth = handle.hub.truth()
    if truth["active_sha256"] != sha.hex() or truth["confirmed"] is not True:
        raise RuntimeError(f"{who}: the hub does not run the new image confirmed: {truth}")


async def _jigd(
    directory: Path, timing: Timing, framing: str, image: bytes, transport: str = "serial"
) -> Run:
    sha = hashlib.sha256(image).digest()
    image_hash = _image_hash(image)
    spec = HubSpec(locked=False)
    # Frames as large as buf_size allows, as smpclient's: the simulated hub's UART keeps up at
    # these rates (the Zephyr rows below show the line-buffer limits at work).
    options = LinkOptions(limits=FrameLimits(line_buffers=None, mtu=None))
    async with running_hub(
        directory, spec=spec, timing=timing, framing=framing, seed=SEED, transport=transport
    ) as hub:
        link = await open_smp_link(hub.slot_spec(framing), name="bench", options=options)
        try:
            received = hub.hub.bytes_received
            started = time.perf_counter()
            result = await link.upload(image)
            uploaded = time.perf_counter()
            wire = hub.hub.bytes_received - received
            await link.mark_test(image_hash)
            await link.reset()
            await await_reset(link, timeout_s=BOOT_TIMEOUT_S, pending_hash=image_hash)
            await link.confirm()
            done = time.perf_counter()
        finally:
            await link.close()
        if result.size != len(image) or result.resumed_from:
            raise RuntimeError(f"jigd: unexpected upload result {result}")
        _check_flashed(hub, sha, "jigd")
    label = framing if transport == "serial" else "usb"
    return Run("jigd", label, timing.baud, uploaded - started, done - started, wire)


def _image_hash(image: bytes) -> bytes:
    """MCUboot's image hash (the SHA256 TLV): how image state names an image."""
    tlv_hash = inspect_image(image).tlv_hash
    if tlv_hash is None:
        raise RuntimeError("the bench image has no SHA256 TLV")
    return tlv_hash


def _smpclient_transport(
    timing: Timing, framing: str
) -> SMPSerialTransport | SMPSerialRawTransport:
    """smpclient's transport for `framing`, sending request frames as large as jigd's.

    Console: `BufferSize(buf_size)` makes its largest SMP message `buf_size - 4` bytes, the
    Zephyr limit that jigd keeps too and the simulated hub enforces (length and CRC16 share the
    hub's buffer). Raw: the message limit is the hub's buf_size.
    """
    if framing == "console":
        return SMPSerialTransport(BufferSize(buf_size=timing.buf_size), baudrate=timing.baud)
    return SMPSerialRawTransport(mtu=timing.buf_size, baudrate=timing.baud)


async def _smpclient(directory: Path, timing: Timing, framing: str, image: bytes) -> Run:
    sha = hashlib.sha256(image).digest()
    spec = HubSpec(locked=False)  # smpclient does not speak the jig group's unlock
    async with running_hub(directory, spec=spec, timing=timing, framing=framing, seed=SEED) as hub:
        transport = _smpclient_transport(timing, framing)
        client = SMPClient(transport, hub.path, timeout_s=CLIENT_TIMEOUT_S)
        await client.connect()
        try:
            largest = timing.buf_size - (4 if framing == "console" else 0)  # as jigd sends
            if transport.max_unencoded_size != largest:
                raise RuntimeError(
                    f"smpclient would send {transport.max_unencoded_size}-byte messages, "
                    f"not {largest} as jigd does"
                )
            received = hub.hub.bytes_received
            started = time.perf_counter()
            async for _offset in client.upload(image, first_timeout_s=CLIENT_TIMEOUT_S):
                pass
            uploaded = time.perf_counter()
            wire = hub.hub.bytes_received - received
            test = ImageStatesWrite(hash=_image_hash(image), confirm=False)
            if not success(await client.request(test)):
                raise RuntimeError("smpclient: image state write (test) failed")
            boots = hub.hub.boots
            if not success(await client.request(ResetWrite())):
                raise RuntimeError("smpclient: reset failed")
            # smpclient has no wait for a boot: wait on the simulator itself, which sees the
            # boot at once (no polling delay, in smpclient's favour).
            await hub.hub.wait_until(
                lambda: hub.hub.boots > boots and hub.hub.state is HubState.RUNNING,
                timeout_s=BOOT_TIMEOUT_S,
            )
            if not success(await client.request(ImageStatesWrite(confirm=True))):
                raise RuntimeError("smpclient: image state write (confirm) failed")
            done = time.perf_counter()
        finally:
            await client.disconnect()
        _check_flashed(hub, sha, "smpclient")
    return Run("smpclient", framing, timing.baud, uploaded - started, done - started, wire)


def _upload_bound_s(bound: Bound) -> float:
    return max(bound.wire_s, bound.flash_s)


def _print_runs(image_size: int, runs: list[Run], bounds: dict[tuple[int, str], Bound]) -> None:
    print(
        f"{'baud':>7} {'framing':<8} {'client':<10} {'upload s':>9} {'flash s':>8} "
        f"{'bound s':>8} {'eff':>5} {'upload bound s':>15} {'eff':>5} {'framed wire s':>14} "
        f"{'wire/image':>10}"
    )
    for run in runs:
        bound = bounds[(run.baud, run.framing)]
        print(
            f"{run.baud:>7} {run.framing:<8} {run.client:<10} {run.upload_s:>9.2f} "
            f"{run.flash_s:>8.2f} {bound.total_s:>8.2f} {bound.total_s / run.flash_s:>5.2f} "
            f"{_upload_bound_s(bound):>15.2f} {_upload_bound_s(bound) / run.upload_s:>5.2f} "
            f"{bound.framed_wire_s:>14.2f} {run.wire_bytes / image_size:>10.3f}"
        )


def _print_verdicts(runs: list[Run], bounds: dict[tuple[int, str], Bound]) -> None:
    by_key = {(r.client, r.baud, r.framing): r for r in runs}
    print("Targets:")
    for (baud, framing), bound in bounds.items():
        jigd = by_key[("jigd", baud, framing)]
        if framing == "raw":
            eff = bound.total_s / jigd.flash_s
            verdict = "OK" if eff >= EFFICIENCY_TARGET else "target not met"
            print(
                f"  {baud} raw: jigd full-flash efficiency {eff:.2f} "
                f"(target >= {EFFICIENCY_TARGET:.2f}): {verdict}"
            )
    for (baud, framing), bound in bounds.items():
        jigd = by_key[("jigd", baud, framing)]
        smp = by_key[("smpclient", baud, framing)]
        speedup = smp.upload_s / jigd.upload_s
        # With the same framing and request size no client beats the framed wire time (or the
        # flash): this is the largest speed-up over smpclient that any client could show.
        ceiling = smp.upload_s / max(bound.framed_wire_s, bound.flash_s)
        verdict = "OK" if speedup >= SPEEDUP_TARGET else "target not met"
        print(
            f"  {baud} {framing}: jigd vs smpclient, identical settings: upload {speedup:.2f}x, "
            f"full flash {smp.flash_s / jigd.flash_s:.2f}x (target >= {SPEEDUP_TARGET}x upload): "
            f"{verdict}; ceiling for any client {ceiling:.2f}x (smpclient upload / "
            f"max(framed wire, flash))"
        )
    for baud in sorted({b for b, _f in bounds}):
        raw = by_key.get(("jigd", baud, "raw"))
        console = by_key.get(("smpclient", baud, "console"))
        if raw is not None and console is not None:
            print(
                f"  {baud} for information: jigd raw vs smpclient console: upload "
                f"{console.upload_s / raw.upload_s:.2f}x, full flash "
                f"{console.flash_s / raw.flash_s:.2f}x"
            )


def _print_usb(image_size: int, run: Run, bound: Bound) -> None:
    eff = bound.total_s / run.flash_s
    upload_bound = _upload_bound_s(bound)
    print(
        f"USB full speed ({USB_FULL_SPEED.max_packet}-byte bulk packets, "
        f"{bound.bytes_per_s:,.0f} bytes/s, wire_s {bound.wire_s:.2f} s, flash_s "
        f"{bound.flash_s:.2f} s): the flash bounds the upload"
    )
    print(
        f"{'client':<10} {'upload s':>9} {'flash s':>8} {'bound s':>8} {'eff':>5} "
        f"{'upload bound s':>15} {'eff':>5} {'framed wire s':>14} {'wire/image':>10}"
    )
    print(
        f"{run.client:<10} {run.upload_s:>9.2f} {run.flash_s:>8.2f} {bound.total_s:>8.2f} "
        f"{eff:>5.2f} {upload_bound:>15.2f} {upload_bound / run.upload_s:>5.2f} "
        f"{bound.framed_wire_s:>14.2f} {run.wire_bytes / image_size:>10.3f}"
    )
    verdict = "OK" if eff >= EFFICIENCY_TARGET else "target not met"
    print(
        f"  usb: jigd full-flash efficiency {eff:.2f} (target >= {EFFICIENCY_TARGET:.2f}): "
        f"{verdict}"
    )


# --- Zephyr's own SMP server -------------------------------------------------------------------

ZEPHYR_EXE: Final = "smp_svr_params.exe"
ZEPHYR_IMAGE_SIZE: Final = 200 * 1024
ZEPHYR_PACED_BYTES_PER_S: Final = 12_000  # the peers' default RX pacing: 12 bytes per 1 ms tick
ZEPHYR_PACINGS: Final = {"default": (), "unpaced": ("-uart_rx_bytes_per_tick=0",)}
ZEPHYR_EFFICIENCY_TARGET: Final = 0.90  # default pacing, upload against the framed wire bound
ZEPHYR_SPEEDUP_TARGET: Final = 3.0  # unpaced, jigd vs smpclient upload rate
ZEPHYR_REQUEST_TIMEOUT_S: Final = 2.0


@dataclass(frozen=True)
class PeerRun:
    """One upload to a Zephyr peer; `upload_s` is None when the upload failed."""

    client: str
    pacing: str
    upload_s: float | None
    wire_bytes: int  # bytes the client sent during the upload (jigd only; 0 if unknown)
    timeouts: int
    detail: str


def _zephyr_flash(directory: Path) -> Path:
    return flash_copy(zephyr_peers_dir() / "flash_init.bin", directory / "flash.bin")


async def _zephyr_jigd(directory: Path, pacing: str, image: bytes) -> PeerRun:
    exe = zephyr_peers_dir() / ZEPHYR_EXE
    async with native_sim(exe, _zephyr_flash(directory), *ZEPHYR_PACINGS[pacing]) as peer:
        # What a console slot gets by default (docs/hub-requirements.md).
        settings = receiver_settings(SlotConfig(slot=1, port=peer.pty, framing="console"), None)
        options = settings.link_options(
            timeout_s=ZEPHYR_REQUEST_TIMEOUT_S, request_retries=DEFAULT_REQUEST_RETRIES
        )
        transport = await serial.open(peer.pty, 115200, "console", name="jigd")
        link = SmpHubLink(SmpClient(transport, timeout_s=options.timeout_s), options=options)
        try:
            await link.params()  # as smpclient's connect does, before the clock starts
            sent = transport.bytes_sent
            started = time.perf_counter()
            result = await link.upload(image)
            upload_s = time.perf_counter() - started
            wire = transport.bytes_sent - sent
            states = await link.image_state()
        finally:
            await link.close()
    if not any(s.slot == 1 and s.hash == _image_hash(image) for s in states):
        raise RuntimeError(f"jigd: the peer does not hold the image in slot 1: {states}")
    detail = (
        f"{result.frame_size}-byte frames ({result.frame_lines} lines), window {result.window}, "
        f"{result.retries} requests lost and resent"
    )
    return PeerRun("jigd", pacing, upload_s, wire, result.timeouts, detail)


async def _zephyr_smpclient(
    directory: Path, pacing: str, image: bytes, line_buffers: int | None = None
) -> PeerRun:
    """smpclient with its default serial transport, or told the hub's line buffers (its
    `BufferParams`: messages that fit `line_buffers` 128-byte lines)."""
    exe = zephyr_peers_dir() / ZEPHYR_EXE
    name = "smpclient" if line_buffers is None else f"smpclient/{line_buffers}l"
    async with native_sim(exe, _zephyr_flash(directory), *ZEPHYR_PACINGS[pacing]) as peer:
        transport = (
            SMPSerialTransport()
            if line_buffers is None
            else SMPSerialTransport(BufferParams(line_length=128, line_buffers=line_buffers))
        )
        client = SMPClient(transport, peer.pty, timeout_s=ZEPHYR_REQUEST_TIMEOUT_S)
        await client.connect()
        try:
            started = time.perf_counter()
            try:
                async for _offset in client.upload(
                    image,
                    first_timeout_s=ZEPHYR_REQUEST_TIMEOUT_S,
                    subsequent_timeout_s=ZEPHYR_REQUEST_TIMEOUT_S,
                ):
                    pass
            except (TimeoutError, SMPUploadError) as exc:
                return PeerRun(name, pacing, None, 0, 1, f"failed: {exc!r}"[:120])
            upload_s = time.perf_counter() - started
        finally:
            await client.disconnect()
    detail = f"{transport.max_unencoded_size}-byte messages, one request at a time"
    return PeerRun(name, pacing, upload_s, 0, 0, detail)


def _rate(run: PeerRun, size: int) -> str:
    return "-" if run.upload_s is None else f"{size / run.upload_s / 1000:.1f}"


def _print_zephyr(size: int, runs: list[PeerRun]) -> None:
    print(
        f"Zephyr {ZEPHYR_EXE} (native_sim, UART pty, console framing), {size} byte image "
        f"({size // 1024} KiB), upload only (no bootloader in the peer)"
    )
    print(f"{'pacing':<8} {'client':<10} {'upload s':>9} {'kB/s':>7} {'timeouts':>8}  detail")
    for run in runs:
        upload = "-" if run.upload_s is None else f"{run.upload_s:.2f}"
        print(
            f"{run.pacing:<8} {run.client:<10} {upload:>9} {_rate(run, size):>7} "
            f"{run.timeouts:>8}  {run.detail}"
        )
    by_key = {(r.client, r.pacing): r for r in runs}
    print("Targets:")
    paced = by_key.get(("jigd", "default"))
    if paced is not None and paced.upload_s is not None:
        bound_s = paced.wire_bytes / ZEPHYR_PACED_BYTES_PER_S
        eff = bound_s / paced.upload_s
        verdict = "OK" if eff >= ZEPHYR_EFFICIENCY_TARGET else "target not met"
        print(
            f"  default pacing: jigd upload efficiency {eff:.2f} against the framed wire bound "
            f"({paced.wire_bytes} bytes at {ZEPHYR_PACED_BYTES_PER_S} bytes/s = {bound_s:.2f} s; "
            f"target >= {ZEPHYR_EFFICIENCY_TARGET:.2f}): {verdict}"
        )
    fast = by_key.get(("jigd", "unpaced"))
    others = [r for r in runs if r.pacing == "unpaced" and r.client != "jigd"]
    if fast is not None and fast.upload_s is not None:
        for slow in others:
            if slow.upload_s is None:
                print(f"  unpaced: {slow.client}'s upload failed; jigd completed")
                continue
            speedup = slow.upload_s / fast.upload_s
            ok = speedup >= ZEPHYR_SPEEDUP_TARGET and fast.timeouts == 0
            print(
                f"  unpaced: jigd vs {slow.client} upload rate {speedup:.2f}x, jigd timeouts "
                f"{fast.timeouts} (target >= {ZEPHYR_SPEEDUP_TARGET:.0f}x with zero timeouts): "
                f"{'OK' if ok else 'target not met'}"
            )


async def _bench_zephyr(root: Path, size: int, repeat: int) -> None:
    if not (zephyr_peers_dir() / ZEPHYR_EXE).is_file():
        print(f"Zephyr rows skipped: no {ZEPHYR_EXE} in {zephyr_peers_dir()}")
        return
    keys = make_manufacturer_keys(HubSpec().model.manufacturer, SEED)
    image = make_signed_image(keys, HubSpec().model, NEW_VERSION, size, SEED)
    runs: list[PeerRun] = []
    clients: list[tuple[str, Callable[[Path, str, bytes], Awaitable[PeerRun]]]] = [
        ("jigd", _zephyr_jigd),
        ("smpclient", _zephyr_smpclient),
        ("smpclient-2", lambda d, p, i: _zephyr_smpclient(d, p, i, line_buffers=2)),
    ]
    for pacing in ZEPHYR_PACINGS:
        for name, upload in clients:
            tries = []
            for n in range(repeat):
                run = await upload(root / f"zephyr-{name}-{pacing}-{n}", pacing, image)
                print(f"  {name} on Zephyr, {pacing}: {run.upload_s} s, {run.detail}", flush=True)
                tries.append(run)
            done = [r for r in tries if r.upload_s is not None]
            runs.append(min(done, key=lambda r: r.upload_s or 0.0) if done else tries[0])
    print()
    _print_zephyr(size, runs)


async def _best_of(repeat: int, label: str, make: Callable[[int], Awaitable[Run]]) -> Run:
    tries: list[Run] = []
    for n in range(repeat):
        run = await make(n)
        print(f"  {label}: upload {run.upload_s:.2f} s, flash {run.flash_s:.2f} s", flush=True)
        tries.append(run)
    return dataclasses.replace(
        tries[0],
        upload_s=min(r.upload_s for r in tries),
        flash_s=min(r.flash_s for r in tries),
    )


async def _bench(
    image_size: int,
    bauds: list[int],
    repeat: int,
    transports: list[str],
    zephyr_size: int = ZEPHYR_IMAGE_SIZE,
) -> None:
    spec = HubSpec(locked=False)
    keys = make_manufacturer_keys(spec.model.manufacturer, SEED)
    image = make_signed_image(keys, spec.model, NEW_VERSION, image_size, SEED)
    best = f", best of {repeat} runs" if repeat > 1 else ""
    print(
        f"Link: one simulated hub, {image_size} byte image ({image_size // 1024} KiB), default "
        f"sim timing except baud{best}; flash = upload + mark test + reset + await boot + confirm"
    )
    runs: list[Run] = []
    bounds: dict[tuple[int, str], Bound] = {}
    usb_run: Run | None = None
    with tempfile.TemporaryDirectory(prefix="jigd-bench-link-") as scratch:
        root = Path(scratch)
        for baud in bauds if "serial" in transports else []:
            timing = Timing(baud=baud)
            for framing in FRAMINGS:
                bounds[(baud, framing)] = physical_bound(image_size, timing, framing)
                for name, flash in (("jigd", _jigd), ("smpclient", _smpclient)):

                    def one(
                        n: int,
                        name: str = name,
                        flash: _Flash = flash,
                        timing: Timing = timing,
                        framing: str = framing,
                    ) -> Awaitable[Run]:
                        directory = root / f"{name}-{timing.baud}-{framing}-{n}"
                        return flash(directory, timing, framing, image)

                    label = f"{name} {framing} at {baud}"
                    runs.append(await _best_of(repeat, label, one))
        if "zephyr" in transports:
            await _bench_zephyr(root, zephyr_size, repeat)
        if "usb" in transports:

            def one_usb(n: int) -> Awaitable[Run]:
                return _jigd(root / f"jigd-usb-{n}", Timing(), "raw", image, "usb")

            usb_run = await _best_of(repeat, "jigd usb", one_usb)
    if runs:
        print()
        _print_runs(image_size, runs, bounds)
        print()
        _print_verdicts(runs, bounds)
    if usb_run is not None:
        print()
        _print_usb(image_size, usb_run, physical_bound(image_size, Timing(), transport="usb"))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.link", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help=f"a {QUICK_IMAGE_SIZE // 1024} KiB image"
    )
    parser.add_argument("--image-size", type=int, help=f"image bytes (default {IMAGE_SIZE})")
    parser.add_argument(
        "--baud", type=int, action="append", help="a baud rate (repeatable; default both)"
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs per figure; the best is shown (default 1)"
    )
    parser.add_argument(
        "--transport",
        choices=("serial", "usb", "zephyr", "all"),
        default="all",
        help="the simulated serial rows, the USB row, the Zephyr peer rows, or all (default)",
    )
    args = parser.parse_args()
    image_size = args.image_size or (QUICK_IMAGE_SIZE if args.quick else IMAGE_SIZE)
    transports = ["serial", "usb", "zephyr"] if args.transport == "all" else [args.transport]
    asyncio.run(_bench(image_size, args.baud or list(BAUDS), max(1, args.repeat), transports))


if __name__ == "__main__":
    main()
