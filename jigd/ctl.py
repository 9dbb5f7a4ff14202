"""The `jigctl` command: a technician's and integrator's client of a running jigd.

It talks to the daemon's control API on its Unix socket (`control_socket` in the config, or
`--socket`); `plan --offline` reads a stopped station's store named by its config instead.
Exit codes: 0 success, 1 operational failure (daemon unreachable, conflict), 2 bad usage or bad
input (a manifest that does not import, an unknown batch, a model mix that does not add up).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final, TypeVar

import aiohttp
from pydantic import ValidationError

from drivers.untrusted import printable
from jigd import control_api as api
from jigd.cli_common import EXIT_BAD_INPUT, EXIT_FAILURE, EXIT_OK, make_parser
from jigd.config import ConfigError, load_config
from jigd.liveview import (
    batch_line,
    batch_text,
    narrowed,
    redraw,
    render_status,
    selftest_text,
    timestamped,
)
from jigd.plan import PlanError, PlanInputs, make_plan, parse_mix, parse_what_if
from jigd.plan_report import check_chart_support, render_plan, write_chart
from jigd.plan_source import offline_stage_times
from jigd.site_cli import add_station_parser, station_command

__all__ = ["ControlClient", "ControlError", "main", "render_status"]

DEFAULT_CONFIG: Final = Path("/etc/jigd/jigd.toml")
REQUEST_TIMEOUT_S: Final = 30.0
WATCH_INTERVAL_S: Final = 0.5

_R = TypeVar("_R", bound=api.ApiModel)


class ControlError(Exception):
    """The daemon refused a request or cannot be reached; `exit_code` says which."""

    def __init__(self, message: str, exit_code: int, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.problems = problems or []


class ControlClient:
    """Requests to the control API over its Unix socket."""

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path

    async def request(self, method: str, path: str, body: object | None = None) -> Any:
        """One request; the response's JSON as Python data (ControlError for an error)."""
        connector = aiohttp.UnixConnector(path=str(self.socket_path))
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
        try:
            async with (
                aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
                session.request(method, f"http://jigd{path}", json=body) as response,
            ):
                try:
                    data = await response.json(content_type=None)
                except ValueError:  # not JSON (nor UTF-8): a proxy's page, a daemon's crash
                    raise ControlError(
                        f"jigd answered {method} {path} with HTTP {response.status} "
                        f"{response.reason or ''} and no JSON; see the daemon's log "
                        "(journalctl -u jigd)",
                        EXIT_FAILURE,
                    ) from None
                if response.status >= 400:
                    code = EXIT_BAD_INPUT if response.status in (400, 404) else EXIT_FAILURE
                    error = _error_body(data, f"HTTP {response.status} {response.reason}")
                    raise ControlError(error.error, code, error.problems)
                return data
        except aiohttp.ClientConnectorError as exc:  # its own text names "host jigd:80 ssl:..."
            raise self._unreachable(exc.os_error) from exc
        except (aiohttp.ClientConnectionError, OSError, TimeoutError) as exc:
            raise self._unreachable(exc) from exc

    def _unreachable(self, exc: BaseException) -> ControlError:
        """`cannot reach jigd at PATH: why; what to check`, exit 1."""
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        hint = "is jigd running? (systemctl status jigd)"
        if isinstance(exc, PermissionError):
            hint = "is your user in the daemon's group? (id; ls -l the socket)"
        return ControlError(
            f"cannot reach jigd at {self.socket_path}: {reason or type(exc).__name__}; {hint}",
            EXIT_FAILURE,
        )

    async def call(
        self, endpoint: api.Endpoint[_R], batch: str | None = None, body: api.ApiModel | None = None
    ) -> _R:
        """One endpoint's request (`batch` fills in its path), its response parsed."""
        url = endpoint.url(batch)
        data = await self.request(endpoint.method, url, None if body is None else body.to_json())
        try:
            return endpoint.response.model_validate(data)
        except ValidationError as exc:
            raise ControlError(
                f"jigd answered {endpoint.method} {url} with what this jigctl does not read "
                f"({exc.error_count()} problem(s)); are both the same version?",
                EXIT_FAILURE,
            ) from exc

    async def save_report(self, batch: str, out: Path) -> list[Path]:
        """Write a batch's report files into `out`, as `jigctl report` does; their paths."""
        from jigd.reports import write_report_files

        files = (await self.call(api.REPORT, batch)).files
        await asyncio.to_thread(write_report_files, out, files)
        return [out / name for name in sorted(files)]

    async def export_journal(self, batch: str, out: Path | None) -> int:
        """Write the batch's journal as JSON lines to `out` (stdout if None), one event per
        line, fields in a stable order; how many events."""
        events = (await self.call(api.JOURNAL, batch)).events
        text = "".join(journal_line(e) + "\n" for e in events)
        if out is None:
            sys.stdout.write(text)
        else:
            try:
                await asyncio.to_thread(out.write_text, text, encoding="utf-8")
            except OSError as exc:
                raise ControlError(f"{out}: cannot write: {exc.strerror}", EXIT_FAILURE) from exc
        return len(events)


def journal_line(event: api.JournalEntryView) -> str:
    """One exported journal event: `id, ts, kind, batch, guid, rig, slot, data` in that order,
    the data's fields sorted by name, ASCII only (docs/install.md, "Retention")."""
    data = event.to_json()
    data["data"] = dict(sorted(data["data"].items()))
    return json.dumps(data, separators=(",", ":"))


_UTF16_BOMS: Final = (b"\xff\xfe", b"\xfe\xff")


def read_manifest(path: Path) -> str:
    """A manifest file's text, checked here for what the daemon cannot be sent or would only
    refuse: unreadable, empty, UTF-16 (an Excel "Unicode text" export), not UTF-8. A
    ControlError (exit 2) names the file, and the line and column of a byte that is not UTF-8."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ControlError(f"{path}: cannot read: {exc.strerror}", EXIT_BAD_INPUT) from exc
    if data.startswith(_UTF16_BOMS) or 0 in data[:2]:  # with a BOM, or "g\0u\0" without
        raise ControlError(f"{path}: UTF-16 text; save as CSV UTF-8", EXIT_BAD_INPUT)
    if not data.removeprefix(b"\xef\xbb\xbf").strip():
        raise ControlError(f"{path}: the manifest is empty", EXIT_BAD_INPUT)
    # Lines as the manifest's own parser counts them (\n, \r or \r\n end one).
    for number, line in enumerate(data.splitlines(), start=1):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ControlError(
                f"{path}: line {number}: not UTF-8 (byte 0x{line[exc.start]:02X} at column "
                f"{exc.start + 1}); save the file as CSV UTF-8",
                EXIT_BAD_INPUT,
            ) from None
    return data.decode("utf-8")


def _error_body(data: object, reason: str) -> api.ErrorResponse:
    try:
        return api.ErrorResponse.model_validate(data)
    except ValidationError:
        return api.ErrorResponse(error=reason)


async def _run(args: argparse.Namespace, client: ControlClient, manifest: str | None) -> int:
    """One command; `manifest` is the text of the file `batch import` sends, read already."""
    command = args.command
    if command == "status":
        status = await client.call(api.STATUS)
        if args.station is not None:
            try:
                status = narrowed(status, args.station)
            except ValueError as exc:
                raise ControlError(str(exc), EXIT_BAD_INPUT) from None
        print(render_status(status, _columns()))
    elif command == "watch":
        await _watch(client, args.once)
    elif command == "plan":
        await _plan(args, client)
    elif command == "report":
        for written in await client.save_report(args.batch, args.out):
            print(written)
    elif command == "export":
        count = await client.export_journal(args.batch, args.out)
        if args.out is not None:
            print(f"{args.out}: {count} journal event(s) of batch {args.batch}")
    elif command == "backup":
        request = api.BackupRequest(path=str(args.out.absolute()))
        done = await client.call(api.BACKUP, body=request)
        print(
            f"{done.path}: {done.size} bytes; the store waited {done.blocked_s:.3f} s for the copy"
        )
    elif command in ("slot", "selftest"):
        return await _rig_command(args, client)
    else:
        await _batch(args, client, manifest)
    return EXIT_OK


async def _batch(args: argparse.Namespace, client: ControlClient, manifest: str | None) -> None:
    """`batch import|list|show|close`."""
    if args.batch_command == "import":
        body = api.BatchImportRequest.model_construct(
            manifest=manifest,
            source=str(args.manifest),
            booking=args.booking,
            party=args.party,
            again=args.again,
        )
        print((await client.call(api.IMPORT_BATCH, body=body)).batch)
    elif args.batch_command == "list":
        for batch in (await client.call(api.BATCHES)).batches:
            print(batch_line(batch))
    elif args.batch_command == "show":
        batch = await client.call(api.BATCH, args.batch)
        if args.json:
            print(json.dumps(batch.to_json(), indent=2))
        else:
            print("\n".join(batch_text(batch)))
    elif args.batch_command == "close":
        print(batch_line(await client.call(api.CLOSE_BATCH, args.batch)))


def _plan_inputs(args: argparse.Namespace) -> PlanInputs:
    """The plan's inputs, checked before any data is read (PlanError names a bad one)."""
    mix = None
    if args.model_mix is not None:
        try:
            text = args.model_mix.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8"
            raise PlanError(f"{args.model_mix}: cannot read: {reason}") from None
        mix = parse_mix(text, str(args.model_mix))
    if args.chart is not None:
        check_chart_support()
    return PlanInputs(
        hubs_per_year=args.hubs_per_year,
        days=args.days,
        hours_per_day=args.hours_per_day,
        handling_s=args.handling_s,
        utilisation=args.utilisation,
        mix=mix,
        what_if=parse_what_if(args.what_if),
    )


async def _plan(args: argparse.Namespace, client: ControlClient | None) -> None:
    inputs = _plan_inputs(args)
    if client is None:
        times = await offline_stage_times(load_config(args.config or DEFAULT_CONFIG))
    else:
        times = await client.call(api.STAGE_TIMES)
    plan = make_plan(times, inputs)
    if args.json:
        print(
            json.dumps(
                {"plan": plan.model_dump(mode="json"), "measured": times.to_json()}, indent=2
            )
        )
    else:
        print(render_plan(plan))
    if args.chart is not None:
        await asyncio.to_thread(write_chart, times, plan, args.chart)


async def _rig_command(args: argparse.Namespace, client: ControlClient) -> int:
    """`jigctl selftest RIG` (exit 1 if a check failed) and `jigctl slot disable|enable R S`
    (one line saying what the slot is now)."""
    if args.command == "selftest":
        test = await client.call(api.SELFTEST, body=api.SelftestRequest(rig=args.rig))
        print("\n".join(selftest_text(test)))
        return EXIT_OK if test.failed == 0 else EXIT_FAILURE
    disable = args.slot_command == "disable"
    reason = args.reason
    if reason is None:  # only enable may leave it out
        reason = "put back in service"
    body = api.SlotServiceRequest.model_construct(
        rig=args.rig, slot=args.slot, reason=reason, by=getpass.getuser()
    )
    view = await client.call(api.DISABLE_SLOT if disable else api.ENABLE_SLOT, body=body)
    state = "disabled" if view.disabled else "enabled"
    then = "; its hub is finished first" if view.finishing else ""
    who = printable(view.by)
    print(f"rig {view.rig} slot {view.slot} {state}: {printable(view.reason)} (by {who}){then}")
    return EXIT_OK


def _columns() -> int:
    """The terminal's width ($COLUMNS, else 80 when not a terminal)."""
    return shutil.get_terminal_size().columns


async def _watch(client: ControlClient, once: bool) -> None:
    tty = sys.stdout.isatty()
    while True:
        text = render_status(await client.call(api.STATUS), _columns())
        if tty:
            redraw(text, clip=True)
        else:
            sys.stdout.write(timestamped(text))
        sys.stdout.flush()
        if once:
            return
        await asyncio.sleep(WATCH_INTERVAL_S)


def _where(parser: argparse.ArgumentParser, default: object) -> None:
    """`--socket` and `--config`: where the daemon is, given before or after the command."""
    parser.add_argument(
        "--socket",
        type=Path,
        default=default,
        metavar="PATH",
        help="the daemon's control socket (default: $JIGD_SOCKET, else from the config)",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=default,
        metavar="FILE",
        help=f"the daemon's config, for its control_socket (default {DEFAULT_CONFIG})",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser(
        "jigctl", "Talk to a running jigd: batches, status, reports, export, backup."
    )
    _where(parser, None)
    # The same options after the command; unset there, they leave the ones before it alone.
    where = argparse.ArgumentParser(add_help=False)
    _where(where, argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    batch = commands.add_parser("batch", help="batches of GUIDs (work orders)")
    batch_commands = batch.add_subparsers(dest="batch_command", required=True, metavar="ACTION")
    imp = batch_commands.add_parser(
        "import", parents=[where], help="import a manifest CSV; prints the batch id"
    )
    imp.add_argument("manifest", type=Path, metavar="MANIFEST.csv", help="the manifest (UTF-8)")
    imp.add_argument("--booking", required=True, help="the booking (work order) reference")
    imp.add_argument("--party", required=True, help="the SEC Party that sent the hubs")
    imp.add_argument(
        "--again",
        action="store_true",
        help="import although a closed batch had the same booking (flash a work order again)",
    )
    batch_commands.add_parser("list", parents=[where], help="every batch with its counts")
    show = batch_commands.add_parser("show", parents=[where], help="one batch, for a person")
    show.add_argument("batch", metavar="ID", help="the batch id, e.g. B000001")
    show.add_argument("--json", action="store_true", help="the control API's JSON instead")
    close = batch_commands.add_parser(
        "close", parents=[where], help="close a batch: unseen -> not_received"
    )
    close.add_argument("batch", metavar="ID", help="the batch id, e.g. B000001")
    status = commands.add_parser(
        "status", parents=[where], help="rigs, slots and open batches; the site's other stations"
    )
    status.add_argument(
        "--station", metavar="NAME", help="only this station's slots (this one, or another)"
    )
    watch = commands.add_parser("watch", parents=[where], help="live slot table with progress bars")
    watch.add_argument("--once", action="store_true", help="print one frame and exit")
    _plan_parser(commands, where)
    report = commands.add_parser("report", parents=[where], help="write a batch's reports")
    report.add_argument("batch", metavar="ID", help="the batch id, e.g. B000001")
    report.add_argument(
        "--out", type=Path, required=True, metavar="DIR", help="where to write the files"
    )
    export = commands.add_parser(
        "export",
        parents=[where],
        help="write a batch's journal as JSON lines (keep it before retention purges it)",
    )
    export.add_argument("--batch", required=True, metavar="ID", help="the batch id, e.g. B000001")
    export.add_argument(
        "--out", type=Path, metavar="FILE", help="the file to write (default: standard output)"
    )
    backup = commands.add_parser(
        "backup",
        parents=[where],
        help="have the daemon write a consistent online backup of its store",
    )
    backup.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="FILE",
        help="a new file, written by the daemon's user (check it with `jigd store check FILE`)",
    )
    slot = commands.add_parser("slot", help="take a slot out of service, or put it back")
    slot_commands = slot.add_subparsers(dest="slot_command", required=True, metavar="ACTION")
    for action, text in (
        ("disable", "take a slot out of service: it starts no hub (one being flashed finishes)"),
        ("enable", "put a slot back in service: a hub waiting in it is started"),
    ):
        one = slot_commands.add_parser(action, parents=[where], help=text)
        one.add_argument("rig", type=int, metavar="R", help="the rig number")
        one.add_argument("slot", type=int, metavar="S", help="the slot number, 1-8")
        one.add_argument(
            "--reason",
            required=action == "disable",
            help="why (kept with the slot, in the alert and the journal)",
        )
    selftest = commands.add_parser(
        "selftest",
        parents=[where],
        help="self-test a rig now; exit 1 if a check failed (those slots are disabled)",
    )
    selftest.add_argument("rig", type=int, metavar="RIG", help="the rig number")
    add_station_parser(commands, where)
    return parser


def _positive(kind: type[int] | type[float]) -> Any:
    def parse(text: str) -> int | float:
        value = kind(text)
        if not value > 0:
            raise ValueError(text)
        return value

    parse.__name__ = f"positive {kind.__name__}"  # argparse's message: "invalid positive int"
    return parse


def _plan_parser(commands: Any, where: argparse.ArgumentParser) -> None:
    plan = commands.add_parser(
        "plan",
        parents=[where],
        help="capacity plan: rigs needed for a yearly volume, from measured times",
    )
    plan.add_argument(
        "--hubs-per-year", type=_positive(int), required=True, metavar="N", help="hubs a year"
    )
    plan.add_argument(
        "--days", type=_positive(float), required=True, metavar="D", help="working days a year"
    )
    plan.add_argument(
        "--hours-per-day",
        type=_positive(float),
        required=True,
        metavar="H",
        help="working hours a day",
    )
    plan.add_argument(
        "--handling-s",
        type=float,
        default=20.0,
        metavar="S",
        help="operator seconds per hub (pull one, insert the next; default 20)",
    )
    plan.add_argument(
        "--model-mix",
        type=Path,
        metavar="FILE",
        help="CSV device_model,share (shares sum to 1); default: the mix measured in the store",
    )
    plan.add_argument(
        "--utilisation",
        type=float,
        default=0.85,
        metavar="U",
        help="share of working hours slots are busy flashing (0-1, default 0.85)",
    )
    plan.add_argument(
        "--what-if",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="baud=N: upload at the physical bound at N baud instead of the measured upload "
        "(also framing=raw|console, frame=BYTES per SMP request, default 2048)",
    )
    plan.add_argument("--json", action="store_true", help="the plan and its measurements as JSON")
    plan.add_argument(
        "--chart", type=Path, metavar="FILE.png", help="also draw hubs per rig and hour (PNG)"
    )
    plan.add_argument(
        "--offline",
        action="store_true",
        help="read the store and catalog the config names instead of asking the daemon",
    )


_HOW_TO_POINT: Final = (
    "point jigctl at the daemon with --config FILE, --socket PATH or $JIGD_SOCKET"
)


def _socket_path(args: argparse.Namespace) -> Path:
    if args.socket is not None:
        return Path(args.socket)
    env = os.environ.get("JIGD_SOCKET")
    if env and args.config is None:
        return Path(env)
    path = args.config or DEFAULT_CONFIG
    try:
        config = load_config(path)
    except ConfigError as exc:
        if exc.unreadable:
            raise ControlError(
                f"{path}: {exc.problems[0]}; {_HOW_TO_POINT}", EXIT_BAD_INPUT
            ) from None
        raise
    return config.control_socket


def _plan_problem(exc: PlanError | ValidationError) -> str:
    if isinstance(exc, PlanError):
        return str(exc)
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    return f"plan: --{where.replace('_', '-')}: {first['msg']}"


def main(argv: Sequence[str] | None = None) -> int:  # noqa: PLR0911 - one return per outcome
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.socket is not None and args.config is not None:
        parser.error("give --socket or --config, not both")
    if getattr(args, "offline", False) and args.socket is not None:
        parser.error("plan --offline reads the store the config names: give --config, not --socket")
    try:
        # A manifest's own mistakes are found before the daemon is looked for.
        importing = args.command == "batch" and args.batch_command == "import"
        manifest = read_manifest(args.manifest) if importing else None
        if args.command == "plan" and args.offline:
            return asyncio.run(_plan(args, None)) or EXIT_OK
        if args.command == "station":  # reads the site's store, not the daemon
            return asyncio.run(station_command(args, DEFAULT_CONFIG))
        client = ControlClient(_socket_path(args))
        return asyncio.run(_run(args, client, manifest))
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"error: {exc.path}: {problem}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (PlanError, ValidationError) as exc:
        print(f"error: {_plan_problem(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ControlError as exc:  # the daemon's words may quote a client's or a hub's text
        print(f"error: {printable(str(exc))}", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {printable(problem)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
