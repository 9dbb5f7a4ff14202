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
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import aiohttp

from jigd.cli_common import EXIT_BAD_INPUT, EXIT_FAILURE, EXIT_OK, make_parser
from jigd.config import ConfigError, load_config

__all__ = ["ControlClient", "ControlError", "main", "render_status"]

DEFAULT_CONFIG: Final = Path("/etc/jigd/jigd.toml")
REQUEST_TIMEOUT_S: Final = 30.0
WATCH_INTERVAL_S: Final = 0.5
BAR_WIDTH: Final = 20


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
                    raise ControlError(
                        str(data.get("error", response.reason)), code, data.get("problems")
                    )
                return data
        except (aiohttp.ClientConnectionError, FileNotFoundError, TimeoutError) as exc:
            raise ControlError(
                f"cannot reach jigd on {self.socket_path}: {exc or type(exc).__name__}; is the "
                "daemon running, and are you in its group?",
                EXIT_FAILURE,
            ) from exc


def _bar(percent: float) -> str:
    filled = round(BAR_WIDTH * percent / 100)
    return "#" * filled + "." * (BAR_WIDTH - filled)


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def render_status(status: dict[str, Any]) -> str:
    """A text table of rigs, slots and open batches, as `jigctl status` and `watch` show it."""
    lines = [
        f"station {status['station']}   up {_eta(status['uptime_s'])}   "
        f"{status['hubs_per_hour'] or '-'} hubs/h   "
        f"outbox {status.get('outbox_depth', '-')}"
    ]
    for batch in status["batches"]:
        counts = batch["counts"]
        done = batch["expected"] - batch["pending"]
        percent = 100.0 * done / batch["expected"] if batch["expected"] else 100.0
        lines.append(
            f"batch {batch['batch']} ({batch['booking']}, {batch['party']}) "
            f"[{_bar(percent)}] {done}/{batch['expected']}  "
            f"reflashed {counts['reflashed']}  current {counts['already_current']}  "
            f"failed {counts['failed']}  ETA {_eta(batch['eta_s'])}"
        )
    lines.append(f"{'slot':<12}{'state':<10}{'guid':<25}{'stage':<14}{'progress':<28}att")
    for rig in status["rigs"]:
        for slot in rig["slots"]:
            name = f"rig{slot['rig']}/slot{slot['slot']}"
            state = slot["state"] if rig["up"] else "offline"
            progress = ""
            if slot["state"] == "busy" and slot["stage"] == "upload":
                progress = f"[{_bar(slot['progress'])}] {slot['progress']:5.1f}%"
            stage = slot["stage"] or slot["outcome"] or slot["detail"] or ""
            lines.append(
                f"{name:<12}{state:<10}{slot['guid'] or '-':<25}{stage:<14}{progress:<28}"
                f"{slot['attempts'] or ''}"
            )
    return "\n".join(lines)


def _print_batch(batch: dict[str, Any]) -> None:
    counts = ", ".join(f"{k} {v}" for k, v in batch["counts"].items())
    print(
        f"{batch['batch']}  {batch['status']:<6}  booking {batch['booking']}  party "
        f"{batch['party']}  expected {batch['expected']}  received {batch['received']}  "
        f"pending {batch['pending']}  ({counts})"
    )


async def _run(args: argparse.Namespace, client: ControlClient) -> int:
    command = args.command
    if command == "status":
        print(render_status(await client.request("GET", "/v1/status")))
    elif command == "watch":
        await _watch(client, args.once)
    elif command == "report":
        data = await client.request("GET", f"/v1/batches/{args.batch}/report")
        out: Path = args.out
        await asyncio.to_thread(_write_report, out, data["files"])
        for name in sorted(data["files"]):
            print(out / name)
    elif args.batch_command == "import":
        path: Path = args.manifest
        try:
            text = await asyncio.to_thread(path.read_bytes)
        except OSError as exc:
            raise ControlError(f"{path}: cannot read: {exc.strerror}", EXIT_BAD_INPUT) from exc
        body = {
            "manifest": text.decode("utf-8", errors="surrogateescape"),
            "source": str(path),
            "booking": args.booking,
            "party": args.party,
        }
        data = await client.request("POST", "/v1/batches", body)
        print(data["batch"])
    elif args.batch_command == "list":
        for batch in (await client.request("GET", "/v1/batches"))["batches"]:
            _print_batch(batch)
    elif args.batch_command == "show":
        batch = await client.request("GET", f"/v1/batches/{args.batch}")
        print(json.dumps(batch, indent=2))
    elif args.batch_command == "close":
        _print_batch(await client.request("POST", f"/v1/batches/{args.batch}/close"))
    return EXIT_OK


def _write_report(out: Path, files: dict[str, str]) -> None:
    from jigd.reports import write_report_files

    write_report_files(out, files)


async def _watch(client: ControlClient, once: bool) -> None:
    tty = sys.stdout.isatty()
    while True:
        text = render_status(await client.request("GET", "/v1/status"))
        if tty:
            width = shutil.get_terminal_size().columns
            text = "\n".join(line[:width] for line in text.splitlines())
            sys.stdout.write("\x1b[H\x1b[2J" + text + "\n")
        else:
            sys.stdout.write(f"--- {time.strftime('%H:%M:%S')}\n{text}\n")
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
    except ControlError as exc:
        print(f"error: {exc}", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
