"""The `jigsim bound`, `jigsim pallet`, `jigsim serve` and `jigsim usb` subcommands.

Each `add_*_parser(commands)` adds one subcommand whose `func` runs it and returns the exit
code: 0 success, 1 operational failure, 2 bad usage or bad input (with a message naming the
file and field).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Final

from jigd.model import DeviceModel, FirmwareVersion, IdentifierError

if TYPE_CHECKING:
    from drivers.framing import FramingName
    from sim.timing import Timing

__all__ = [
    "add_bound_parser",
    "add_pallet_parser",
    "add_serve_parser",
    "add_sim_parsers",
    "add_usb_parser",
]

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_BAD_INPUT: Final = 2

_Commands = argparse._SubParsersAction  # argparse does not export the type of add_subparsers


def _models(text: str) -> list[DeviceModel]:
    try:
        return [DeviceModel.parse(part) for part in text.split(",")]
    except IdentifierError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _latest(text: str) -> dict[str, FirmwareVersion]:
    """`04000007` for every model, or `1086/57310102=04000007,...` per model."""
    result: dict[str, FirmwareVersion] = {}
    try:
        for part in text.split(","):
            model, sep, version = part.partition("=")
            if sep:
                result[str(DeviceModel.parse(model))] = FirmwareVersion.parse(version)
            else:
                result["*"] = FirmwareVersion.parse(model)
    except IdentifierError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return result


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative")
    return value


def _positive(text: str) -> int:
    value = _non_negative(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _rig_slot(text: str) -> tuple[int, int]:
    """`R/S`: a rig and one of its slots, both from 1 (whether they exist is checked later)."""
    rig, sep, slot = text.partition("/")
    if not (sep and rig.isdigit() and slot.isdigit() and int(rig) >= 1 and int(slot) >= 1):
        raise argparse.ArgumentTypeError(f"{text!r} is not R/S (a rig and a slot, as 2/5)")
    return int(rig), int(slot)


def _usb_id(text: str) -> int:
    try:
        value = int(text, 16)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a hex USB id such as 2fe3") from None
    if not 0 <= value <= 0xFFFF:
        raise argparse.ArgumentTypeError(f"{text!r} is not a 16-bit USB id")
    return value


def _rig_list(text: str) -> frozenset[int]:
    try:
        rigs = frozenset(_positive(part.strip()) for part in text.split(","))
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}; write e.g. 2,4") from None
    return rigs


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative")
    return value


# ---- bound ------------------------------------------------------------------------------------


def _timing_from(args: argparse.Namespace) -> Timing:
    from sim.timing import Timing

    fields = {
        name: getattr(args, name)
        for name in Timing.model_fields
        if getattr(args, name, None) is not None
    }
    return Timing.model_validate(fields)


def _add_timing_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("timing (defaults: sim.timing.Timing)")
    group.add_argument("--baud", type=_positive, help="link speed (default 921600)")
    group.add_argument("--buf-size", dest="buf_size", type=_positive, help="SMP buffer size")
    group.add_argument("--buf-count", dest="buf_count", type=_positive, help="SMP buffers")
    group.add_argument(
        "--sector-erase-s",
        dest="sector_erase_s",
        type=_seconds,
        help="time to erase one 4 KiB flash sector (default 0.01)",
    )
    group.add_argument(
        "--page-program-s",
        dest="page_program_s",
        type=_seconds,
        help="time to program one 256-byte flash page (default 0.0005)",
    )
    group.add_argument(
        "--swap-s", dest="swap_s", type=_seconds, help="bootloader's image swap (default 1.5)"
    )
    group.add_argument(
        "--boot-s",
        dest="boot_s",
        type=_seconds,
        help="bootloader start to the application answering (default 0.5)",
    )
    group.add_argument(
        "--reset-s",
        dest="reset_s",
        type=_seconds,
        help="reset answered to the bootloader starting (default 0.1)",
    )
    group.add_argument(
        "--reset-delay-s",
        dest="reset_delay_s",
        type=_seconds,
        help="os reset answered to the reset taking effect (default 0.25)",
    )


def _bound(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from sim.timing import physical_bound

    try:
        timing = _timing_from(args)
    except ValidationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    bound = physical_bound(args.image_size, timing, args.framing, transport=args.transport)
    if args.json:
        print(json.dumps(bound.as_dict()))
    else:
        if bound.transport == "usb":
            link = f"on full-speed USB ({bound.bytes_per_s:,.0f} bytes/s in 64-byte packets)"
            wire = "image bytes / USB bulk rate"
        else:
            link = f"at {bound.baud} baud ({bound.framing} framing)"
            wire = "image bytes x 10 / baud"
        print(
            f"image {bound.image_size} bytes {link}\n"
            f"wire_s  {bound.wire_s:.3f}  ({wire})\n"
            f"flash_s {bound.flash_s:.3f}  (erase every sector, program every page)\n"
            f"fixed_s {bound.fixed_s:.3f}  (reset delay + reset + swap + boot)\n"
            f"total_s {bound.total_s:.3f}  = max(wire_s, flash_s) + fixed_s\n"
            f"framed_wire_s {bound.framed_wire_s:.3f}  (upload requests on the wire; "
            "not part of the bound)"
        )
    return EXIT_OK


def add_bound_parser(commands: _Commands[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "bound",
        help="print the physical lower bound of flashing an image",
        description="Print max(wire_s, flash_s) + fixed_s for an image on a simulated hub "
        "(docs/simulator.md).",
    )
    parser.add_argument(
        "--image-size", type=_positive, required=True, metavar="BYTES", help="the image's size"
    )
    parser.add_argument(
        "--framing",
        choices=("raw", "console"),
        default="raw",
        help="serial SMP framing: raw, or Zephyr's console (base64, +33%%) (default raw)",
    )
    parser.add_argument(
        "--transport",
        choices=("serial", "usb"),
        default="serial",
        help="serial (--baud, --framing) or full-speed USB bulk (default serial)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    _add_timing_arguments(parser)
    parser.set_defaults(func=_bound)


# ---- pallet -----------------------------------------------------------------------------------


def _pallet(args: argparse.Namespace) -> int:
    from sim.pallet import DEFAULT_LATEST, make_pallet, write_pallet

    models: list[DeviceModel] = args.models
    given: dict[str, FirmwareVersion] = args.latest
    latest = {m: given.get(str(m), given.get("*", DEFAULT_LATEST)) for m in models}
    unknown = set(given) - {"*"} - {str(m) for m in models}
    if unknown:
        print(
            f"error: --latest names {', '.join(sorted(unknown))}, not in --models",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    try:
        pallet = make_pallet(
            args.hubs,
            seed=args.seed,
            missing=args.missing,
            extra=args.extra,
            current=args.current,
            models=models,
            latest=latest,
            fault_profile=args.faults,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    manifest = write_pallet(pallet, args.out, args.manifest)
    listed = sum(1 for h in pallet.hubs if h.listed)
    current = sum(1 for h in pallet.hubs if h.firmware_version == latest[h.model])
    faulty = sum(1 for h in pallet.hubs if h.faults.names())
    print(args.out)
    print(manifest)
    print(
        f"{len(pallet.hubs)} hubs on the pallet ({len(pallet.hubs) - listed} unlisted, "
        f"{current} already current, {faulty} with faults); {len(pallet.missing)} listed "
        "hubs missing",
        file=sys.stderr,
    )
    return EXIT_OK


def add_pallet_parser(commands: _Commands[argparse.ArgumentParser]) -> None:
    from sim.pallet import DEFAULT_LATEST, DEFAULT_MODELS

    default_models = ",".join(str(m) for m in DEFAULT_MODELS)
    parser = commands.add_parser(
        "pallet",
        help="write a pallet file and the sending party's manifest",
        description="Write a pallet (JSON: the hubs physically delivered, their Device Models, "
        "firmware and faults) and its manifest CSV (guid,manufacturer,model,firmware_version) "
        "next to it. By default about 2% of listed hubs are missing, 2% of the pallet is "
        "unlisted and 5% already runs the latest firmware (none of the first two under 10 "
        "hubs).",
    )
    parser.add_argument("--hubs", type=_non_negative, required=True, help="hubs on the pallet")
    parser.add_argument("--out", type=Path, required=True, metavar="FILE", help="pallet JSON")
    parser.add_argument(
        "--manifest", type=Path, metavar="FILE", help="manifest CSV (default FILE.manifest.csv)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="GUIDs, models and faults seed (default 0)"
    )
    parser.add_argument("--missing", type=_non_negative, help="listed hubs not on the pallet")
    parser.add_argument("--extra", type=_non_negative, help="hubs on the pallet, not listed")
    parser.add_argument("--current", type=_non_negative, help="hubs already at latest firmware")
    parser.add_argument(
        "--models",
        type=_models,
        default=_models(default_models),
        metavar="MODEL[,MODEL...]",
        help=f"Device Models, hubs spread evenly over them (default {default_models})",
    )
    parser.add_argument(
        "--latest",
        type=_latest,
        default={},
        metavar="VERSION|MODEL=VERSION[,...]",
        help=f"the latest production firmware per model (default {DEFAULT_LATEST})",
    )
    parser.add_argument(
        "--faults", choices=("none", "light", "harsh", "dead"), default="none", help="fault profile"
    )
    parser.set_defaults(func=_pallet)


# ---- serve ------------------------------------------------------------------------------------


def _serve(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from sim.faults import FaultProfile
    from sim.pallet import PalletError, load_pallet, make_pallet
    from sim.rig import parse_breaks
    from sim.serve import (
        KeysError,
        ServeOptions,
        TimingFileError,
        TimingTable,
        check_exe_options,
        load_timing_table,
        serve,
        usb_rigs_for,
    )

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        base = _timing_from(args)
        timings = load_timing_table(args.timing, base) if args.timing else TimingTable(base)
        if args.pallet is not None:
            pallet = load_pallet(args.pallet)
        else:
            pallet = make_pallet(
                args.hubs if args.hubs is not None else args.rigs * args.slots,
                seed=args.seed,
                missing=0,
                extra=0,
                current=0,
            )
        framing: FramingName = args.framing or ("console" if args.hub_exe else "raw")
        if args.hub_exe is not None and framing != "console":
            print(
                "error: --hub-exe: Zephyr's UART SMP transport uses console framing; drop "
                "--framing raw",
                file=sys.stderr,
            )
            return EXIT_BAD_INPUT
        usb_rigs = (
            args.usb_rigs if args.usb_rigs is not None else usb_rigs_for(args.transport, args.rigs)
        )
        outside = sorted(r for r in usb_rigs if r > args.rigs)
        if outside:
            print(
                f"error: --usb-rigs {outside}: there are only {args.rigs} rig(s)",
                file=sys.stderr,
            )
            return EXIT_BAD_INPUT
        options = ServeOptions(
            directory=args.dir,
            rigs=args.rigs,
            slots=args.slots,
            pallet=pallet,
            timings=timings,
            framing=framing,
            image_size=args.image_size,
            seed=args.seed,
            keys_dir=args.keys,
            ground_truth=args.ground_truth or args.dir / "ground-truth.json",
            handling_s=args.handling_s,
            fault_profile=FaultProfile(args.faults) if args.faults else None,
            outage_rig=args.outage_rig,
            worn_slot=args.worn_slot,
            usb_rigs=usb_rigs,
            usb_socket=args.usb_socket,
            usb_vendor_id=args.usb_vendor_id,
            usb_product_id=args.usb_product_id,
            hub_exe=args.hub_exe,
            hub_flash_init=args.hub_flash_init,
            breaks=parse_breaks(args.breaks or ""),
        )
        if options.hub_exe is not None:
            check_exe_options(options)
        return asyncio.run(serve(options))
    except (PalletError, KeysError, TimingFileError, ValidationError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED


def add_serve_parser(commands: _Commands[argparse.ArgumentParser]) -> None:
    from sim.operator import DEFAULT_HANDLING_S
    from sim.serve import DEFAULT_SERVE_IMAGE_SIZE, TRANSPORT_CHOICES
    from sim.usb_device import SIM_USB_PRODUCT_ID, SIM_USB_VENDOR_ID

    parser = commands.add_parser(
        "serve",
        help="run simulated rigs, hubs and an operator until SIGTERM",
        description="Publish <DIR>/rig<R>/slot<S> and <DIR>/rig<R>/ctl, feed the pallet's hubs "
        "into the slots, and run until SIGTERM or SIGINT. Ground truth is written on exit and "
        "on SIGUSR1.",
    )
    parser.add_argument("--dir", type=Path, required=True, help="where the rigs appear")
    parser.add_argument("--rigs", type=_positive, default=1, help="rigs to simulate (default 1)")
    parser.add_argument(
        "--slots",
        type=int,
        choices=range(1, 9),
        default=8,
        metavar="1-8",
        help="slots per rig (default 8)",
    )
    parser.add_argument("--pallet", type=Path, metavar="FILE", help="from `jigsim pallet`")
    parser.add_argument(
        "--hubs",
        type=_non_negative,
        help="without --pallet: hubs to make (default: one per slot)",
    )
    parser.add_argument(
        "--faults",
        choices=("none", "light", "harsh", "dead"),
        help="fault profile for every hub (default: the pallet's own faults)",
    )
    parser.add_argument("--seed", type=int, default=0, help="keys, images and faults seed")
    parser.add_argument(
        "--ground-truth",
        type=Path,
        metavar="FILE",
        help="ground truth JSON, written on exit and on SIGUSR1 (default DIR/ground-truth.json)",
    )
    parser.add_argument(
        "--keys", type=Path, metavar="DIR", help="from `jigsim keys` (default: made from --seed)"
    )
    parser.add_argument(
        "--image-size",
        type=_positive,
        default=DEFAULT_SERVE_IMAGE_SIZE,
        help=f"size of the hubs' initial images (default {DEFAULT_SERVE_IMAGE_SIZE})",
    )
    parser.add_argument(
        "--framing",
        choices=("raw", "console"),
        help="SMP framing on the slots' ptys (default raw; console with --hub-exe)",
    )
    zephyr = parser.add_argument_group('Zephyr hubs (docs/simulator.md, "Zephyr hubs")')
    zephyr.add_argument(
        "--hub-exe",
        type=Path,
        metavar="PATH",
        help="run every hub as this Zephyr native_sim executable (the peers' jig_hub.exe) in its "
        "own process on its own flash file, relayed to its slot's pty, with an MCUboot boot step "
        "(swap, revert, signature check) at every power-on and reset. Serial slots and console "
        "framing only; no fault injection (the pallet's faults and --faults are ignored); the "
        "timing options do not apply (the executable paces its UART at about 115200 baud); "
        "rig power cycling works",
    )
    zephyr.add_argument(
        "--hub-flash-init",
        type=Path,
        metavar="FILE",
        help="the flash template of --hub-exe hubs (default: flash_init.bin beside the "
        "executable); each hub gets a copy with its pallet image confirmed in slot 0",
    )
    usb = parser.add_argument_group("USB rigs (slots on a simulated USB bus, docs/simulator.md)")
    which = usb.add_mutually_exclusive_group()
    which.add_argument(
        "--transport",
        choices=TRANSPORT_CHOICES,
        default="serial",
        help="serial: every rig's slots are ptys; usb: every rig's slots are USB devices; "
        "mixed: odd rigs serial, even rigs USB (default serial)",
    )
    which.add_argument(
        "--usb-rigs",
        type=_rig_list,
        metavar="R[,R...]",
        help="exactly these rigs are USB, the others serial",
    )
    usb.add_argument(
        "--usb-socket",
        type=Path,
        metavar="PATH",
        help="the USB bus's Unix socket (default DIR/usb.sock); slots name it as "
        "usb_backend = sim+unix://PATH",
    )
    usb.add_argument(
        "--usb-vendor-id",
        type=_usb_id,
        default=SIM_USB_VENDOR_ID,
        metavar="HEX",
        help=f"idVendor of the USB hubs (default {SIM_USB_VENDOR_ID:04x})",
    )
    usb.add_argument(
        "--usb-product-id",
        type=_usb_id,
        default=SIM_USB_PRODUCT_ID,
        metavar="HEX",
        help=f"idProduct of the USB hubs (default {SIM_USB_PRODUCT_ID:04x})",
    )
    parser.add_argument(
        "--handling-s",
        type=_seconds,
        default=DEFAULT_HANDLING_S,
        help=f"operator time per insert or removal (default {DEFAULT_HANDLING_S})",
    )
    parser.add_argument(
        "--outage-rig",
        type=_positive,
        default=1,
        metavar="R",
        help="the rig whose ports vanish on SIGUSR2 and come back on the next (default 1)",
    )
    parser.add_argument(
        "--worn-slot",
        type=_rig_slot,
        metavar="R/S",
        help="rig R's slot S has a worn contact: each hub put in it raises the chance that a "
        "frame its hub sends arrives corrupted, so after a few hubs its hubs fail",
    )
    parser.add_argument(
        "--timing", type=Path, metavar="TOML", help="[default] and per-model timing tables"
    )
    parser.add_argument(
        "--break",
        dest="breaks",
        metavar="rigR/slotS:PART[,...]",
        help="broken rig parts, for the self-test: PART power (the switch does not switch), "
        "led (it does not light) or port (it does not open); e.g. "
        "rig1/slot3:power,rig1/slot5:led,rig1/slot7:port (docs/simulator.md)",
    )
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    _add_timing_arguments(parser)
    parser.set_defaults(func=_serve)


# ---- usb --------------------------------------------------------------------------------------


def _usb(args: argparse.Namespace) -> int:
    from sim.usb_wire import UsbRequestError, WireError, request

    message: dict[str, object] = {"op": args.action}
    if args.action != "devices":
        if not args.port:
            print(f"error: usb {args.action} needs a PORT such as 1-2.3", file=sys.stderr)
            return EXIT_BAD_INPUT
        message["port"] = args.port
    try:
        answer = request(str(args.socket), message)
    except UsbRequestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT if exc.name in ("not_found", "invalid_param") else EXIT_FAILED
    except (OSError, WireError) as exc:
        print(f"error: {args.socket}: cannot reach the simulated USB bus: {exc}", file=sys.stderr)
        return EXIT_FAILED
    devices = answer if isinstance(answer, list) else [answer]
    for device in devices:
        print(
            f"{device['port']}  {'attached' if device['attached'] else 'detached'}  "
            f"{'plugged' if device['plugged'] else 'unplugged'}  "
            f"address {device['address'] if device['address'] is not None else '-'}  "
            f"{device['guid'] or 'empty'}"
        )
    return EXIT_OK


def add_usb_parser(commands: _Commands[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "usb",
        help="list the simulated USB hubs, or pull and put back one's cable",
        description="Talk to the USB bus of a running `jigsim serve`: `devices` lists every USB "
        "slot's device; `unplug PORT` pulls its cable (the device leaves the bus, the hub keeps "
        "running); `plug PORT` puts it back (the device enumerates again at a new address).",
    )
    parser.add_argument(
        "action",
        choices=("devices", "unplug", "plug"),
        help="devices: list them; unplug PORT, plug PORT: its cable",
    )
    parser.add_argument("port", nargs="?", metavar="PORT", help="a USB port path such as 1-2.3")
    parser.add_argument(
        "--socket",
        type=Path,
        required=True,
        metavar="PATH",
        help="the bus's Unix socket (`jigsim serve` prints it; default there DIR/usb.sock)",
    )
    parser.set_defaults(func=_usb)


def add_sim_parsers(commands: _Commands[argparse.ArgumentParser]) -> None:
    """Add `bound`, `pallet`, `serve` and `usb`."""
    add_bound_parser(commands)
    add_pallet_parser(commands)
    add_serve_parser(commands)
    add_usb_parser(commands)
