"""The demo's work directory: its options, paths, keys, catalog, pallet and the daemon's config
(jigd.toml, a `jigd.config.StationConfig` written as TOML)."""

from __future__ import annotations

import os
import random
import secrets
import shutil
import tempfile
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Final

from firmware_catalog import Catalog, Status
from jigd.config import (
    MqttConfig,
    RetryConfig,
    RigConfig,
    SecretsConfig,
    SlotConfig,
    StationConfig,
    StoreConfig,
    TimeoutConfig,
    WebConfig,
)
from jigd.model import DeviceModel, FirmwareVersion
from jigd.mqtt_settings import parse_mqtt_url
from jigd.store import resolve_store_url
from sim.bootloader import MAX_IMAGE_SIZE
from sim.images import make_manufacturer_keys, make_signed_image, write_keys
from sim.pallet import Pallet, make_pallet, write_pallet
from sim.serve import USB_SOCKET_FILE, usb_rigs_for
from sim.usb_device import SIM_USB_PRODUCT_ID, SIM_USB_VENDOR_ID

__all__ = [
    "STATION",
    "DemoOptions",
    "Paths",
    "demo_config",
    "demo_options_from",
    "prepare",
    "prepare_bench",
    "write_config",
    "write_token",
]

DEFAULT_MODELS: Final = (DeviceModel(0x1086, 0x57310102), DeviceModel(0x1086, 0x57310201))
LATEST: Final = FirmwareVersion(0x04000007)
PREVIOUS: Final = FirmwareVersion(0x04000006)
MAX_SLOTS_PER_RIG: Final = 8
DEFAULT_IMAGE_SIZE: Final = 256 * 1024
EXE_IMAGE_SIZE: Final = 64 * 1024  # --hub-exe: well inside the Zephyr hubs' slots
STATION: Final = "demo"  # the demo's station name (one station; a site's are demo-1, demo-2, ...)
WORN_SLOT: Final = "worn-slot"  # --faults: healthy hubs, one slot of the bench worn (sim.worn)


@dataclass(frozen=True)
class DemoOptions:
    hubs: int = 96
    rigs: int = 3
    slots: int = 8  # per rig, 1 to MAX_SLOTS_PER_RIG
    faults: str = "light"
    seed: int = 1
    workdir: Path = Path("jigd-demo")
    image_size: int = DEFAULT_IMAGE_SIZE
    baud: int = 921600
    framing: str = "raw"
    handling_s: float = 0.25
    timeout_s: float = 1800.0
    missing: int | None = None
    extra: int | None = None
    current: int | None = None
    live: bool = True  # redraw the slot table when stdout is a terminal (else progress lines)
    mqtt: MqttConfig | None = None  # publish to this broker (`--mqtt URL`); None: outbox only
    transport: str = "serial"  # serial | usb | mixed (odd rigs serial, even rigs USB)
    metrics_port: int | None = None  # serve /metrics on 127.0.0.1:N
    web_port: int | None = None  # serve the web view on 127.0.0.1:N (token in Paths.web_token)
    store_url: str | None = None  # the daemon's [store] url; None: a SQLite file in the workdir
    outbox_drain_s: float = 15.0  # with mqtt: how long to wait for the last messages at the end
    hub_exe: Path | None = None  # hubs run this Zephyr native_sim executable (jigsim --hub-exe)
    # Start the simulator before the import and import once this many of the batch's hubs were
    # rejected (`not_in_batch`); the demo then has the operator re-insert the set-aside hubs.
    load_early: int = 0
    # Stations on one PostgreSQL store and one batch (jigd.demo.site); 1: one station, as ever.
    stations: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.slots <= MAX_SLOTS_PER_RIG:
            raise ValueError(f"slots per rig must be 1 to {MAX_SLOTS_PER_RIG}, not {self.slots}")
        usb_rigs_for(self.transport, self.rigs)  # ValueError naming the choices if unknown
        if not 0 <= self.load_early <= self.hubs // 2:
            raise ValueError(
                f"--load-early {self.load_early}: give 0 to half the hubs ({self.hubs // 2})"
            )
        if self.hub_exe is not None:
            _check_exe_options(self)
        if self.stations > 1:
            _check_site_options(self)

    @property
    def hub_faults(self) -> str:
        """The pallet's fault profile: a worn slot's hubs are themselves healthy."""
        return "none" if self.faults == WORN_SLOT else self.faults

    @property
    def worn_slot(self) -> tuple[int, int] | None:
        """With `--faults worn-slot`, the (rig, slot) that is worn: a slot of rig 1 drawn from
        the seed (the simulated operator fills the first rig's free slots first, so that one
        gets hubs)."""
        if self.faults != WORN_SLOT:
            return None
        draw = random.Random(f"jigd demo worn slot {self.seed}")  # noqa: S311 - not crypto
        return 1, draw.randint(1, self.slots)

    @property
    def usb_rigs(self) -> frozenset[int]:
        """The rigs whose slots are USB devices on the simulator's USB bus."""
        return usb_rigs_for(self.transport, self.rigs)


def _check_exe_options(options: DemoOptions) -> None:
    """Zephyr hubs are serial, speak console framing, have no injected faults, and hold
    images that fit their slots."""
    if options.hub_exe is not None and not options.hub_exe.is_file():
        raise ValueError(f"--hub-exe {options.hub_exe}: no such executable")
    if options.transport != "serial":
        raise ValueError("--hub-exe: Zephyr hubs are on serial slots; drop --transport")
    if options.framing != "console":
        raise ValueError("--hub-exe: Zephyr hubs speak console framing; drop --framing raw")
    if options.faults != "none":
        raise ValueError("--hub-exe: no faults are injected into Zephyr hubs; drop --faults")
    if not 1024 <= options.image_size <= MAX_IMAGE_SIZE:
        raise ValueError(
            f"--hub-exe: --image-size must be 1024 to {MAX_IMAGE_SIZE} (the Zephyr hubs' slot "
            "size less MCUboot's trailer)"
        )


def _check_site_options(options: DemoOptions) -> None:
    """Several stations share one PostgreSQL store; the options a site demo does not do."""
    scheme = (options.store_url or "postgresql:").split(":", 1)[0]
    if scheme not in ("postgresql", "postgres"):
        raise ValueError(
            f"--stations {options.stations}: the stations share one store, which must be "
            "PostgreSQL (--store postgresql://...; without --store the demo starts its own)"
        )
    if options.load_early:
        raise ValueError(
            f"--load-early is for one station; drop it or --stations {options.stations}"
        )
    if options.hub_exe is not None:
        raise ValueError(f"--hub-exe is for one station; drop it or --stations {options.stations}")
    if options.hubs < options.stations:
        raise ValueError(f"--hubs {options.hubs}: give each of the {options.stations} stations one")


@dataclass
class Paths:
    root: Path

    @property
    def keys(self) -> Path:
        return self.root / "keys"

    @property
    def catalog(self) -> Path:
        return self.root / "catalog"

    @property
    def sim(self) -> Path:
        return self.root / "sim"

    @property
    def config(self) -> Path:
        return self.root / "jigd.toml"

    @property
    def pallet(self) -> Path:
        return self.root / "pallet.json"

    @property
    def manifest(self) -> Path:
        return self.root / "pallet.manifest.csv"

    @property
    def socket(self) -> Path:
        return self.root / "run" / "control.sock"

    @property
    def store(self) -> Path:
        return self.root / "state" / "jigd.sqlite3"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def web_token(self) -> Path:
        return self.root / "web-token"

    @property
    def ground_truth(self) -> Path:
        return self.root / "ground-truth.json"


def prepare(options: DemoOptions, paths: Paths) -> Pallet:
    """Keys, a catalog of freshly signed images, a pallet with its manifest, and a config."""
    pallet = prepare_bench(options, paths)
    if options.web_port is not None:
        write_token(paths.web_token)
    write_config(options, paths)
    return pallet


def prepare_bench(options: DemoOptions, paths: Paths) -> Pallet:
    """Keys, a catalog of freshly signed images, a pallet with its manifest (under
    `paths.root`, whatever was there before removed)."""
    for stale in ("catalog", "state", "run", "reports", "sim", "keys"):
        shutil.rmtree(paths.root / stale, ignore_errors=True)
    paths.root.mkdir(parents=True, exist_ok=True)
    manufacturers = sorted({m.manufacturer for m in DEFAULT_MODELS})
    keys = {m: make_manufacturer_keys(m, options.seed) for m in manufacturers}
    write_keys(paths.keys, list(keys.values()))
    (paths.catalog / "keys").mkdir(parents=True)
    for m, mk in keys.items():
        (paths.catalog / "keys" / f"{m:04X}.pem").write_bytes(mk.public_pem())
    catalog = Catalog.open(paths.catalog)
    with tempfile.TemporaryDirectory() as tmp:
        for model in DEFAULT_MODELS:
            for version, status in ((PREVIOUS, Status.PRODUCTION), (LATEST, Status.PRODUCTION)):
                # The same size and seed as `jigsim serve` uses, so hubs already on the latest
                # firmware hold byte-identical images (and are `already_current`).
                image = make_signed_image(
                    keys[model.manufacturer], model, version, options.image_size, options.seed
                )
                path = Path(tmp) / f"{model.model_hex}-{version}.bin"
                path.write_bytes(image)
                catalog.add(path, model, version, status, date(2026, 1, 31), notes="demo")
    pallet = make_pallet(
        options.hubs,
        seed=options.seed,
        missing=options.missing,
        extra=options.extra,
        current=options.current,
        models=DEFAULT_MODELS,
        latest=dict.fromkeys(DEFAULT_MODELS, LATEST),
        fault_profile=options.hub_faults,
    )
    write_pallet(pallet, paths.pallet, paths.manifest)
    return pallet


def write_token(path: Path) -> None:
    """A new random web token, in a file only its owner reads (0600 from the start)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(secrets.token_urlsafe(32) + "\n")


def write_config(
    options: DemoOptions, paths: Paths, *, station: str = STATION, shared: Paths | None = None
) -> StationConfig:
    """Write the daemon's configuration to `paths.config`; the config it holds."""
    config = demo_config(options, paths, station=station, shared=shared)
    paths.config.write_text(
        config.to_toml("Written by `jigd demo`: a station driving simulated rigs."),
        encoding="utf-8",
    )
    return config


def _slot(options: DemoOptions, sim: Path, rig: int, slot: int) -> SlotConfig:
    """A USB rig's slot is a device on the simulator's USB bus, a serial rig's a pty."""
    if rig in options.usb_rigs:
        return SlotConfig(
            slot=slot,
            transport="usb",
            port=f"1-{rig}.{slot}",
            usb_vendor_id=SIM_USB_VENDOR_ID,
            usb_product_id=SIM_USB_PRODUCT_ID,
            usb_backend=f"sim+unix://{sim / USB_SOCKET_FILE}",
        )
    port = str(sim / f"rig{rig}" / f"slot{slot}")
    framing = {"framing": options.framing}  # validated as the config's choices
    return SlotConfig.model_validate(
        {"slot": slot, "port": port, **framing, "baudrate": options.baud}
    )


def demo_config(
    options: DemoOptions, paths: Paths, *, station: str = STATION, shared: Paths | None = None
) -> StationConfig:
    """The daemon's configuration: a station driving the simulator's rigs. Its keys, catalog
    and web token are under `shared` (the site's, when several stations share them), else
    under `paths` with the rest."""
    where = Paths(paths.root.resolve())  # the daemon may run in another directory
    common = Paths((shared or paths).root.resolve())
    sim = where.sim
    rigs = [
        RigConfig(
            rig=rig,
            controller=str(sim / f"rig{rig}" / "ctl"),
            slots=[_slot(options, sim, rig, slot) for slot in range(1, options.slots + 1)],
        )
        for rig in range(1, options.rigs + 1)
    ]
    extra: dict[str, Any] = {}
    if options.metrics_port is not None:
        extra["metrics_port"] = options.metrics_port
    if options.mqtt is not None:
        extra["mqtt"] = options.mqtt.model_copy(update={"enabled": True})
    if options.store_url is not None:
        extra["store"] = StoreConfig(url=options.store_url)
    else:
        extra["store_path"] = where.store
    if options.web_port is not None:
        extra["web"] = WebConfig(
            listen=f"127.0.0.1:{options.web_port}", token_file=common.web_token
        )
    return StationConfig(
        station=station,
        catalog_dir=common.catalog,
        control_socket=where.socket,
        **extra,
        secrets=SecretsConfig(master_keys_file=common.keys / "master-keys.toml"),
        # The boot waits are the defaults' (docs/install.md, "Retries"): a dead hub's cost
        # shows as on a bench.
        timeouts=TimeoutConfig(
            request_s=1.0,
            stage_s=30.0,
            shutdown_s=20.0,  # within the demo's STOP_TIMEOUT_S before it kills the daemon
        ),
        retries=RetryConfig(stage_attempts=3, rig_reconnect_max_s=2.0),
        rigs=rigs,
    )


def demo_options_from(args: Any) -> DemoOptions:
    hub_exe = Path(args.hub_exe) if args.hub_exe else None
    exe_mode = hub_exe is not None
    return DemoOptions(
        hubs=args.hubs,
        rigs=args.rigs,
        faults=args.faults or ("none" if exe_mode else "light"),
        seed=args.seed,
        workdir=Path(args.workdir),
        image_size=args.image_size or (EXE_IMAGE_SIZE if exe_mode else DEFAULT_IMAGE_SIZE),
        baud=args.baud,
        framing=args.framing or ("console" if exe_mode else "raw"),
        mqtt=parse_mqtt_url(args.mqtt) if args.mqtt is not None else None,
        transport=args.transport,
        metrics_port=args.metrics_port,
        web_port=args.web_port,
        store_url=None if args.store is None else resolve_store_url(args.store, Path.cwd()),
        hub_exe=hub_exe,
        load_early=args.load_early,
        stations=args.stations,
    )
