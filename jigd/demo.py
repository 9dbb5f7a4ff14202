"""`jigd demo`: a whole station on the simulator, from nothing, with the books checked at the end.

Three processes, as on a real bench: the simulator (`jigsim serve`: rigs, hubs, an operator
feeding a pallet), the daemon (`jigd run`) and this orchestrator, which talks to the daemon only
through its control API, as `jigctl` does. Everything goes under the work directory:

    jigd.toml            the config the daemon ran with
    keys/                manufacturer signing keys, public keys, master-keys.toml (0600)
    catalog/             freshly signed images, as `jigd catalog add` writes them
    pallet.json, pallet.manifest.csv
    state/jigd.sqlite3   the daemon's store
    reports/             summary.json, results.csv, smi-update.csv, fault-analysis.csv
    ground-truth.json    every simulated hub's real final state
    jigd.log, jigsim.log

With `--hub-exe PATH` the simulator's hubs are Zephyr native_sim processes (`jigsim serve
--hub-exe`): serial slots with console framing, no injected faults, images of 64 KiB by default
(they must fit the executable's 0x69000-byte slots beside MCUboot's trailer).

The books balance when every manifest GUID has exactly one outcome, every `reflashed` or
`already_current` hub really runs that version confirmed and locked, `smi-update.csv` is exactly
the `reflashed` set, `fault-analysis.csv` exactly the `failed` set, GUIDs missing from the pallet
are `not_received`, and every unlisted hub was rejected and left untouched.
"""

from __future__ import annotations

import asyncio
import csv
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Final

from firmware_catalog import Catalog, Status
from jigd.config import MqttConfig
from jigd.ctl import ControlClient, ControlError, render_status
from jigd.model import DeviceModel, FirmwareVersion
from jigd.mqtt import parse_mqtt_url
from sim.bootloader import MAX_IMAGE_SIZE
from sim.images import make_manufacturer_keys, make_signed_image, write_keys
from sim.pallet import Pallet, make_pallet, write_pallet
from sim.serve import USB_INFO_FILE, USB_SOCKET_FILE, usb_rigs_for
from sim.usb_device import SIM_USB_PRODUCT_ID, SIM_USB_VENDOR_ID

__all__ = ["DemoOptions", "DemoRun", "check_books", "run_demo"]

DEFAULT_MODELS: Final = (DeviceModel(0x1086, 0x57310102), DeviceModel(0x1086, 0x57310201))
LATEST: Final = FirmwareVersion(0x04000007)
PREVIOUS: Final = FirmwareVersion(0x04000006)
MAX_SLOTS_PER_RIG: Final = 8
START_TIMEOUT_S: Final = 30.0
STOP_TIMEOUT_S: Final = 30.0
POLL_S: Final = 1.0
# A stopped daemon is taken for a crash only if no `during` hook has restarted it by then.
RESTART_GRACE_S: Final = 5.0
DEFAULT_IMAGE_SIZE: Final = 256 * 1024
EXE_IMAGE_SIZE: Final = 64 * 1024  # --hub-exe: well inside the Zephyr hubs' slots


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
    outbox_drain_s: float = 15.0  # with mqtt: how long to wait for the last messages at the end
    hub_exe: Path | None = None  # hubs run this Zephyr native_sim executable (jigsim --hub-exe)

    def __post_init__(self) -> None:
        if not 1 <= self.slots <= MAX_SLOTS_PER_RIG:
            raise ValueError(f"slots per rig must be 1 to {MAX_SLOTS_PER_RIG}, not {self.slots}")
        usb_rigs_for(self.transport, self.rigs)  # ValueError naming the choices if unknown
        if self.hub_exe is not None:
            _check_exe_options(self)

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
    def ground_truth(self) -> Path:
        return self.root / "ground-truth.json"


def prepare(options: DemoOptions, paths: Paths) -> Pallet:
    """Keys, a catalog of freshly signed images, a pallet with its manifest, and a config."""
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
        fault_profile=options.faults,
    )
    write_pallet(pallet, paths.pallet, paths.manifest)
    paths.config.write_text(config_text(options, paths), encoding="utf-8")
    return pallet


def config_text(options: DemoOptions, paths: Paths) -> str:
    root = paths.root.resolve()
    lines = [
        "# Written by `jigd demo`: a station driving simulated rigs.",
        'station = "demo"',
        f'catalog_dir = "{root / "catalog"}"',
        f'store_path = "{root / "state" / "jigd.sqlite3"}"',
        f'control_socket = "{root / "run" / "control.sock"}"',
    ]
    if options.metrics_port is not None:
        lines.append(f"metrics_port = {options.metrics_port}")
    lines += [
        "",
        "[secrets]",
        f'master_keys_file = "{root / "keys" / "master-keys.toml"}"',
        "",
        "[timeouts]",
        "request_s = 1.0",
        "boot_s = 10.0",
        "swap_s = 10.0",
        "stage_s = 30.0",
        "shutdown_s = 20.0",  # within the demo's STOP_TIMEOUT_S before it kills the daemon
        "",
        "[retries]",
        "stage_attempts = 3",
        "rig_reconnect_max_s = 2.0",
    ]
    if options.mqtt is not None:
        lines += ["", *_mqtt_section(options.mqtt)]
    for rig in range(1, options.rigs + 1):
        lines += [
            "",
            "[[rigs]]",
            f"rig = {rig}",
            f'controller = "{root / "sim" / f"rig{rig}" / "ctl"}"',
        ]
        lines.append("slots = [")
        for slot in range(1, options.slots + 1):
            if rig in options.usb_rigs:
                lines.append(
                    f'    {{ slot = {slot}, transport = "usb", port = "1-{rig}.{slot}", '
                    f"usb_vendor_id = 0x{SIM_USB_VENDOR_ID:04x}, "
                    f"usb_product_id = 0x{SIM_USB_PRODUCT_ID:04x}, "
                    f'usb_backend = "sim+unix://{root / "sim" / USB_SOCKET_FILE}" }},'
                )
                continue
            port = root / "sim" / f"rig{rig}" / f"slot{slot}"
            lines.append(
                f'    {{ slot = {slot}, port = "{port}", framing = "{options.framing}", '
                f"baudrate = {options.baud} }},"
            )
        lines.append("]")
    return "\n".join(lines) + "\n"


@dataclass
class Process:
    """A child process whose output goes to a log file."""

    name: str
    argv: list[str]
    log: Path
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.popen = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.running and self.popen is not None:
            self.popen.send_signal(sig)

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM, then SIGKILL after `timeout_s`; the exit code."""
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        return self.popen.returncode

    def kill(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()


def sim_process(options: DemoOptions, paths: Paths) -> Process:
    argv = [
        sys.executable, "-m", "sim.cli", "serve",
        "--dir", str(paths.sim),
        "--rigs", str(options.rigs),
        "--slots", str(options.slots),
        "--pallet", str(paths.pallet),
        "--faults", options.faults,
        "--seed", str(options.seed),
        "--ground-truth", str(paths.ground_truth),
        "--keys", str(paths.keys),
        "--image-size", str(options.image_size),
        "--framing", options.framing,
        "--handling-s", str(options.handling_s),
        "--baud", str(options.baud),
        "--transport", options.transport,
    ]  # fmt: skip
    if options.hub_exe is not None:
        argv += ["--hub-exe", str(options.hub_exe.resolve())]
    return Process("jigsim", argv, paths.root / "jigsim.log")


def daemon_process(paths: Paths) -> Process:
    argv = [sys.executable, "-m", "jigd.cli", "run", "--config", str(paths.config)]
    return Process("jigd", argv, paths.root / "jigd.log")


def rig_paths(options: DemoOptions, paths: Paths) -> list[Path]:
    """Every rig controller and slot pty the simulator publishes, and its USB bus's `usb.json`
    when some rigs are USB: the simulator is ready when all exist."""
    slots = [f"slot{slot}" for slot in range(1, options.slots + 1)]
    found = [
        paths.sim / f"rig{rig}" / name
        for rig in range(1, options.rigs + 1)
        for name in ("ctl", *([] if rig in options.usb_rigs else slots))
    ]
    return [*found, paths.sim / USB_INFO_FILE] if options.usb_rigs else found


async def wait_for_paths(paths: Sequence[Path], process: Process, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not all(p.exists() for p in paths):
        if not process.running:
            raise RuntimeError(f"{process.name} exited at start; see {process.log}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{process.name} did not start within {timeout_s:g} s")
        await asyncio.sleep(0.05)


async def wait_for_daemon(client: ControlClient, process: Process, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if not process.running:
            raise RuntimeError(f"jigd exited at start; see {process.log}")
        try:
            await client.request("GET", "/v1/status")
        except ControlError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"jigd did not answer within {timeout_s:g} s") from None
            await asyncio.sleep(0.1)
        else:
            return


@dataclass
class DemoRun:
    """A demo in progress: its processes and what it knows."""

    options: DemoOptions
    paths: Paths
    pallet: Pallet
    sim: Process
    daemon: Process
    client: ControlClient
    batch_id: str = ""
    rejected_expected: set[str] = field(default_factory=set)
    seen_expected: set[str] = field(default_factory=set)

    async def start_daemon(self) -> None:
        self.daemon = daemon_process(self.paths)
        self.daemon.start()
        await wait_for_daemon(self.client, self.daemon, START_TIMEOUT_S)

    async def progress(self) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        batch = await self.client.request("GET", f"/v1/batches/{self.batch_id}")
        rejected = (await self.client.request("GET", "/v1/rejected"))["rejected"]
        return batch, rejected

    async def finished(self) -> bool:
        """Every pallet hub of the batch has its outcome and every unlisted hub was rejected."""
        batch, rejected = await self.progress()
        done = batch["expected"] - batch["pending"]
        rejected_guids = {r["guid"] for r in rejected}
        return done >= len(self.seen_expected) and self.rejected_expected <= rejected_guids


async def run_demo(
    options: DemoOptions,
    *,
    show: Callable[[str], None] = print,
    during: Callable[[DemoRun], Any] | None = None,
) -> int:
    """Run the demo; 0 when the books balance, 1 when they do not."""
    paths = Paths(options.workdir)
    show(f"jigd demo: preparing {paths.root} (keys, catalog, pallet of {options.hubs} hubs)")
    pallet = await asyncio.to_thread(prepare, options, paths)
    client = ControlClient(paths.socket)
    run = DemoRun(
        options, paths, pallet, sim_process(options, paths), daemon_process(paths), client
    )
    run.rejected_expected = {str(h.guid) for h in pallet.hubs if not h.listed}
    run.seen_expected = {str(h.guid) for h in pallet.hubs if h.listed}
    ctl_paths = rig_paths(options, paths)
    try:
        # As on a bench: the manifest is imported before the operator loads the first hub.
        await run.start_daemon()
        data = await client.request(
            "POST",
            "/v1/batches",
            {
                "manifest": paths.manifest.read_text(encoding="utf-8"),
                "source": str(paths.manifest),
                "booking": f"DEMO-{options.seed}",
                "party": "DEMO-SUPPLIER",
            },
        )
        run.batch_id = data["batch"]
        show(f"jigd demo: batch {run.batch_id} imported ({data['guids']} GUIDs); flashing")
        run.sim.start()
        await wait_for_paths(ctl_paths, run.sim, START_TIMEOUT_S)
        started = time.monotonic()
        extra = asyncio.ensure_future(during(run)) if during else None
        try:
            while not await _step(run, show, started):
                await asyncio.sleep(POLL_S)
                if time.monotonic() - started > options.timeout_s:
                    show(f"jigd demo: not finished after {options.timeout_s:g} s; giving up")
                    return 1
        finally:
            if extra is not None:
                extra.cancel()
                await asyncio.gather(extra, return_exceptions=True)
        elapsed = time.monotonic() - started
        closed = await client.request("POST", f"/v1/batches/{run.batch_id}/close")
        files = (await client.request("GET", f"/v1/batches/{run.batch_id}/report"))["files"]
        await asyncio.to_thread(_write_reports, paths.reports, files)
        show(f"jigd demo: batch closed after {elapsed:.1f} s: {_counts(closed)}")
        if options.mqtt is not None:
            await _drain_outbox(run, show)
    finally:
        daemon_rc = run.daemon.stop()
        run.sim.stop()
    if daemon_rc not in (0, None):
        show(f"jigd demo: the daemon exited with {daemon_rc}; see {run.daemon.log}")
    problems = check_books(paths, pallet)
    show(f"jigd demo: reports in {paths.reports}, ground truth in {paths.ground_truth}")
    if problems:
        show(f"jigd demo: the books do NOT balance ({len(problems)} problem(s)):")
        for problem in problems[:50]:
            show(f"  {problem}")
        return 1
    show("jigd demo: the books balance: every GUID accounted for, ground truth agrees")
    return 0


async def _check_running(run: DemoRun) -> None:
    """Both processes run; a `during` hook that restarts the daemon gets a moment to do it."""
    if run.sim.running and run.daemon.running:
        return
    await asyncio.sleep(RESTART_GRACE_S)
    for process in (run.sim, run.daemon):
        if not process.running:
            raise RuntimeError(f"{process.name} stopped unexpectedly; see {process.log}")


async def _step(run: DemoRun, show: Callable[[str], None], started: float) -> bool:
    await _check_running(run)
    try:
        if run.options.live and sys.stdout.isatty():
            status = await run.client.request("GET", "/v1/status")
            sys.stdout.write("\x1b[H\x1b[2J" + render_status(status) + "\n")
        else:
            batch, rejected = await run.progress()
            done = batch["expected"] - batch["pending"]
            show(
                f"  {time.monotonic() - started:6.1f} s  {done}/{batch['expected']} done  "
                f"{_counts(batch)}  rejected {len(rejected)}"
            )
        return await run.finished()
    except ControlError:
        return False  # the daemon is restarting (a test may be killing it)


async def _drain_outbox(run: DemoRun, show: Callable[[str], None]) -> None:
    """Give the publisher time to send what the batch's close queued (the final summary)."""
    deadline = time.monotonic() + run.options.outbox_drain_s
    while (depth := (await run.client.request("GET", "/v1/status"))["outbox_depth"]) > 0:
        if time.monotonic() > deadline:
            show(f"jigd demo: {depth} message(s) not yet published stay in the outbox")
            return
        await asyncio.sleep(POLL_S / 4)
    show("jigd demo: every result and summary is published")


def _counts(batch: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in batch["counts"].items() if v)


def _write_reports(out: Path, files: dict[str, str]) -> None:
    from jigd.reports import write_report_files

    write_report_files(out, files)


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as file:
        return list(csv.DictReader(file))


def check_books(paths: Paths, pallet: Pallet) -> list[str]:
    """Compare the reports with the pallet and the simulator's ground truth; list what differs."""
    try:
        summary = json.loads((paths.reports / "summary.json").read_text(encoding="utf-8"))
        results = _read_csv(paths.reports / "results.csv")
        smi = _read_csv(paths.reports / "smi-update.csv")
        faults = _read_csv(paths.reports / "fault-analysis.csv")
        truth = json.loads(paths.ground_truth.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return [f"cannot read the reports or the ground truth: {exc}"]
    hubs: dict[str, dict[str, Any]] = {h["guid"]: h for h in truth["hubs"]}
    manifest = {str(row.guid) for row in pallet.manifest()}
    problems = _one_outcome_each(manifest, results)
    rows = {row["guid"]: row for row in results}
    for guid, row in rows.items():
        problems += _agrees_with_truth(guid, row, hubs.get(guid))
    outcome = {g: row["outcome"] for g, row in rows.items()}
    problems += [
        f"{row.guid}: missing from the pallet but {outcome.get(str(row.guid))!r}"
        for row in pallet.missing
        if outcome.get(str(row.guid)) != "not_received"
    ]
    reflashed = {g for g, o in outcome.items() if o == "reflashed"}
    failed = {g for g, o in outcome.items() if o == "failed"}
    if sorted(r["guid"] for r in smi) != sorted(reflashed):
        problems.append("smi-update.csv is not exactly the reflashed set")
    if sorted(r["guid"] for r in faults) != sorted(failed):
        problems.append("fault-analysis.csv is not exactly the failed set")
    problems += [
        f"{row['guid']}: smi-update says {row['firmware_version']}"
        for row in smi
        if hubs.get(row["guid"], {}).get("active_version") != row["firmware_version"]
    ]
    if sum(summary["counts"].values()) != len(manifest):
        problems.append(f"summary counts {summary['counts']} do not add up to {len(manifest)}")
    for hub in pallet.hubs:
        if not hub.listed:
            problems += _untouched(
                str(hub.guid), str(hub.firmware_version), hubs.get(str(hub.guid))
            )
    return problems


def _one_outcome_each(manifest: set[str], results: list[dict[str, str]]) -> list[str]:
    counted: dict[str, int] = {}
    for row in results:
        if row["outcome"]:
            counted[row["guid"]] = counted.get(row["guid"], 0) + 1
    problems = [
        f"{g}: {counted.get(g, 0)} outcomes" for g in sorted(manifest) if counted.get(g) != 1
    ]
    return problems + [
        f"{g}: has a result but is not in the manifest" for g in set(counted) - manifest
    ]


def _agrees_with_truth(guid: str, row: dict[str, str], hub: dict[str, Any] | None) -> list[str]:
    outcome = row["outcome"]
    if outcome == "not_received":
        return (
            []
            if hub is None or hub.get("where") == "pallet"
            else [f"{guid}: not_received but seen"]
        )
    if outcome not in ("reflashed", "already_current"):
        return []
    if hub is None:
        return [f"{guid}: {outcome} but not on the pallet"]
    problems = []
    if hub["active_version"] != row["to_version"] or hub["active_sha256"] != row["image_sha256"]:
        problems.append(
            f"{guid}: {outcome} to {row['to_version']}, hub runs {hub['active_version']}"
        )
    if not hub["confirmed"] or not hub["locked"] or hub["bricked"]:
        problems.append(
            f"{guid}: {outcome} but confirmed={hub['confirmed']} locked={hub['locked']} "
            f"bricked={hub['bricked']}"
        )
    return problems


def _untouched(guid: str, version: str, hub: dict[str, Any] | None) -> list[str]:
    """A rejected hub must be exactly as it arrived: same image, locked, nothing uploaded."""
    if hub is None:
        return [f"{guid}: unlisted hub missing from the ground truth"]
    if hub["active_version"] != version or not hub["locked"] or hub["secondary_sha256"]:
        return [f"{guid}: unlisted (rejected) hub was touched: {hub}"]
    return []


def _mqtt_section(mqtt: MqttConfig) -> list[str]:
    lines = [
        "[mqtt]",
        "enabled = true",
        f"host = {json.dumps(mqtt.host)}",
        f"port = {mqtt.port}",
        f"prefix = {json.dumps(mqtt.prefix)}",
        f"tls = {'true' if mqtt.tls else 'false'}",
    ]
    if mqtt.username is not None:
        lines.append(f"username = {json.dumps(mqtt.username)}")
    if mqtt.password_file is not None:
        lines.append(f"password_file = {json.dumps(str(mqtt.password_file))}")
    return lines


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
        hub_exe=hub_exe,
    )


def stop_on_signal() -> None:
    """Let SIGTERM end a demo the way Ctrl-C does (children are stopped in `finally`)."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)
