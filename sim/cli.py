"""The `jigsim` command: the station simulator.

Each subcommand has an `_add_<name>_parser(commands)` that sets `func`, the function run with
the parsed arguments, which returns the exit code.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path

from sim.bench_commands import add_bench_parsers
from sim.commands import add_sim_parsers

EXIT_OK = 0
EXIT_BAD_INPUT = 2
DEFAULT_MANUFACTURERS = "1086"


def _manufacturers(text: str) -> list[int]:
    """Parse `1086,10AB`: manufacturer codes, 4 hex characters each."""
    codes = []
    for part in text.split(","):
        code = part.strip()
        if len(code) != 4 or any(c not in "0123456789abcdefABCDEF" for c in code):
            raise argparse.ArgumentTypeError(
                f"manufacturer {code!r} is not 4 hex characters; write e.g. 1086,10AB"
            )
        codes.append(int(code, 16))
    if len(set(codes)) != len(codes):
        raise argparse.ArgumentTypeError(f"manufacturers repeat in {text!r}")
    return codes


def _keys(args: argparse.Namespace) -> int:
    from sim.images import make_manufacturer_keys, write_keys

    out: Path = args.out
    if out.exists() and not out.is_dir():
        print(f"error: {out}: not a directory", file=sys.stderr)
        return EXIT_BAD_INPUT
    keys = [make_manufacturer_keys(m, args.seed) for m in args.manufacturers]
    for path in write_keys(out, keys):
        print(path)
    return EXIT_OK


def _add_keys_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = commands.add_parser(
        "keys",
        help="write manufacturer keys for a test station",
        description="Write, per manufacturer, the image signing key <MFR>.signing.pem (0600) "
        "and its public key <MFR>.pem (for a catalog's keys/), and one master-keys.toml (0600) "
        "with the unlock master keys. The same seed gives the same keys.",
    )
    keys.add_argument("--out", type=Path, required=True, metavar="DIR", help="output directory")
    keys.add_argument(
        "--manufacturers",
        type=_manufacturers,
        default=_manufacturers(DEFAULT_MANUFACTURERS),
        metavar="MFR[,MFR...]",
        help=f"manufacturer codes, 4 hex each (default {DEFAULT_MANUFACTURERS})",
    )
    keys.add_argument("--seed", type=int, default=0, help="key seed (default 0)")
    keys.set_defaults(func=_keys)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jigsim", description="Simulated rigs, hubs, operator and pallets for jigd."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version('jigd')}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_keys_parser(commands)
    add_sim_parsers(commands)  # bound, pallet, serve, usb (sim/commands.py)
    add_bench_parsers(commands)  # image, reinsert, move (sim/bench_commands.py)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
