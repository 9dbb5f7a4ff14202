"""A slot's hub as a Zephyr native_sim process: real firmware behind the slot's stable pty.

`jigsim serve --hub-exe jig_hub.exe` runs, for every hub in a slot, the Zephyr reference hub
(Zephyr's smp_svr plus the jig group 64, built for native_sim_64) on its own flash file:

    EXE -flash=FILE -jig_guid=HEX -jig_manufacturer=N -jig_model=N -jig_device_key=HEX64

(the jig options only for an executable that has them: a stock Zephyr `smp_svr.exe` runs as it
is, a hub without the jig group, which a station must fail at `identify` with `no_jig_group`).

The executable prints `uart_1 connected to pseudotty: /dev/pts/N`, its SMP UART. The slot's
published port (`<dir>/rig<R>/slot<S>`, stable) is relayed byte for byte to that pty, as a USB
serial adapter that stays open while the MCU behind it resets. Bytes the host sends while no
process runs (power off, reset, boot) are lost, as on a real UART.

- Power on: the boot step (`sim.bootloader.boot_file`: MCUboot's swap and checks on the flash
  file), then the process starts. A hub whose primary image does not validate stays dark.
- An SMP `os reset` ends the process with status 1: that is the MCU resetting. While the slot
  is powered, the boot step runs and the process starts again on the same flash file.
- Power off: the process gets SIGTERM, then SIGKILL after `EXE_STOP_TIMEOUT_S`, and is waited
  for. Every process is owned by the hub's `serve()` task: cancelling it stops the process.

The executable derives its firmware version from slot 0's image header. Its console UART (the
other pty) is not read: the executable's ptys are non-blocking, it drops what it cannot write.
No fault is injected into these hubs.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import struct
import subprocess
import threading
import tty
from collections.abc import Callable
from pathlib import Path
from typing import Final

from drivers import jig_group
from jigd.model import DeviceModel, Guid
from sim.bootloader import (
    SLOT0,
    SLOT1,
    STORAGE,
    BootResult,
    SwapType,
    boot_file,
    image_is_confirmed,
    read_flash,
    read_slot_image,
    read_trailer,
    swap_type_of,
    write_confirmed_image,
    write_flash_atomically,
)
from sim.image_check import ImageKey
from sim.native_sim import SMP_PTY_LINE
from sim.pty_port import READ_CHUNK, Port
from sim.slot_hub import HubState, HubStateWatch

__all__ = [
    "EXE_PTY_TIMEOUT_S",
    "EXE_STOP_TIMEOUT_S",
    "ExeHub",
    "ExeHubError",
    "ExeStartError",
    "has_jig_options",
    "prepare_flash",
]

_LOGGER = logging.getLogger(__name__)

EXE_PTY_TIMEOUT_S: Final = 5.0  # process start to its "uart_1 connected" line
EXE_STOP_TIMEOUT_S: Final = 2.0  # SIGTERM to exit, before SIGKILL
RESET_EXIT_STATUS: Final = 1  # sys_reboot on native_sim: the process exits with status 1
# jig_hub.exe keeps its lock state at the start of storage_partition: "JIGL", then 0 or 1.
_LOCK_RECORD: Final = struct.Struct("<II")
_LOCK_RECORD_MAGIC: Final = 0x4C47494A


class ExeHubError(RuntimeError):
    """A hub process could not be run."""


class ExeStartError(ExeHubError):
    """The executable exited or said nothing before its SMP pty was up; the message has its
    output."""


@functools.cache
def has_jig_options(exe: Path) -> bool:
    """Whether a native_sim executable takes the jig group's options (`-jig_guid`, ...): its
    `--help` lists them. Blocking (runs the executable once per path): call it in a thread."""
    try:
        shown = subprocess.run(
            [str(exe), "--help"],
            capture_output=True,
            timeout=EXE_PTY_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ExeStartError(f"{exe}: cannot run it: {exc}") from exc
    return b"-jig_guid" in shown.stdout + shown.stderr


def prepare_flash(path: Path, template: Path, image: bytes) -> None:
    """A fresh flash file at `path`: a copy of `template` (the peers' `flash_init.bin`) with
    `image` in slot 0 as a confirmed image. Blocking: run it in a worker thread."""
    path.parent.mkdir(parents=True, exist_ok=True)
    flash = read_flash(template)
    write_confirmed_image(flash, image)
    write_flash_atomically(path, flash)
    path.chmod(0o644)


def _locked(flash: bytearray) -> bool:
    """The lock state jig_hub.exe stored; locked when it stored none."""
    magic, state = _LOCK_RECORD.unpack_from(flash, STORAGE.offset)
    return not (magic == _LOCK_RECORD_MAGIC and state == 0)


class _PtyEnd:
    """The host end of the executable's SMP pty: a raw, non-blocking descriptor."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        self._waiters: set[asyncio.Future[None]] = set()
        try:
            tty.setraw(self._fd)  # no echo, no line discipline: bytes pass as they are
        except OSError:
            os.close(self._fd)
            raise

    def close(self) -> None:
        """Wake whoever waits on the descriptor (they see it closed), then close it."""
        if self._fd < 0:
            return
        loop = asyncio.get_running_loop()
        loop.remove_reader(self._fd)
        loop.remove_writer(self._fd)
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()
        os.close(self._fd)
        self._fd = -1

    async def read(self) -> bytes:
        """At least one byte; b"" once the executable's side is gone (EIO after it exits) or
        this end is closed."""
        while self._fd >= 0:
            try:
                return os.read(self._fd, READ_CHUNK)
            except BlockingIOError:
                await self._ready(writing=False)
            except OSError:
                return b""
        return b""

    async def write(self, data: bytes) -> bool:
        """Write all of `data`, waiting while the executable does not take it; False once its
        side is gone or this end is closed."""
        view = memoryview(data)
        while view:
            if self._fd < 0:
                return False
            try:
                view = view[os.write(self._fd, view) :]
            except BlockingIOError:
                await self._ready(writing=True)
            except OSError:
                return False
        return True

    async def _ready(self, *, writing: bool) -> None:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not waiter.done():
                waiter.set_result(None)

        fd = self._fd
        add, remove = (
            (loop.add_writer, loop.remove_writer)
            if writing
            else (loop.add_reader, loop.remove_reader)
        )
        add(fd, wake)
        self._waiters.add(waiter)
        try:
            await waiter
        finally:
            self._waiters.discard(waiter)
            if self._fd == fd:
                remove(fd)


class ExeHub(HubStateWatch):
    """One hub run by a native_sim executable on its own flash file.

    Serve it on its slot's port with `serve()`; power it with `power_on()` / `power_off()`.
    """

    def __init__(
        self,
        *,
        guid: Guid,
        model: DeviceModel,
        exe: Path,
        flash: Path,
        master_key: bytes,
        image_key: ImageKey,
    ) -> None:
        super().__init__()
        self.guid = guid
        self.model = model
        self.exe = exe
        self.flash = flash
        self.name = f"hub {guid}"
        self.on_power_lost: Callable[[], None] | None = None  # never called: no brown-outs
        self._master_key = master_key
        self._image_key = image_key
        self._powered = False
        self._tg: asyncio.TaskGroup | None = None
        self._port: Port | None = None
        self._session_task: asyncio.Task[None] | None = None
        self._link: _PtyEnd | None = None
        self._process: asyncio.subprocess.Process | None = None
        # A boot step is never cut short (see _boot_step); should serve() end during one and
        # start again, the next one waits for it here.
        self._flash_lock = threading.Lock()
        self.last_boot: BootResult | None = None

        # Counters, for tests and logs.
        self.starts = 0  # processes started
        self.resets = 0  # processes that ended with the reset status
        self.bytes_discarded = 0  # sent by the host while no process listened

    @property
    def powered(self) -> bool:
        return self._powered

    @property
    def pid(self) -> int | None:
        """The process running now, if any."""
        return self._process.pid if self._process is not None else None

    # ---- serving and power --------------------------------------------------------------------

    async def serve(self, port: Port) -> None:
        """Relay `port` to the hub's process until cancelled; the process is stopped then."""
        if self._tg is not None:
            raise RuntimeError(f"{self.name} is already served on a port")
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg, self._port = tg, port
                tg.create_task(self._from_host(port), name=f"{self.name} host rx")
                if self._powered:
                    self._start_session()
        finally:
            self._tg = self._port = None
            self._stop_session()

    def power_on(self) -> None:
        """Apply power: the boot step runs, then the process starts."""
        if self._powered:
            return
        self._powered = True
        _LOGGER.debug("%s: power on", self.name)
        if self._tg is not None:
            self._start_session()

    def power_off(self) -> None:
        """Remove power: silent at once; the process is stopped (and waited for) by its
        session task."""
        if not self._powered:
            return
        self._powered = False
        _LOGGER.debug("%s: power off", self.name)
        self._stop_session()

    def _start_session(self) -> None:
        assert self._tg is not None  # internal invariant: called while served
        assert self._port is not None
        previous = self._session_task
        self._session_task = self._tg.create_task(
            self._session(self._port, previous), name=f"{self.name} session"
        )

    def _stop_session(self) -> None:
        self._link = None  # nothing more reaches the process
        task = self._session_task
        if task is not None and not task.done():
            task.cancel()
        self._set_state(HubState.OFF)

    async def _session(self, port: Port, previous: asyncio.Task[None] | None) -> None:
        """One powered period: boot step and process, again after each reset."""
        if previous is not None:
            await asyncio.wait([previous])  # the last period's process is gone first
        while True:
            self._set_state(HubState.BOOTING)
            result = await self._boot_step()
            if not result.bootable:
                self._set_state(HubState.BRICKED)
                _LOGGER.warning("%s: does not boot: %s", self.name, result.problem)
                return
            if not await self._run(port):
                self._set_state(HubState.HUNG)
                return
            self.resets += 1
            self._changed()

    async def _boot_step(self) -> BootResult:
        """The bootloader on the flash file, in a worker thread. It is never cut short: power
        lost during it waits for it (a swap is atomic here)."""
        assert self._tg is not None  # internal invariant
        step = self._tg.create_task(asyncio.to_thread(self._boot), name=f"{self.name} boot")
        try:
            result = await asyncio.shield(step)
        except asyncio.CancelledError:
            await asyncio.wait([step])
            raise
        self.last_boot = result
        if result.rejected is not None:
            _LOGGER.info("%s: bootloader erased the new image: %s", self.name, result.rejected)
        if result.swap is not SwapType.NONE:
            _LOGGER.info("%s: bootloader swap %s done", self.name, result.swap.name.lower())
        return result

    def _boot(self) -> BootResult:
        with self._flash_lock:
            return boot_file(self.flash, self._image_key)

    async def _jig_options(self) -> list[str]:
        """The jig group's identity options, for an executable that has them (a stock Zephyr
        build, such as smp_svr.exe, has no jig group and refuses unknown options). The hub gets
        its diversified device key, not the manufacturer's master key: argv is visible in ps."""
        if not await asyncio.to_thread(has_jig_options, self.exe):
            return []
        device_key = jig_group.device_key(self._master_key, self.guid.to_bytes())
        return [
            f"-jig_guid={self.guid.to_bytes().hex().upper()}",
            f"-jig_manufacturer=0x{self.model.manufacturer:04x}",
            f"-jig_model=0x{self.model.model:08x}",
            f"-jig_device_key={device_key.hex()}",  # argv is never logged
        ]

    async def _run(self, port: Port) -> bool:
        """One process: start it, relay until it exits; True when it exited to reset."""
        process = await asyncio.create_subprocess_exec(
            str(self.exe),
            f"-flash={self.flash}",
            *await self._jig_options(),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            process_group=0,  # a terminal's Ctrl-C reaches jigsim, which stops its hubs itself
        )
        self.starts += 1
        self._process = process
        self._changed()
        try:
            link = _PtyEnd(await self._smp_pty(process))
            try:
                self._link = link
                self._set_state(HubState.RUNNING)
                _LOGGER.debug("%s: running, pid %d, SMP on %s", self.name, process.pid, link.path)
                status = await self._relay(process, link, port)
            finally:
                self._link = None
                link.close()
        finally:
            try:
                await _reap(process)
            finally:
                self._process = None
                self._changed()
        if status == RESET_EXIT_STATUS:
            _LOGGER.debug("%s: reset", self.name)
            return True
        _LOGGER.warning("%s: process exited with status %s; needs a power cycle", self.name, status)
        return False

    async def _smp_pty(self, process: asyncio.subprocess.Process) -> str:
        """The SMP pty the process prints; ExeStartError if it exits or is silent too long."""
        assert process.stdout is not None  # internal invariant: stdout=PIPE
        said: list[bytes] = []
        try:
            async with asyncio.timeout(EXE_PTY_TIMEOUT_S):
                while line := await process.stdout.readline():
                    said.append(line)
                    if match := SMP_PTY_LINE.match(line):
                        return match.group(1).decode()
        except TimeoutError:
            pass
        output = b"".join(said).decode(errors="replace").strip()
        raise ExeStartError(
            f"{self.name}: {self.exe} did not report its uart_1 pty within "
            f"{EXE_PTY_TIMEOUT_S:g} s; its output: {output or '(none)'}"
        )

    async def _relay(
        self, process: asyncio.subprocess.Process, link: _PtyEnd, port: Port
    ) -> int | None:
        """Copy the process's SMP output to the slot's port and its stdout to the log, until
        it exits; its exit status."""
        assert process.stdout is not None  # internal invariant: stdout=PIPE
        async with asyncio.TaskGroup() as tg:
            to_host = tg.create_task(self._to_host(link, port), name=f"{self.name} host tx")
            output = tg.create_task(self._log_output(process.stdout), name=f"{self.name} out")
            status = await process.wait()
            to_host.cancel()  # the process is gone, and its pty with it
            output.cancel()
        return status

    async def _to_host(self, link: _PtyEnd, port: Port) -> None:
        while data := await link.read():
            await port.write(data)

    async def _log_output(self, stdout: asyncio.StreamReader) -> None:
        while line := await stdout.readline():
            _LOGGER.debug("%s: %s", self.name, line.decode(errors="replace").rstrip())

    async def _from_host(self, port: Port) -> None:
        """Bytes from the host reach the process when one runs, else they are lost."""
        while True:
            data = await port.read()
            link = self._link
            if link is None or not await link.write(data):
                self.bytes_discarded += len(data)

    # ---- ground truth -------------------------------------------------------------------------

    def truth(self) -> dict[str, object]:
        """The hub's real state read from its flash file, with SimHub.truth()'s keys."""
        flash = read_flash(self.flash)
        primary = read_slot_image(flash, SLOT0)
        secondary = read_slot_image(flash, SLOT1)
        swap = swap_type_of(read_trailer(flash, SLOT0), read_trailer(flash, SLOT1))
        return {
            "guid": str(self.guid),
            "model": str(self.model),
            "active_version": str(primary.version) if primary and primary.version else None,
            "active_sha256": primary.sha256.hex() if primary else None,
            "active_image_hash": primary.tlv_hash.hex() if primary and primary.tlv_hash else None,
            "confirmed": image_is_confirmed(flash),
            "locked": _locked(flash),
            "bricked": self._state is HubState.BRICKED,
            "pending": swap in (SwapType.TEST, SwapType.PERM),
            "secondary_sha256": secondary.sha256.hex() if secondary else None,
            "secondary_image_hash": (
                secondary.tlv_hash.hex() if secondary and secondary.tlv_hash else None
            ),
            "swap_in_progress": False,  # the boot step swaps in one go
            "state": str(self._state),
            "faults": [],
            "rx_lines_dropped": None,  # inside the executable's UART driver: not observable
        }


async def _reap(process: asyncio.subprocess.Process) -> None:
    """Stop `process` (SIGTERM, SIGKILL after EXE_STOP_TIMEOUT_S) and wait for it, even when
    cancelled meanwhile: no process outlives its hub. A cancellation is re-raised after."""
    cancelled = False
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
    timeout_s: float | None = EXE_STOP_TIMEOUT_S
    while process.returncode is None:
        try:
            await asyncio.wait_for(process.wait(), timeout_s)
        except TimeoutError:
            _LOGGER.warning(
                "pid %d: no exit %g s after SIGTERM; killing it", process.pid, timeout_s
            )
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            timeout_s = None
        except asyncio.CancelledError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            cancelled = True
            timeout_s = None
    if cancelled:
        raise asyncio.CancelledError
