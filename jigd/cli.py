"""The `jigd` command: the daemon and its administrative subcommands."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from drivers.untrusted import PrintableFormatter
from jigd.catalog_cli import add_catalog_parser
from jigd.cli_common import EXIT_BAD_INPUT, EXIT_FAILURE, EXIT_OK, make_parser
from jigd.config import ConfigError, StationConfig, check_paths, load_config
from jigd.store_cli import add_store_parser

MAX_PORT = 65535


def _load(path: Path) -> StationConfig:
    """The config at `path`, every file and directory it names readable (ConfigError)."""
    config = load_config(path)
    problems = check_paths(config)
    if problems:
        raise ConfigError(path, problems)
    return config


def _config_check(args: argparse.Namespace) -> int:
    try:
        config = _load(Path(args.path))
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_BAD_INPUT
    slots = sum(len(r.slots) for r in config.rigs)
    print(f"{args.path}: OK (station {config.station}, {len(config.rigs)} rig(s), {slots} slot(s))")
    return EXIT_OK


def _config_reference(args: argparse.Namespace) -> int:
    from jigd.config_reference import ReferenceMarkersError, reference_markdown, splice

    text = reference_markdown()
    if args.update is None:
        print(text, end="")
        return EXIT_OK
    path = Path(args.update)
    try:
        path.write_text(splice(path.read_text(encoding="utf-8"), text), encoding="utf-8")
    except OSError as exc:
        print(f"{path}: {exc.strerror}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ReferenceMarkersError as exc:
        print(f"{path}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"{path}: configuration reference updated")
    return EXIT_OK


def setup_logging(verbose: bool) -> None:
    """Log lines to stderr (journald under systemd): level, logger, message. A record is one
    line whatever text it carries: control characters are escaped (drivers/untrusted.py)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(PrintableFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])


def _run(args: argparse.Namespace) -> int:
    from firmware_catalog import CatalogError
    from jigd.daemon import run_daemon
    from jigd.mqtt_settings import MqttConfigError
    from jigd.secrets import SecretsError
    from jigd.startup import StartupError
    from jigd.store import StoreError

    try:
        config = _load(Path(args.config))
    except ConfigError as exc:
        for problem in exc.problems:  # one line each: journald shows lines apart
            print(f"error: {exc.path}: {problem}", file=sys.stderr)
        return EXIT_BAD_INPUT
    setup_logging(args.verbose)
    bad_input = (SecretsError, CatalogError, StoreError, MqttConfigError, StartupError)
    try:
        asyncio.run(run_daemon(config))
    except bad_input as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ExceptionGroup as group:
        matched, rest = group.split(bad_input)
        if matched is None or rest is not None:
            raise
        for leaf in _leaves(matched):
            print(f"error: {leaf}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return EXIT_OK


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


def _demo(args: argparse.Namespace) -> int:
    from jigd.demo import demo_options_from, run_demo, run_site, stop_on_signal
    from jigd.mqtt_settings import MqttConfigError

    if args.hubs < 1 or args.rigs < 1 or args.stations < 1:
        print("error: --hubs, --rigs and --stations must be at least 1", file=sys.stderr)
        return EXIT_BAD_INPUT
    for option, port in (("--metrics-port", args.metrics_port), ("--web-port", args.web_port)):
        if port is not None and not 1 <= port <= MAX_PORT:
            print(f"error: {option} {port} is not a TCP port (1-65535)", file=sys.stderr)
            return EXIT_BAD_INPUT
    try:
        options = demo_options_from(args)
    except ValueError as exc:  # a bad --mqtt URL, or options that contradict --hub-exe
        where = "--mqtt: " if isinstance(exc, MqttConfigError) else ""
        print(f"error: {where}{exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    stop_on_signal()
    try:
        run = run_demo if options.stations == 1 else run_site
        return asyncio.run(run(options, show=lambda line: print(line, flush=True)))
    except KeyboardInterrupt:
        print("jigd demo: interrupted", file=sys.stderr)
        return EXIT_FAILURE
    except RuntimeError as exc:
        print(f"jigd demo: {exc}", file=sys.stderr)
        return EXIT_FAILURE


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser("jigd", "Controller of a Communications Hub re-flash station.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    config = commands.add_parser("config", help="configuration tools")
    config_commands = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    check = config_commands.add_parser("check", help="validate a configuration file")
    check.add_argument("path", metavar="PATH", help="TOML configuration file")
    check.set_defaults(func=_config_check)
    reference = config_commands.add_parser(
        "reference",
        help="print the configuration reference (Markdown), generated from the model",
    )
    reference.add_argument(
        "--update",
        metavar="FILE",
        help="rewrite the reference between its markers in FILE (docs/install.md) instead",
    )
    reference.set_defaults(func=_config_reference)
    add_catalog_parser(commands)
    add_store_parser(commands)

    run = commands.add_parser("run", help="run the station daemon in the foreground")
    run.add_argument(
        "--config",
        default="/etc/jigd/jigd.toml",
        metavar="PATH",
        help="the station's TOML configuration (default /etc/jigd/jigd.toml)",
    )
    run.add_argument("--verbose", action="store_true", help="debug logging")
    run.set_defaults(func=_run)

    demo = commands.add_parser(
        "demo",
        help="run a whole station on the simulator and check the books",
        description="Start the simulator (its own process), a catalog of freshly signed images, "
        "a pallet imported as one batch and the daemon; show progress; write the reports and "
        "the ground truth under --workdir; exit 1 if the books do not balance. With --stations "
        "N, a site: N simulators and N daemons on one PostgreSQL store and one batch.",
    )
    demo.add_argument("--hubs", type=int, default=96, help="hubs on the pallet (default 96)")
    demo.add_argument("--rigs", type=int, default=3, help="rigs of 8 slots (default 3)")
    demo.add_argument(
        "--stations",
        type=int,
        default=1,
        metavar="N",
        help="stations (default 1): with N > 1, N simulators and N daemons (station names "
        "demo-1 .. demo-N, each under WORKDIR/station-K, each with --rigs rigs) share one "
        "PostgreSQL store (--store, or without it a throwaway cluster the demo starts in the "
        "workdir and removes at the end) and one batch, the pallet split over their benches; "
        "--metrics-port and --web-port are station 1's, the next ports the others'",
    )
    demo.add_argument(
        "--faults",
        choices=["none", "light", "harsh", "dead", "worn-slot"],
        help="fault profile of the pallet (default light; none with --hub-exe); worn-slot: "
        "healthy hubs, and one slot of rig 1 (drawn from --seed, named in the output and the "
        "ground truth) whose link gets worse with every hub put in it",
    )
    demo.add_argument(
        "--seed", type=int, default=1, help="keys, GUIDs, models and faults seed (default 1)"
    )
    demo.add_argument(
        "--workdir",
        default="jigd-demo",
        metavar="DIR",
        help="where the config, catalog, store, reports and ground truth go (default jigd-demo)",
    )
    demo.add_argument(
        "--image-size",
        type=int,
        metavar="BYTES",
        help="size of every image (default 262144; 65536 with --hub-exe)",
    )
    demo.add_argument(
        "--baud", type=int, default=921600, help="serial slots' link speed (default 921600)"
    )
    demo.add_argument(
        "--framing",
        choices=["raw", "console"],
        help="SMP framing of the serial slots (default raw; console with --hub-exe)",
    )
    demo.add_argument(
        "--transport",
        choices=["serial", "usb", "mixed"],
        default="serial",
        help="slots on ptys, on the simulated USB bus, or mixed: odd rigs serial, even rigs USB",
    )
    demo.add_argument(
        "--mqtt",
        metavar="URL",
        help="publish to this broker: mqtt://[user@]host[:port][/prefix] (mqtts:// for TLS); "
        "without it results wait in the outbox",
    )
    demo.add_argument("--metrics-port", type=int, metavar="N", help="serve /metrics on port N")
    demo.add_argument(
        "--web-port",
        type=int,
        metavar="N",
        help="serve the web station view on http://127.0.0.1:N/ (its token in the workdir's "
        "web-token file)",
    )
    demo.add_argument(
        "--store",
        metavar="URL",
        help="the daemon's store: a PostgreSQL database of its own, "
        "postgresql://user@host[:port]/database (docs/install.md, section 9); without it a "
        "SQLite file in the workdir (with --stations N > 1: a throwaway PostgreSQL cluster)",
    )
    demo.add_argument(
        "--hub-exe",
        metavar="PATH",
        help="hubs are Zephyr native_sim processes running this executable (the peers' "
        "jig_hub.exe; `jigsim serve --hub-exe`, flash_init.bin beside it): serial slots with "
        "console framing, no injected faults, --baud does not matter (the executable's UART "
        "runs at about 115200 baud)",
    )
    demo.add_argument(
        "--load-early",
        type=int,
        default=0,
        metavar="N",
        help="start the simulator before the import, and import once N of the batch's hubs were "
        "rejected (not_in_batch); they are listed as set aside and the simulated operator "
        "re-inserts them when the demo tells it (default 0: import first)",
    )
    demo.set_defaults(func=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
