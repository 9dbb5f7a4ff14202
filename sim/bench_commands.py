"""The `jigsim image`, `jigsim reinsert` and `jigsim move` subcommands: what a person trying jigd
by hand on the simulator needs besides `jigsim serve` (the README's technician tour).

`image` writes the signed image a simulated hub of that Device Model and Firmware Version runs
(byte for byte: the same seed, keys and size as `jigsim serve`), so a catalog made from it finds
those hubs `already_current`. `reinsert` tells a running `jigsim serve` to put hubs back;
`move` has its operator take hubs to another bench (`sim.move`).
Exit codes: 0 success, 1 operational failure, 2 bad input (one `error:` line naming it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Final

from jigd.model import DeviceModel, FirmwareVersion, Guid, IdentifierError
from sim.files import write_atomically

__all__ = ["add_bench_parsers"]

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_BAD_INPUT: Final = 2

_Commands = argparse._SubParsersAction  # argparse does not export the type of add_subparsers


def _image(args: argparse.Namespace) -> int:
    from sim.images import make_manufacturer_keys, make_signed_image
    from sim.serve import KeysError, load_keys

    try:
        model = DeviceModel.parse(args.model)
        version = FirmwareVersion.parse(args.version)
    except IdentifierError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        if args.keys is None:
            keys = make_manufacturer_keys(model.manufacturer, args.seed)
        else:
            keys = load_keys(args.keys, {model.manufacturer})[model.manufacturer]
        image = make_signed_image(keys, model, version, args.size, args.seed)
    except (KeysError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    out: Path = args.out
    try:
        write_atomically(out, image)
    except OSError as exc:
        print(f"error: {out}: cannot write it: {exc.strerror}", file=sys.stderr)
        return EXIT_FAILED
    print(out)
    return EXIT_OK


def add_image_parser(commands: _Commands[argparse.ArgumentParser]) -> None:
    from sim.pallet import DEFAULT_LATEST, DEFAULT_MODELS
    from sim.serve import DEFAULT_SERVE_IMAGE_SIZE

    parser = commands.add_parser(
        "image",
        help="write the signed image the simulated hubs run (for a catalog)",
        description="Write the MCUboot image, signed with the manufacturer's key, that a hub "
        "of `jigsim serve` with the same --seed, --keys and --image-size runs at that Device "
        "Model and Firmware Version: the same bytes, so `jigd catalog add` of it makes such hubs "
        "already_current.",
    )
    parser.add_argument(
        "--model",
        default=str(DEFAULT_MODELS[0]),
        metavar="MMMM/NNNNNNNN",
        help=f"Device Model (default {DEFAULT_MODELS[0]}, the pallets' default)",
    )
    parser.add_argument(
        "--version",
        default=str(DEFAULT_LATEST),
        metavar="HEX8",
        help=f"Firmware Version, 8 hex characters (default {DEFAULT_LATEST}, the pallets' latest)",
    )
    parser.add_argument(
        "--keys",
        type=Path,
        metavar="DIR",
        help="from `jigsim keys`, as given to `jigsim serve --keys` (default: made from --seed)",
    )
    parser.add_argument("--seed", type=int, default=0, help="as `jigsim serve --seed` (default 0)")
    parser.add_argument(
        "--size",
        type=int,
        default=DEFAULT_SERVE_IMAGE_SIZE,
        metavar="BYTES",
        help=f"as `jigsim serve --image-size` (default {DEFAULT_SERVE_IMAGE_SIZE})",
    )
    parser.add_argument("--out", type=Path, required=True, metavar="FILE", help="image to write")
    parser.set_defaults(func=_image)


def _reinsert(args: argparse.Namespace) -> int:
    from sim.reinsert import request_reinsert

    try:
        guids = _guids(args.guids)
    except IdentifierError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if not guids:
        print("jigsim reinsert: no GUID given, nothing to re-insert", file=sys.stderr)
        return EXIT_OK
    try:
        request_reinsert(args.dir, guids)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:
        print(f"error: {args.dir}: cannot write the request: {exc.strerror}", file=sys.stderr)
        return EXIT_FAILED
    for guid in guids:
        print(f"re-insert {guid}")
    return EXIT_OK


def add_reinsert_parser(commands: _Commands[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "reinsert",
        help="tell a running `jigsim serve` to put hubs back in free slots",
        description="The simulated operator of `jigsim serve --dir DIR` takes these hubs off "
        "the pulled pile and puts them in the next free slots (a hub still in its slot goes "
        "back once pulled): what a technician does with hubs `jigctl batch show` lists as "
        "'set aside, re-insert'.",
    )
    parser.add_argument("--dir", type=Path, required=True, help="the `jigsim serve --dir`")
    parser.add_argument(
        "guids",
        nargs="+",
        metavar="GUID",
        help="hubs to put back; `-` reads them from standard input, the first GUID on each "
        "line (e.g. piped from `jigctl batch show ID`)",
    )
    parser.set_defaults(func=_reinsert)


def _guids(texts: list[str]) -> list[Guid]:
    """GUIDs given on the command line; `-` reads them from standard input (IdentifierError)."""
    from sim.reinsert import guids_in

    guids: list[Guid] = []
    for text in texts:
        guids += guids_in(sys.stdin) if text == "-" else [Guid.parse(text)]
    return guids


def _move(args: argparse.Namespace) -> int:
    from sim.move import MoveError, request_move

    try:
        guids = _guids(args.guids)
    except IdentifierError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if not guids:
        print("jigsim move: no GUID given, nothing to move", file=sys.stderr)
        return EXIT_OK
    try:
        request_move(args.source, args.destination, guids)
    except (FileNotFoundError, MoveError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:
        print(f"error: {args.source}: cannot write the request: {exc.strerror}", file=sys.stderr)
        return EXIT_FAILED
    for guid in guids:
        print(f"move {guid} to {args.destination}")
    return EXIT_OK


def add_move_parser(commands: _Commands[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "move",
        help="tell a running `jigsim serve` to take hubs to another bench",
        description="The simulated operator of `jigsim serve --dir FROM` takes these hubs (out "
        "of their slot whatever the LED, or off the pallet or the pulled pile) and carries "
        "them, whole (flash, lock, an unfinished upload its model keeps), to the bench of "
        "`jigsim serve --dir TO`, whose operator puts them on top of its pallet. From then on "
        "they are in TO's ground truth; FROM's lists them as moved.",
    )
    parser.add_argument(
        "--from", dest="source", type=Path, required=True, metavar="FROM",
        help="the `jigsim serve --dir` the hubs are on",
    )  # fmt: skip
    parser.add_argument(
        "--to", dest="destination", type=Path, required=True, metavar="TO",
        help="the `jigsim serve --dir` to take them to",
    )  # fmt: skip
    parser.add_argument(
        "guids",
        nargs="+",
        metavar="GUID",
        help="hubs to move; `-` reads them from standard input, the first GUID on each line",
    )
    parser.set_defaults(func=_move)


def add_bench_parsers(commands: _Commands[argparse.ArgumentParser]) -> None:
    """image, reinsert, move."""
    add_image_parser(commands)
    add_reinsert_parser(commands)
    add_move_parser(commands)
