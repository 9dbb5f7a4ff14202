"""`jigsim serve`: rigs, hubs from a pallet and an operator, until SIGTERM or SIGINT.

Rigs are serial (a pty per slot) or USB (`usb_rigs`: each slot a device on the simulated USB bus
served on a Unix socket, `sim.usb_bus`). With USB rigs, `<dir>/usb.json` says how to reach them:

    {"schema": "jigsim.usb/1", "backend": "sim+unix:///.../usb.sock", "socket": "...",
     "vendor_id": 12259, "product_id": 256,
     "slots": [{"rig": 2, "slot": 1, "port": "1-2.1"}, ...]}

With `hub_exe` (`--hub-exe`), every hub is a Zephyr native_sim executable in its own process on
its own flash file `<dir>/hubs/<GUID>.bin` (`sim.exe_hub`), behind its slot's pty, with MCUboot's
boot step (`sim.bootloader`) at each power-on and reset; its ground truth is read from its flash.

`jigsim reinsert --dir <dir> GUID...` asks the operator to put pulled hubs back (a hub rejected
before its batch was imported): the request files it leaves in `<dir>/reinsert/`
(`sim.reinsert`) are read every REINSERT_POLL_S. `jigsim move --from <dir> --to OTHER GUID...`
has the operator take hubs to another bench, whose own `jigsim serve` puts them on its pallet
(`sim.move`, `sim.move_desk`).

Ground truth (every hub of the pallet: in a slot, pulled out, or never inserted) is written as
JSON on exit and on SIGUSR1, atomically (a temporary file renamed over the old one):

    {"schema": "jigsim.ground-truth/1", "written_at": "...", "seed": 0,
     "hubs": [{"guid": "00-DB-...", "model": "1086/57310102", "active_version": "04000007",
               "active_sha256": "...", "confirmed": true, "locked": true, "bricked": false,
               "pending": false, "secondary_sha256": "...", "swap_in_progress": false,
               "state": "running", "faults": [], "listed": true,
               "where": "slot" | "removed" | "pallet", "rig": 1, "slot": 3,
               "moved_from": "/abs/other/bench"},      (a hub brought from another bench)
              {"guid": "00-DB-...", "where": "moved", "to": "/abs/other/bench",
               "listed": true}],                        (a hub taken there: its truth is there)
     "missing": ["00-DB-..."]}
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import signal
import sys
import tomllib
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from pydantic import ValidationError

from drivers.framing import FramingName
from jigd.model import DeviceModel, FirmwareVersion
from sim.bootloader import MAX_IMAGE_SIZE
from sim.exe_hub import ExeHub, prepare_flash
from sim.faults import FaultProfile, assign_faults
from sim.files import write_atomically
from sim.harness import image_key_of
from sim.hub import SimHub
from sim.image_check import inspect_image
from sim.images import MASTER_KEYS_FILE, ManufacturerKeys, make_manufacturer_keys, make_signed_image
from sim.move_desk import MoveDesk
from sim.operator import DEFAULT_HANDLING_S, Operator
from sim.pallet import Pallet
from sim.reinsert import take_requests
from sim.rig import Station
from sim.slot_hub import SlotHub
from sim.state import SavedServe, ServeState
from sim.timing import Timing
from sim.usb_bus import UsbBus
from sim.usb_device import SIM_USB_PRODUCT_ID, SIM_USB_VENDOR_ID
from sim.worn import Wear

__all__ = [
    "DEFAULT_SERVE_IMAGE_SIZE",
    "GROUND_TRUTH_SCHEMA",
    "USB_INFO_SCHEMA",
    "KeysError",
    "ServeOptions",
    "TimingFileError",
    "TimingTable",
    "build_exe_hubs",
    "build_hubs",
    "check_exe_options",
    "ground_truth",
    "load_keys",
    "load_timing_table",
    "serve",
    "usb_rigs_for",
    "write_json_atomically",
]

_LOGGER = logging.getLogger(__name__)

GROUND_TRUTH_SCHEMA: Final = "jigsim.ground-truth/1"
USB_INFO_SCHEMA: Final = "jigsim.usb/1"
USB_INFO_FILE: Final = "usb.json"
USB_SOCKET_FILE: Final = "usb.sock"
TRANSPORT_CHOICES: Final = ("serial", "usb", "mixed")
DEFAULT_SERVE_IMAGE_SIZE: Final = 64 * 1024
SHUTDOWN_TIMEOUT_S: Final = 10.0
REINSERT_POLL_S: Final = 0.5  # how often `jigsim reinsert` requests are looked for
EXE_HUBS_DIR: Final = "hubs"  # <dir>/hubs/<GUID>.bin: the flash files of --hub-exe hubs
EXE_FLASH_TEMPLATE: Final = "flash_init.bin"  # looked for beside the executable


class TimingFileError(ValueError):
    """A `--timing` file that does not parse; the message names the file and the key."""


class KeysError(ValueError):
    """Keys in a `--keys` directory that are missing or unusable; the message names the file."""


@dataclass(frozen=True)
class TimingTable:
    """Timing per Device Model, with a default for models not listed."""

    default: Timing = field(default_factory=Timing)
    models: dict[DeviceModel, Timing] = field(default_factory=dict)

    def for_model(self, model: DeviceModel) -> Timing:
        return self.models.get(model, self.default)


def load_timing_table(path: Path, base: Timing) -> TimingTable:
    """Read a `[default]` table and per-model tables (`["1086/57310102"]`) of Timing fields.

    `[default]` is laid over `base` (the command line's timing), and each model's table over
    the default.
    """
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise TimingFileError(f"{path}: cannot read it: {exc.strerror}") from exc
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise TimingFileError(f"{path}: not TOML: {exc}") from exc

    def layer(name: str, under: Timing) -> Timing:
        values = raw[name]
        if not isinstance(values, dict):
            raise TimingFileError(f"{path}: {name}: expected a table of timing fields")
        try:
            return Timing.model_validate({**under.model_dump(), **values})
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()
            )
            raise TimingFileError(f"{path}: [{name}] {problems}") from None

    default = layer("default", base) if "default" in raw else base
    models = {}
    for name in raw:
        if name == "default":
            continue
        try:
            model = DeviceModel.parse(name)
        except ValueError as exc:
            raise TimingFileError(f"{path}: {exc}") from None
        models[model] = layer(name, default)
    return TimingTable(default=default, models=models)


def load_keys(directory: Path, manufacturers: set[int]) -> dict[int, ManufacturerKeys]:
    """Keys as `jigsim keys` writes them: `<MFR>.signing.pem` and `master-keys.toml`."""
    master_path = directory / MASTER_KEYS_FILE
    try:
        masters = tomllib.loads(master_path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise KeysError(f"{master_path}: cannot read it: {exc.strerror}") from exc
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise KeysError(f"{master_path}: not TOML: {exc}") from exc
    keys = {}
    for manufacturer in sorted(manufacturers):
        name = f"{manufacturer:04X}"
        pem_path = directory / f"{name}.signing.pem"
        try:
            private = load_pem_private_key(pem_path.read_bytes(), password=None)
        except OSError as exc:
            raise KeysError(f"{pem_path}: cannot read it: {exc.strerror}") from exc
        except (ValueError, TypeError) as exc:
            raise KeysError(f"{pem_path}: not an unencrypted PEM private key") from exc
        if not isinstance(private, Ed25519PrivateKey):
            raise KeysError(f"{pem_path}: not an Ed25519 key (jigsim keys writes Ed25519)")
        master_hex = masters.get(name, masters.get(name.lower()))
        try:
            master = bytes.fromhex(master_hex) if isinstance(master_hex, str) else b""
        except ValueError:
            master = b""
        if len(master) < 16:
            raise KeysError(f"{master_path}: no usable master key for manufacturer {name}")
        keys[manufacturer] = ManufacturerKeys(
            manufacturer=manufacturer, signing_key=private, master_key=master
        )
    return keys


def _pallet_images(
    pallet: Pallet, keys: dict[int, ManufacturerKeys], image_size: int, seed: int
) -> dict[tuple[DeviceModel, FirmwareVersion], bytes]:
    """Each (Device Model, Firmware Version) image on the pallet, made once with
    `make_signed_image(keys, model, version, image_size, seed)`."""
    images: dict[tuple[DeviceModel, FirmwareVersion], bytes] = {}
    for entry in pallet.hubs:
        image_id = (entry.model, entry.firmware_version)
        if image_id not in images:
            mfr_keys = keys[entry.model.manufacturer]
            images[image_id] = make_signed_image(mfr_keys, *image_id, image_size, seed)
    return images


def build_hubs(
    pallet: Pallet,
    keys: dict[int, ManufacturerKeys],
    timings: TimingTable,
    *,
    framing: FramingName,
    image_size: int,
    image_seed: int,
) -> list[SimHub]:
    """One SimHub per pallet hub, running `make_signed_image(keys, model, version, image_size,
    image_seed)` (so a catalog built with the same arguments holds byte-identical images)."""
    images = {
        image_id: inspect_image(data)
        for image_id, data in _pallet_images(pallet, keys, image_size, image_seed).items()
    }
    hubs = []
    for entry in pallet.hubs:
        mfr_keys = keys[entry.model.manufacturer]
        hubs.append(
            SimHub(
                guid=entry.guid,
                model=entry.model,
                image=images[entry.model, entry.firmware_version],
                master_key=mfr_keys.master_key,
                image_key=image_key_of(mfr_keys),
                timing=timings.for_model(entry.model),
                framing=framing,
                faults=entry.faults,
            )
        )
    return hubs


def check_exe_options(options: ServeOptions) -> Path:
    """What `--hub-exe` needs: serial slots, console framing, images that fit slot 0, the
    executable and its flash template. Returns the template; ValueError naming the problem."""
    exe = options.hub_exe
    if exe is None:
        raise ValueError("no --hub-exe given")
    if options.usb_rigs:
        raise ValueError(
            "--hub-exe: Zephyr hubs are served on serial slots only; drop --transport usb/mixed "
            "and --usb-rigs"
        )
    if options.framing != "console":
        raise ValueError(
            "--hub-exe: Zephyr's UART SMP transport uses console framing; use --framing console"
        )
    if options.image_size > MAX_IMAGE_SIZE:
        raise ValueError(
            f"--hub-exe: --image-size {options.image_size} does not fit slot 0 "
            f"({MAX_IMAGE_SIZE} bytes at most beside MCUboot's trailer)"
        )
    if not exe.is_file() or not os.access(exe, os.X_OK):
        raise ValueError(f"--hub-exe {exe}: not an executable file")
    template = options.hub_flash_init or exe.parent / EXE_FLASH_TEMPLATE
    if not template.is_file():
        raise ValueError(
            f"{template}: no flash template for --hub-exe hubs; give --hub-flash-init FILE "
            f"(the peers' {EXE_FLASH_TEMPLATE})"
        )
    return template


def build_exe_hubs(
    pallet: Pallet,
    keys: dict[int, ManufacturerKeys],
    options: ServeOptions,
    template: Path,
    *,
    keep_flash: bool = False,
) -> list[ExeHub]:
    """One ExeHub per pallet hub, each on a fresh flash file (`template` with the hub's
    `make_signed_image(keys, model, version, image_size, seed)` confirmed in slot 0), or with
    `keep_flash` (a resumed simulator) on the flash file it already has.

    Blocking (files): run it in a worker thread.
    """
    assert options.hub_exe is not None  # internal invariant: checked by check_exe_options
    exe = options.hub_exe.resolve()
    images = _pallet_images(pallet, keys, options.image_size, options.seed)
    hubs = []
    for entry in pallet.hubs:
        mfr_keys = keys[entry.model.manufacturer]
        flash = options.directory / EXE_HUBS_DIR / f"{entry.guid.to_bytes().hex().upper()}.bin"
        if not (keep_flash and flash.is_file()):
            prepare_flash(flash, template, images[entry.model, entry.firmware_version])
        hubs.append(
            ExeHub(
                guid=entry.guid,
                model=entry.model,
                exe=exe,
                flash=flash.resolve(),
                master_key=mfr_keys.master_key,
                image_key=image_key_of(mfr_keys),
            )
        )
    return hubs


def ground_truth(
    pallet: Pallet,
    hubs: Sequence[SlotHub],
    station: Station,
    operator: Operator | None,
    desk: MoveDesk | None = None,
) -> dict[str, object]:
    """Each hub's real state and where it is: the bench's hubs (`hubs`), and with `desk` those
    taken to other benches."""
    where: dict[int, dict[str, object]] = {}
    for rig, slot in station.slots():
        if slot.hub is not None:
            where[id(slot.hub)] = {"where": "slot", "rig": rig.number, "slot": slot.number}
    for hub in operator.removed if operator else []:
        where.setdefault(id(hub), {"where": "removed"})
    listed = {entry.guid: entry.listed for entry in pallet.hubs}
    entries = [
        {
            **hub.truth(),
            **(
                desk.truth_of(str(hub.guid))
                if desk is not None
                else {"listed": listed.get(hub.guid, False)}
            ),
            **where.get(id(hub), {"where": "pallet"}),
        }
        for hub in sorted(hubs, key=lambda h: h.guid)
    ]
    if desk is not None:
        entries += desk.moved_entries()
    truth: dict[str, object] = {
        "schema": GROUND_TRUTH_SCHEMA,
        "written_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "seed": pallet.seed,
        "hubs": entries,
        "missing": [str(row.guid) for row in pallet.missing],
    }
    worn = [
        {"rig": rig.number, "slot": slot.number, "hubs": slot.wear.hubs}
        for rig, slot in station.slots()
        if slot.wear is not None
    ]
    if worn:  # `jigsim serve --worn-slot`
        truth["worn_slots"] = worn
    return truth


def write_json_atomically(path: Path, document: object) -> None:
    write_atomically(path, (json.dumps(document, indent=2) + "\n").encode())


@dataclass(frozen=True)
class ServeOptions:
    directory: Path
    rigs: int
    slots: int
    pallet: Pallet
    timings: TimingTable
    framing: FramingName = "raw"
    image_size: int = DEFAULT_SERVE_IMAGE_SIZE
    seed: int = 0
    keys_dir: Path | None = None
    ground_truth: Path | None = None
    handling_s: float = DEFAULT_HANDLING_S
    fault_profile: FaultProfile | None = None
    outage_rig: int = 1  # the rig SIGUSR2 takes off the host, and brings back on the next one
    worn_slot: tuple[int, int] | None = None  # (rig, slot) whose link wears with use (sim.worn)
    usb_rigs: frozenset[int] = frozenset()  # rigs whose slots are USB devices
    usb_socket: Path | None = None  # default <directory>/usb.sock
    usb_vendor_id: int = SIM_USB_VENDOR_ID
    usb_product_id: int = SIM_USB_PRODUCT_ID
    hub_exe: Path | None = None  # every hub runs this Zephyr native_sim executable
    hub_flash_init: Path | None = None  # its flash template; default flash_init.bin beside it
    # Broken controller parts per (rig, slot), for the rig self-test (sim.rig.parse_breaks).
    breaks: dict[tuple[int, int], frozenset[str]] = field(default_factory=dict)


def usb_rigs_for(transport: str, rigs: int) -> frozenset[int]:
    """The USB rigs of `jigsim serve --transport`: none (serial), all (usb), or the even ones
    (mixed: odd rigs serial, even rigs USB)."""
    if transport == "serial":
        return frozenset()
    if transport == "usb":
        return frozenset(range(1, rigs + 1))
    if transport == "mixed":
        return frozenset(range(2, rigs + 1, 2))
    raise ValueError(f"unknown transport {transport!r}; use one of {', '.join(TRANSPORT_CHOICES)}")


def usb_info(bus: UsbBus, station: Station) -> dict[str, object]:
    """What `<dir>/usb.json` holds: how a station reaches the USB slots."""
    return {
        "schema": USB_INFO_SCHEMA,
        "backend": bus.url,
        "socket": str(bus.socket_path.resolve()),
        "vendor_id": bus.vendor_id,
        "product_id": bus.product_id,
        "slots": [
            {"rig": rig.number, "slot": slot.number, "port": slot.port.path}
            for rig, slot in station.slots()
            if rig.usb
        ],
    }


def _usb_bus(options: ServeOptions) -> UsbBus | None:
    if not options.usb_rigs:
        return None
    return UsbBus(
        options.usb_socket or options.directory / USB_SOCKET_FILE,
        vendor_id=options.usb_vendor_id,
        product_id=options.usb_product_id,
    )


async def _start(
    stack: AsyncExitStack, bus: UsbBus | None, station: Station, directory: Path
) -> None:
    """Serve the USB bus (before the rigs attach their devices to it), then the rigs."""
    if bus is not None:
        await stack.enter_async_context(bus)
    await stack.enter_async_context(station)
    if bus is not None:
        write_json_atomically(directory / USB_INFO_FILE, usb_info(bus, station))


def _announce(options: ServeOptions, hubs: int, bus: UsbBus | None, station: Station) -> None:
    """The ready line (a starter waits for it), then where the USB slots are."""
    print(
        f"jigsim: serving {options.rigs} rig(s) x {options.slots} slot(s) under "
        f"{options.directory}, {hubs} hub(s) on the pallet",
        flush=True,
    )
    if options.hub_exe is not None:
        print(
            f"jigsim: hubs run {options.hub_exe} (flash files under "
            f"{options.directory / EXE_HUBS_DIR}); no faults are injected",
            flush=True,
        )
    if bus is None:
        return
    print(
        f"jigsim: USB rigs on {bus.url} (usb_backend), idVendor 0x{bus.vendor_id:04x}, "
        f"idProduct 0x{bus.product_id:04x}",
        flush=True,
    )
    for rig in station.rigs:
        if rig.usb:
            ports = " ".join(f"slot{slot.number}={slot.port.path}" for slot in rig.slots)
            print(f"jigsim: rig {rig.number} USB ports: {ports}", flush=True)


def _bench(options: ServeOptions, bus: UsbBus | None) -> Station:
    """The rigs, with the slot of `--worn-slot` worn, seeded by `--seed` (ValueError if there
    is no such slot)."""
    station = Station(
        options.directory,
        options.rigs,
        options.slots,
        usb_rigs=options.usb_rigs,
        usb_bus=bus,
        breaks=options.breaks,
    )
    if options.worn_slot is None:
        return station
    rig, number = options.worn_slot
    if not 1 <= rig <= len(station.rigs):
        raise ValueError(f"--worn-slot {rig}/{number}: there is no rig {rig}")
    slot = station.rigs[rig - 1].slot(number)
    slot.wear = Wear(seed=options.seed)
    _LOGGER.info("%s is worn: its link gets worse with every hub", slot.name)
    return station


def _apply_profile(pallet: Pallet, profile: FaultProfile | None) -> Pallet:
    if profile is None:
        return pallet
    hubs = [
        h.model_copy(update={"faults": assign_faults(profile, pallet.seed, str(h.guid))})
        for h in pallet.hubs
    ]
    return pallet.model_copy(update={"hubs": hubs, "fault_profile": profile})


async def _build(
    options: ServeOptions, pallet: Pallet, keys: dict[int, ManufacturerKeys], state: ServeState
) -> tuple[Sequence[SlotHub], SavedServe | None]:
    """The pallet's hubs (simulated, or Zephyr executables with `hub_exe`), and the saved
    bench when `state` has one (its hubs' flash laid over them)."""
    resume = state.exists
    hubs = await _new_hubs(options, pallet, keys, resume=resume)
    saved = await asyncio.to_thread(state.load, hubs) if resume else None
    return hubs, saved


async def _new_hubs(
    options: ServeOptions, pallet: Pallet, keys: dict[int, ManufacturerKeys], *, resume: bool
) -> Sequence[SlotHub]:
    if options.hub_exe is None:
        return await asyncio.to_thread(
            build_hubs,
            pallet,
            keys,
            options.timings,
            framing=options.framing,
            image_size=options.image_size,
            image_seed=options.seed,
        )
    template = check_exe_options(options)
    faulty = sum(1 for h in pallet.hubs if h.faults.names())
    if faulty:
        _LOGGER.warning("--hub-exe: faults are not injected; %d hub(s) run without", faulty)
    return await asyncio.to_thread(
        functools.partial(build_exe_hubs, pallet, keys, options, template, keep_flash=resume)
    )


def _keep_state(
    state: ServeState, saved: SavedServe | None, operator: Operator, desk: MoveDesk
) -> None:
    """Put the saved bench back, if any (hubs in their slots, pulled hubs on the removed
    pile), and save the hubs' flash and the operator's moves from now on."""
    if saved is not None:
        _resume(state, saved, operator, desk.hubs)
    state.watch(desk.hubs)
    desk.operator = operator
    desk.save = functools.partial(_save_serve, state, operator, desk)
    operator.on_change = desk.save
    desk.save()


def _resume(
    state: ServeState, saved: SavedServe, operator: Operator, hubs: Sequence[SlotHub]
) -> None:
    """Put the saved bench back: hubs in their slots, pulled hubs on the removed pile."""
    by_guid = {str(hub.guid): hub for hub in hubs}
    operator.restore(
        [(by_guid[guid], rig, slot) for guid, rig, slot in saved.slots if guid in by_guid],
        [by_guid[guid] for guid in saved.removed if guid in by_guid],
    )
    _LOGGER.warning(
        "resumed from %s: %d hub(s) in slots, %d pulled, %d still on the pallet",
        state.root,
        len(operator.placed),
        len(operator.removed),
        len(operator.pallet),
    )


def _save_serve(state: ServeState, operator: Operator, desk: MoveDesk) -> None:
    state.save_serve(
        [(str(hub.guid), p.rig.number, p.slot.number) for hub, p in operator.placed.items()],
        operator.removed,
        desk.moved_out,
    )


async def _operate(operator: Operator, directory: Path, desk: MoveDesk) -> None:
    """The operator at work, taking `jigsim reinsert` and `jigsim move` requests, until
    cancelled."""
    async with asyncio.TaskGroup() as group:
        group.create_task(operator.run(forever=True), name="operator")
        group.create_task(_take_reinserts(operator, directory), name="re-insert requests")
        group.create_task(desk.run(), name="moves")


async def _take_reinserts(operator: Operator, directory: Path) -> None:
    """Hand the GUIDs of `jigsim reinsert` requests (sim/reinsert.py) to the operator."""
    while True:
        guids = await asyncio.to_thread(take_requests, directory)
        if guids:
            unknown = operator.reinsert(guids)
            if unknown:
                _LOGGER.warning("re-insert: not on this bench: %s", ", ".join(unknown))
        await asyncio.sleep(REINSERT_POLL_S)


def _pallet_keys(options: ServeOptions, pallet: Pallet) -> dict[int, ManufacturerKeys]:
    manufacturers = {h.model.manufacturer for h in pallet.hubs}
    if options.keys_dir is not None:
        return load_keys(options.keys_dir, manufacturers)
    return {m: make_manufacturer_keys(m, options.seed) for m in manufacturers}


def _desk(
    options: ServeOptions, pallet: Pallet, keys: dict[int, ManufacturerKeys], state: ServeState
) -> MoveDesk:
    """The bench's side of moves; a hub brought in of a manufacturer not on the pallet takes
    its keys from `--keys` (or the seed), as the pallet's hubs do."""

    def keys_for(manufacturer: int) -> ManufacturerKeys:
        if manufacturer not in keys:
            keys[manufacturer] = (
                load_keys(options.keys_dir, {manufacturer})[manufacturer]
                if options.keys_dir is not None
                else make_manufacturer_keys(manufacturer, options.seed)
            )
        return keys[manufacturer]

    return MoveDesk(
        options.directory,
        state,
        pallet,
        keys_for=keys_for,
        timing_for=options.timings.for_model,
        framing=options.framing,
    )


async def serve(options: ServeOptions) -> int:
    """Run until SIGTERM/SIGINT; return the exit code."""
    pallet = _apply_profile(options.pallet, options.fault_profile)
    keys = _pallet_keys(options, pallet)
    state = ServeState(options.directory, pallet)
    hubs, saved = await _build(options, pallet, keys, state)
    desk = _desk(options, pallet, keys, state)
    await asyncio.to_thread(desk.resume, hubs, saved.moved_out if saved else {})
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    bus = _usb_bus(options)
    station = _bench(options, bus)

    def write_truth() -> None:
        if options.ground_truth is None:
            return
        truth = ground_truth(pallet, desk.hubs, station, operator, desk)
        write_json_atomically(options.ground_truth, truth)
        _LOGGER.info("ground truth written to %s", options.ground_truth)

    outages: set[asyncio.Task[None]] = set()

    def toggle_outage() -> None:
        """SIGUSR2: the outage rig's controller and slot ports vanish, or come back."""
        if not 1 <= options.outage_rig <= len(station.rigs):
            _LOGGER.error("SIGUSR2: there is no rig %d", options.outage_rig)
            return
        rig = station.rigs[options.outage_rig - 1]
        change = rig.vanish() if rig.present else rig.reappear()
        _LOGGER.warning("rig %d: %s", options.outage_rig, "vanishing" if rig.present else "back")
        task = loop.create_task(change, name=f"outage rig {options.outage_rig}")
        outages.add(task)
        task.add_done_callback(outages.discard)

    handlers = {
        signal.SIGTERM: stop.set,
        signal.SIGINT: stop.set,
        signal.SIGUSR1: write_truth,
        signal.SIGUSR2: toggle_outage,
    }
    for signum, handler in handlers.items():
        loop.add_signal_handler(signum, handler)
    operator = Operator(station.rigs, desk.hubs, handling_s=options.handling_s)
    work: asyncio.Task[None] | None = None
    try:
        async with AsyncExitStack() as stack:
            await _start(stack, bus, station, options.directory)
            _keep_state(state, saved, operator, desk)
            work = loop.create_task(_operate(operator, options.directory, desk), name="operator")
            _announce(options, len(desk.hubs), bus, station)
            await stop.wait()
            _LOGGER.info("stopping")
            work.cancel()
            await asyncio.wait([work, *outages], timeout=SHUTDOWN_TIMEOUT_S)
            write_truth()
    finally:
        for signum in handlers:
            loop.remove_signal_handler(signum)
    errors = station.errors
    for error in errors:
        print(f"jigsim: internal error: {error!r}", file=sys.stderr)
    if work is not None and work.done() and not work.cancelled() and work.exception():
        print(f"jigsim: operator failed: {work.exception()!r}", file=sys.stderr)
        return 1
    return 1 if errors else 0
