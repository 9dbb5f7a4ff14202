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
from jigd.liveview import batch_line, redraw, render_status, timestamped

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
                data = await response.json(content_type=None)
                if response.status >= 400:
                    code = EXIT_BAD_INPUT if response.status in (400, 404) else EXIT_FAILURE
                    error = _error_body(data, str(response.reason))
                    raise ControlError(error.error, code, error.problems)
                return data
        except (aiohttp.ClientConnectionError, FileNotFoundError, TimeoutError) as exc:
            raise ControlError(
                f"cannot reach jigd on {self.socket_path}: {exc or type(exc).__name__}; is the "
                "daemon running, and are you in its group?",
                EXIT_FAILURE,
            ) from exc

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


def _error_body(data: object, reason: str) -> api.ErrorResponse:
    try:
        return api.ErrorResponse.model_validate(data)
    except ValidationError:
        return api.ErrorResponse(error=reason)


async def _run(args: argparse.Namespace, client: ControlClient) -> int:
    command = args.command
    if command == "status":
        print(render_status(await client.call(api.STATUS)))
    elif command == "watch":
        await _watch(client, args.once)
    elif command == "report":
        for written in await client.save_report(args.batch, args.out):
            print(written)
    elif args.batch_command == "import":
        path: Path = args.manifest
        try:
            text = await asyncio.to_thread(path.read_bytes)
        except OSError as exc:
            raise ControlError(f"{path}: cannot read: {exc.strerror}", EXIT_BAD_INPUT) from exc
        body = api.BatchImportRequest.model_construct(
            manifest=text.decode("utf-8", errors="surrogateescape"),
            source=str(path),
            booking=args.booking,
            party=args.party,
        )
        print((await client.call(api.IMPORT_BATCH, body=body)).batch)
    elif args.batch_command == "list":
        for batch in (await client.call(api.BATCHES)).batches:
            print(batch_line(batch))
    elif args.batch_command == "show":
        batch = await client.call(api.BATCH, args.batch)
        print(json.dumps(batch.to_json(), indent=2))
    elif args.batch_command == "close":
        print(batch_line(await client.call(api.CLOSE_BATCH, args.batch)))
    return EXIT_OK


async def _watch(client: ControlClient, once: bool) -> None:
    tty = sys.stdout.isatty()
    while True:
        text = render_status(await client.call(api.STATUS))
        if tty:
            redraw(text, clip=True)
        else:
            sys.stdout.write(timestamped(text))
        sys.stdout.flush()
        if once:
            return
        await asyncio.sleep(WATCH_INTERVAL_S)


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser("jigctl", "Talk to a running jigd: batches, status, reports.")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--socket", type=Path, help="control socket (default: from the config)")
    where.add_argument(
        "--config", type=Path, default=None, help=f"jigd config (default {DEFAULT_CONFIG})"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    batch = commands.add_parser("batch", help="batches of GUIDs (work orders)")
    batch_commands = batch.add_subparsers(dest="batch_command", required=True, metavar="ACTION")
    imp = batch_commands.add_parser("import", help="import a manifest CSV; prints the batch id")
    imp.add_argument("manifest", type=Path, metavar="MANIFEST.csv")
    imp.add_argument("--booking", required=True, help="the booking (work order) reference")
    imp.add_argument("--party", required=True, help="the SEC Party that sent the hubs")
    batch_commands.add_parser("list", help="every batch with its counts")
    for name, text in (("show", "one batch"), ("close", "close a batch: unseen -> not_received")):
        sub = batch_commands.add_parser(name, help=text)
        sub.add_argument("batch", metavar="ID")
    commands.add_parser("status", help="rigs, slots and open batches")
    watch = commands.add_parser("watch", help="live slot table with progress bars")
    watch.add_argument("--once", action="store_true", help="print one frame and exit")
    report = commands.add_parser("report", help="write a batch's reports")
    report.add_argument("batch", metavar="ID")
    report.add_argument("--out", type=Path, required=True, metavar="DIR")
    return parser


def _socket_path(args: argparse.Namespace) -> Path:
    if args.socket is not None:
        return Path(args.socket)
    env = os.environ.get("JIGD_SOCKET")
    if env and args.config is None:
        return Path(env)
    config = load_config(args.config or DEFAULT_CONFIG)
    return config.control_socket


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        client = ControlClient(_socket_path(args))
        return asyncio.run(_run(args, client))
    except ConfigError as exc:
        print(exc, file=sys.stderr)
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
