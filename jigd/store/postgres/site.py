"""The PostgreSQL store's site operations: station heartbeats, the stations of the site, and
releasing what a station that is gone for good holds (docs/architecture.md, "Site").

Rows written before schema 6 name no station (''); the first station to open the store adopts
those that can still change (`adopt`): open attempts and the GUIDs they hold, events not yet
published, slot service and self-tests. Results and the journal keep their past as written.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from jigd.events import format_utc, parse_utc
from jigd.store import logs
from jigd.store import records as rec
from jigd.store.errors import StationActiveError
from jigd.store.postgres.attempts import recover
from jigd.store.postgres.pool import (
    Conn,
    PostgresPool,
    completes,
    fetch_all,
    fetch_one,
)
from jigd.store.values import InterruptedGuid, StationInfo

__all__ = ["SiteOperations", "adopt"]

_LOGGER = logging.getLogger(__package__)  # one logger for the backend: jigd.store.postgres


async def adopt(conn: Conn) -> None:
    """This connection's station takes on the rows written before schema 6 that can change."""
    for table, condition in rec.ADOPTED:
        await conn.execute(
            f"UPDATE {table} SET station = current_setting('jigd.station') WHERE {condition}"  # noqa: S608 - constants
        )
    await conn.execute(
        "UPDATE outbox SET station = current_setting('jigd.station'), "
        "publisher = current_setting('jigd.station') "
        "WHERE publisher = '' AND published_at IS NULL"
    )


class SiteOperations(PostgresPool):
    """The stations of a site sharing the database."""

    async def _adopt(self, conn: Conn) -> None:
        await adopt(conn)

    @completes
    async def heartbeat(self, slots: str, *, host: str, pid: int, started_at: datetime) -> None:
        if not self.station:
            raise StationActiveError(f"{self.where}: this store was opened for no station")
        async with self._write() as conn:
            await conn.execute(
                "INSERT INTO stations (station, host, pid, started_at, seen_at, slots) "
                "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (station) DO UPDATE SET "
                "host = excluded.host, pid = excluded.pid, started_at = excluded.started_at, "
                "seen_at = excluded.seen_at, slots = excluded.slots",
                (self.station, host, pid, format_utc(started_at), self._now(), slots),
            )

    async def stations(self) -> list[StationInfo]:
        async with self._read() as conn:
            rows = await fetch_all(
                conn,
                "SELECT station, host, pid, started_at, seen_at, slots FROM stations "
                "ORDER BY station",
            )
        return [
            StationInfo(name, host, pid, parse_utc(started), parse_utc(seen), slots)
            for name, host, pid, started, seen, slots in rows
        ]

    @completes
    async def release_station(self, station: str, *, quiet_for: timedelta) -> list[InterruptedGuid]:
        if not self.station or station == self.station:
            raise StationActiveError(
                f"station {station!r}: a station releases another one, not itself "
                "(its own GUIDs are recovered when it starts)"
            )
        now_dt = self._clock()
        async with self._write() as conn:
            await conn.execute("SELECT 1 FROM stations WHERE station = %s FOR UPDATE", (station,))
            last = await _last_heard(conn, station)
            if last is not None and now_dt - last < quiet_for:
                raise StationActiveError(
                    f"station {station!r} was last heard from at {format_utc(last)}, less than "
                    f"{quiet_for.total_seconds():g} s ago: if it is really gone, stop its jigd "
                    "and try again once that time has passed"
                )
            now = format_utc(now_dt)
            found = await recover(
                conn, now, station, f"station {station} was released by {self.station}"
            )
            await conn.execute(
                "UPDATE outbox SET publisher = current_setting('jigd.station') "
                "WHERE publisher = %s AND published_at IS NULL",
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


async def _last_heard(conn: Conn, station: str) -> datetime | None:
    """When the station was last heard from: its heartbeat or the start of its last attempt."""
    row = await fetch_one(
        conn,
        "SELECT GREATEST((SELECT seen_at FROM stations WHERE station = %s), "
        "(SELECT MAX(started_at) FROM attempts WHERE station = %s))",
        (station, station),
    )
    return None if row is None or row[0] is None else parse_utc(row[0])
