"""The `jigctl` command: a technician's and integrator's client of a running jigd.

It talks to the daemon's control API on its Unix socket (`control_socket` in the config, or
`--socket`). Exit codes: 0 success, 1 operational failure (daemon unreachable, conflict), 2 bad
usage or bad input (a manifest that does not import, an unknown batch).
"""

from __future__ import annotations

import argparse
import asyncio
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
from jigd.liveview import batch_line, batch_text, redraw, render_status, timestamped

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
        print(render_status(await client.call(api.STATUS), _columns()))
    elif command == "watch":
        await _watch(client, args.once)
    elif command == "report":
        for written in await client.save_report(args.batch, args.out):
            print(written)
    elif args.batch_command == "import":
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
    parser = make_parser("jigctl", "Talk to a running jigd: batches, status, reports.")
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
    commands.add_parser("status", parents=[where], help="rigs, slots and open batches")
    watch = commands.add_parser("watch", parents=[where], help="live slot table with progress bars")
    watch.add_argument("--once", action="store_true", help="print one frame and exit")
    report = commands.add_parser("report", parents=[where], help="write a batch's reports")
    report.add_argument("batch", metavar="ID", help="the batch id, e.g. B000001")
    report.add_argument(
        "--out", type=Path, required=True, metavar="DIR", help="where to write the files"
    )
    return parser


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


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.socket is not None and args.config is not None:
        parser.error("give --socket or --config, not both")
    try:
        # A manifest's own mistakes are found before the daemon is looked for.
        importing = args.command == "batch" and args.batch_command == "import"
        manifest = read_manifest(args.manifest) if importing else None
        client = ControlClient(_socket_path(args))
        return asyncio.run(_run(args, client, manifest))
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"error: {exc.path}: {problem}", file=sys.stderr)
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
