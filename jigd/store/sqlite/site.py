"""The SQLite store's site operations: the station's heartbeat, the stations that used the
file, and releasing what a station that is gone for good holds (docs/architecture.md, "Site").

A SQLite store serves one station at a time, but keeps the same books as a site database, so a
station renamed in its configuration, or a file moved to another PC, is handled the same way.
Rows written before schema 6 name no station (''); the first station to open the store adopts
those that can still change (`adopt`); results and the journal keep their past as written.
"""

from __future__ import annotations

import logging
import sqlite3
from datetime import datetime, timedelta

from jigd.events import format_utc, parse_utc
from jigd.store import logs
from jigd.store import records as rec
from jigd.store.errors import StationActiveError
from jigd.store.sqlite.attempts import recover
from jigd.store.sqlite.worker import SqliteWorker, on_worker
from jigd.store.values import InterruptedGuid, StationInfo

__all__ = ["SiteOperations", "adopt"]

_LOGGER = logging.getLogger(__package__)  # one logger for the backend: jigd.store.sqlite


def adopt(conn: sqlite3.Connection) -> None:
    """This connection's station takes on the rows written before schema 6 that can change."""
    for table, condition in rec.ADOPTED:
        conn.execute(f"UPDATE {table} SET station = jigd_station() WHERE {condition}")  # noqa: S608 - constants
    conn.execute(
        "UPDATE outbox SET station = jigd_station(), publisher = jigd_station() "
        "WHERE publisher = '' AND published_at IS NULL"
    )


class SiteOperations(SqliteWorker):
    """The stations that use the store."""

    def _adopt(self, conn: sqlite3.Connection) -> None:
        adopt(conn)

    @on_worker
    def heartbeat(self, slots: str, *, host: str, pid: int, started_at: datetime) -> None:
        if not self.station:
            raise StationActiveError(f"{self.path}: this store was opened for no station")
        with self._write() as conn:
            conn.execute(
                "INSERT INTO stations (station, host, pid, started_at, seen_at, slots) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (station) DO UPDATE SET "
                "host = excluded.host, pid = excluded.pid, started_at = excluded.started_at, "
                "seen_at = excluded.seen_at, slots = excluded.slots",
                (self.station, host, pid, format_utc(started_at), self._now(), slots),
            )

    @on_worker
    def stations(self) -> list[StationInfo]:
        rows = self._db.execute(
            "SELECT station, host, pid, started_at, seen_at, slots FROM stations ORDER BY station"
        ).fetchall()
        return [
            StationInfo(name, host, pid, parse_utc(started), parse_utc(seen), slots)
            for name, host, pid, started, seen, slots in rows
        ]

    @on_worker
    def release_station(self, station: str, *, quiet_for: timedelta) -> list[InterruptedGuid]:
        if not self.station or station == self.station:
            raise StationActiveError(
                f"station {station!r}: a station releases another one, not itself "
                "(its own GUIDs are recovered when it starts)"
            )
        now_dt = self._clock()
        with self._write() as conn:
            last = _last_heard(conn, station)
            if last is not None and now_dt - last < quiet_for:
                raise StationActiveError(
                    f"station {station!r} was last heard from at {format_utc(last)}, less than "
                    f"{quiet_for.total_seconds():g} s ago: if it is really gone, stop its jigd "
                    "and try again once that time has passed"
                )
            found = recover(
                conn,
                format_utc(now_dt),
                station,
                f"station {station} was released by {self.station}",
            )
            conn.execute(
                "UPDATE outbox SET publisher = jigd_station() "
                "WHERE publisher = ? AND published_at IS NULL",
                (station,),
            )
        logs.recovered(_LOGGER, found)
        _LOGGER.warning(
            "station %s released by %s: %d GUID(s) it held are interrupted and may be flashed "
            "on any station",
            station,
            self.station,
            len(found),
        )
        return found


def _last_heard(conn: sqlite3.Connection, station: str) -> datetime | None:
    """When the station was last heard from: its heartbeat or the start of its last attempt."""
    row = conn.execute(
        "SELECT MAX(COALESCE(a, ''), COALESCE(b, '')) FROM (SELECT "
        "(SELECT seen_at FROM stations WHERE station = ?) AS a, "
        "(SELECT MAX(started_at) FROM attempts WHERE station = ?) AS b)",
        (station, station),
    ).fetchone()
    return None if row is None or not row[0] else parse_utc(row[0])
