"""`jigd store migrate|purge|check`: bringing a store's schema to this jigd's version before the
daemon starts (docs/install.md, "Upgrading"), the store's retention purge on demand, and
checking a store file (a backup) before it is trusted (docs/install.md, "Retention" and
"Backup and restore")."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from jigd.catalog_cli import DEFAULT_CONFIG_PATH
from jigd.cli_common import EXIT_BAD_INPUT, EXIT_FAILURE, EXIT_OK
from jigd.config import ConfigError, load_config
from jigd.retention import purge
from jigd.store import PurgeCounts, SchemaVersionError, StoreError, open_store, shown_url
from jigd.store.sqlite.check import check_file

__all__ = ["add_store_parser"]


def _migrate(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_BAD_INPUT

    async def run() -> int:
        async with await open_store(
            config.store_url, station=config.station
        ) as store:  # opening migrates
            return await store.schema_version()

    try:
        version = asyncio.run(run())
    except SchemaVersionError as exc:  # a newer jigd wrote it: this one must not touch it
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"{shown_url(config.store_url)}: schema version {version}, the newest this jigd knows")
    return EXIT_OK


def _config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_CONFIG_PATH,
        metavar="PATH",
        help=f"the station's configuration (default {DEFAULT_CONFIG_PATH})",
    )


def _purge(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_BAD_INPUT

    async def run() -> PurgeCounts:
        async with await open_store(config.store_url, station=config.station) as store:
            return await purge(store, config.retention, dry_run=args.dry_run)

    try:
        counts = asyncio.run(run())
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    verb = "would purge" if counts.dry_run else "purged"
    print(
        f"{verb} {counts.outbox} published outbox row(s) older than "
        f"{config.retention.outbox_published_days:g} days and {counts.journal} journal "
        f"event(s) of batches closed more than {config.retention.journal_days:g} days ago"
    )
    return EXIT_OK


def _check(args: argparse.Namespace) -> int:
    problems = check_file(args.file)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        print(f"error: {args.file}: {problems[0]}{more}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"{args.file}: OK (schema, integrity, foreign keys and every batch's books)")
    return EXIT_OK


def add_store_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `store` and its actions on the `jigd` command."""
    store = subparsers.add_parser("store", help="the store's schema, retention purge and checks")
    actions = store.add_subparsers(dest="store_command", required=True, metavar="ACTION")
    migrate = actions.add_parser(
        "migrate",
        help="bring the store's schema to this jigd's version",
        description="Open the store [store] url names and apply the schema migrations this jigd "
        "has and the store lacks, each in one transaction (`jigd run` does the same at start). "
        "A store written by a newer jigd is refused, untouched: exit 2.",
    )
    _config_option(migrate)
    migrate.set_defaults(func=_migrate)
    purge_cmd = actions.add_parser(
        "purge",
        help="purge what [retention] lets go now (safe while the daemon runs)",
        description="Delete delivered MQTT messages older than outbox_published_days and the "
        "journal of batches closed more than journal_days ago, as the daemon does every "
        "purge_every_h hours. A batch's books (GUIDs, results, attempts) are never purged.",
    )
    _config_option(purge_cmd)
    purge_cmd.add_argument("--dry-run", action="store_true", help="only count what would be purged")
    purge_cmd.set_defaults(func=_purge)
    check = actions.add_parser(
        "check",
        help="verify a SQLite store file, such as a backup",
        description="Open FILE read-only and check its schema version, SQLite's integrity check, "
        "its foreign keys and every batch's books (expected equals pending plus the outcomes, "
        "kept counts equal a recount). Exit 0 if sound, 2 with the first problem.",
    )
    check.add_argument("file", type=Path, metavar="FILE", help="the store file (.sqlite3)")
    check.set_defaults(func=_check)
