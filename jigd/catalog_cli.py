"""`jigd catalog`: add, list, show the latest, change the status of and verify catalog entries."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path

from firmware_catalog import Catalog, CatalogEntry, CatalogError, Status
from jigd.cli_common import EXIT_BAD_INPUT, EXIT_FAILURE, EXIT_OK
from jigd.config import ConfigError, load_config
from jigd.model import DeviceModel, FirmwareVersion, IdentifierError

__all__ = ["DEFAULT_CONFIG_PATH", "add_catalog_parser"]

DEFAULT_CONFIG_PATH = Path("/etc/jigd/jigd.toml")

_Handler = Callable[[argparse.Namespace], int]
_MODEL_HELP = "Device Model: manufacturer and model in hex, e.g. 1086/57310102"


def _device_model(text: str) -> DeviceModel:
    try:
        return DeviceModel.parse(text)
    except IdentifierError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _firmware_version(text: str) -> FirmwareVersion:
    try:
        return FirmwareVersion.parse(text)
    except IdentifierError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"date {text!r} is not a date; write YYYY-MM-DD, e.g. 2026-01-31"
        ) from None


def _error(message: object, code: int) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def _open(args: argparse.Namespace) -> Catalog:
    """The catalog named by --dir, or by the configuration file's catalog_dir."""
    directory: Path | None = args.dir
    if directory is None:
        directory = load_config(args.config).catalog_dir
    return Catalog.open(directory)


def _guarded(handler: _Handler) -> _Handler:
    """Turn the errors a person must act on into a message and an exit code."""

    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except (CatalogError, ConfigError) as exc:
            return _error(exc, EXIT_BAD_INPUT)
        except OSError as exc:
            return _error(f"{exc.filename}: {exc.strerror}", EXIT_FAILURE)

    return run


def _add(args: argparse.Namespace) -> int:
    catalog = _open(args)
    try:
        entry = catalog.add(
            args.image,
            args.device_model,
            args.version,
            Status(args.status),
            args.released,
            gbcs=args.gbcs,
            chts=args.chts,
            notes=args.notes,
        )
    except CatalogError as exc:
        return _error(f"not added to {catalog.directory}: {exc}", EXIT_BAD_INPUT)
    print(
        f"added {entry.describe()} ({entry.status}, {entry.size} bytes, sha256 {entry.sha256}) "
        f"to {catalog.directory}"
    )
    return EXIT_OK


def _table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _list(args: argparse.Namespace) -> int:
    catalog = _open(args)
    entries = catalog.entries(args.device_model)
    if not entries:
        which = f" for {args.device_model}" if args.device_model else ""
        print(f"{catalog.catalog_path}: no entries{which}")
        return EXIT_OK
    header = ["DEVICE MODEL", "VERSION", "MCUBOOT", "STATUS", "RELEASED", "GBCS", "CHTS"]
    header += ["SIZE", "SHA256", "IMAGE HASH", "NOTES"]
    rows = [header]
    # --long shows both hashes whole: the file's sha256 (upload, catalog file name) and the
    # MCUboot image hash (what a hub's image state reports).
    width = 64 if args.long else 12
    for e in entries:
        rows.append(
            [
                str(e.device_model),
                str(e.firmware_version),
                e.firmware_version.mcuboot_str(),
                e.status,
                e.released.isoformat(),
                e.gbcs or "-",
                e.chts or "-",
                str(e.size),
                e.sha256[:width],
                e.image_hash[:width] if e.image_hash else "-",
                e.notes,
            ]
        )
    print(_table(rows))
    return EXIT_OK


def _describe(catalog: Catalog, entry: CatalogEntry) -> str:
    fields = [
        ("device model", str(entry.device_model)),
        ("firmware version", f"{entry.firmware_version} ({entry.firmware_version.mcuboot_str()})"),
        ("status", entry.status),
        ("released", entry.released.isoformat()),
        ("gbcs", entry.gbcs or "-"),
        ("chts", entry.chts or "-"),
        ("size", str(entry.size)),
        ("sha256", entry.sha256),
        ("image hash", entry.image_hash or "- (image unreadable: run jigd catalog verify)"),
        ("image", str(catalog.image_path(entry))),
        ("notes", entry.notes or "-"),
    ]
    return "\n".join(f"{name + ':':<18}{value}" for name, value in fields)


def _latest(args: argparse.Namespace) -> int:
    catalog = _open(args)
    pilot_models = {args.device_model} if args.pilot else set()
    entry = catalog.latest(args.device_model, pilot_models)
    if entry is None:
        kinds = "production or pilot" if args.pilot else "production"
        return _error(
            f"{catalog.catalog_path}: no {kinds} firmware for Device Model {args.device_model}",
            EXIT_FAILURE,
        )
    print(_describe(catalog, entry))
    return EXIT_OK


def _set_status(args: argparse.Namespace) -> int:
    catalog = _open(args)
    entry = catalog.set_status(args.device_model, args.version, Status(args.status))
    print(f"{entry.describe()} is {entry.status}")
    return EXIT_OK


def _verify(args: argparse.Namespace) -> int:
    catalog = _open(args)
    problems = catalog.verify()
    total = len(catalog.entries())
    for problem in problems:
        _error(problem, EXIT_FAILURE)
    if problems:
        print(f"{catalog.directory}: {len(problems)} of {total} entries are bad", file=sys.stderr)
        return EXIT_FAILURE
    entries = "1 entry" if total == 1 else f"{total} entries"
    print(f"{catalog.directory}: {entries}, every image verified")
    return EXIT_OK


def add_catalog_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `catalog` and its actions on the `jigd` command."""
    catalog = subparsers.add_parser(
        "catalog",
        help="manage the firmware catalog",
        description="Manage the firmware catalog: signed MCUboot images and their entries. "
        "Trusted keys are PEM public keys (as `imgtool getpub -e pem` prints them) at "
        "keys/<MANUFACTURER>.pem in the catalog directory.",
    )
    where = catalog.add_mutually_exclusive_group()
    where.add_argument(
        "--dir",
        type=Path,
        metavar="DIR",
        help="catalog directory (default: catalog_dir of --config)",
    )
    where.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_CONFIG_PATH,
        metavar="PATH",
        help=f"station configuration (default {DEFAULT_CONFIG_PATH})",
    )
    actions = catalog.add_subparsers(dest="catalog_command", required=True, metavar="ACTION")
    statuses = [s.value for s in Status]

    add = actions.add_parser("add", help="check a signed image and add it")
    add.add_argument("image", type=Path, metavar="IMAGE", help="signed MCUboot image (binary)")
    add.add_argument(
        "--device-model", type=_device_model, required=True, metavar="MODEL", help=_MODEL_HELP
    )
    add.add_argument(
        "--version",
        type=_firmware_version,
        required=True,
        metavar="VERSION",
        help="Firmware Version, 8 hex; must equal the image header's version",
    )
    add.add_argument(
        "--status",
        choices=statuses,
        required=True,
        help="production: selected for hubs; pilot: only for pilot_models; withdrawn: never",
    )
    add.add_argument(
        "--released", type=_date, required=True, metavar="YYYY-MM-DD", help="its release date"
    )
    add.add_argument("--gbcs", metavar="VERSION", help="GBCS version, e.g. 3.2")
    add.add_argument("--chts", metavar="VERSION", help="CHTS version, e.g. 1.3")
    add.add_argument("--notes", default="", metavar="TEXT", help="free text kept with the entry")
    add.set_defaults(func=_guarded(_add))

    list_ = actions.add_parser("list", help="list the entries")
    list_.add_argument("--device-model", type=_device_model, metavar="MODEL", help=_MODEL_HELP)
    list_.add_argument(
        "--long",
        action="store_true",
        help="show the whole file sha256 and MCUboot image hash of each entry",
    )
    list_.set_defaults(func=_guarded(_list))

    latest = actions.add_parser("latest", help="show the firmware a hub of MODEL gets")
    latest.add_argument("device_model", type=_device_model, metavar="MODEL", help=_MODEL_HELP)
    latest.add_argument(
        "--pilot", action="store_true", help="include pilot firmware, as for a pilot model"
    )
    latest.set_defaults(func=_guarded(_latest))

    set_status = actions.add_parser("set-status", help="change an entry's status")
    set_status.add_argument("device_model", type=_device_model, metavar="MODEL", help=_MODEL_HELP)
    set_status.add_argument(
        "version", type=_firmware_version, metavar="VERSION", help="Firmware Version, 8 hex"
    )
    set_status.add_argument("status", choices=statuses, metavar="STATUS", help=", ".join(statuses))
    set_status.set_defaults(func=_guarded(_set_status))

    verify = actions.add_parser(
        "verify", help="re-check every image: sha256, signature and header version"
    )
    verify.set_defaults(func=_guarded(_verify))
