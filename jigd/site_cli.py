"""`jigctl station list` and `jigctl station release STATION`: the stations of a site, read
from the store the config names (docs/architecture.md, "Site"), not through the daemon, so
they work on any station's PC whether its jigd runs or not.

A station is taken for gone only after RELEASE_QUIET_S without a heartbeat (sent every
HEARTBEAT_S by a running jigd) or a new attempt: `release` refuses one heard from more
recently, so a station that is only slow or cut off from the network is never released under
its own slots.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from drivers.untrusted import printable
from jigd.cli_common import EXIT_BAD_INPUT, EXIT_OK
from jigd.config import load_config
from jigd.store import StationActiveError, StationInfo, open_store

__all__ = ["RELEASE_QUIET_S", "add_station_parser", "station_command"]

RELEASE_QUIET_S: Final = 600.0


def add_station_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], where: argparse.ArgumentParser
) -> None:
    station = commands.add_parser("station", help="the stations sharing the site's store")
    actions = station.add_subparsers(dest="station_command", required=True, metavar="ACTION")
    actions.add_parser(
        "list", parents=[where], help="every station: last heard from, and its slots"
    )
    release = actions.add_parser(
        "release",
        parents=[where],
        help="let go of the GUIDs a station that is gone for good holds (they may then be "
        "flashed on any station) and publish its unsent events",
    )
    release.add_argument("name", metavar="STATION", help="the station that is gone")
    release.add_argument(
        "--quiet-for",
        type=float,
        default=RELEASE_QUIET_S,
        metavar="SECONDS",
        help=f"refuse if it was heard from within this time (default {RELEASE_QUIET_S:g})",
    )


async def station_command(args: argparse.Namespace, default_config: Path) -> int:
    config = load_config(args.config or default_config)
    async with await open_store(config.store_url, station=config.station) as store:
        if args.station_command == "list":
            now = datetime.now(UTC)
            for info in await store.stations():
                print(station_line(info, now, mine=info.station == config.station))
            return EXIT_OK
        try:
            released = await store.release_station(
                args.name, quiet_for=timedelta(seconds=args.quiet_for)
            )
        except StationActiveError as exc:
            print(f"error: {printable(str(exc))}", flush=True)
            return EXIT_BAD_INPUT
    print(f"station {args.name} released by {config.station}: {len(released)} GUID(s) let go")
    for batch_id, guid in released:
        print(f"  {batch_id} {guid}")
    return EXIT_OK


def station_line(info: StationInfo, now: datetime, *, mine: bool) -> str:
    """One station: name, host, last heard from, and its slots by state."""
    ago = max(0.0, (now - info.seen_at).total_seconds())
    try:
        slots: list[dict[str, Any]] = json.loads(info.slots)
    except ValueError:
        slots = []
    states: dict[str, int] = {}
    for slot in slots:
        state = str(slot.get("state", "?"))
        states[state] = states.get(state, 0) + 1
    shown = ", ".join(f"{n} {state}" for state, n in sorted(states.items())) or "no slots"
    you = " (this station)" if mine else ""
    return (
        f"{printable(info.station)}{you} on {printable(info.host)} pid {info.pid}: "
        f"heard from {ago:.0f} s ago; {len(slots)} slot(s): {shown}"
    )
