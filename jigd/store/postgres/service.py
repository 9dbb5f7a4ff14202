"""The PostgreSQL store's slot service state and rig self-tests.

Each operation is one transaction (jigd.store.postgres.pool); the contract
(jigd.store.contract.Store) describes it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from jigd.events import AlertKind, alert_event, format_utc, parse_utc
from jigd.store import records as rec
from jigd.store.errors import InvalidRecordError, StoreError
from jigd.store.postgres import rows as db
from jigd.store.postgres.pool import (
    PostgresPool,
    completes,
    fetch_all,
    fetch_one,
    notifies,
)
from jigd.store.values import SelftestCheck, SelftestRun, SlotService

__all__ = ["ServiceOperations"]

_LOGGER = logging.getLogger(__package__)  # one logger for the backend: jigd.store.postgres


class ServiceOperations(PostgresPool):
    """Slots out of service, and the rigs' self-tests."""

    @notifies
    @completes
    async def set_slot_service(
        self, rig: int, slot: int, *, disabled: bool, reason: str, by: str
    ) -> SlotService:
        rec.check_slot(rig, slot)
        why, who = reason.strip(), by.strip()
        if not why or not who:
            raise InvalidRecordError(
                f"rig {rig} slot {slot}: a change of service needs a reason and who made it"
            )
        now_dt = self._clock()
        now = format_utc(now_dt)
        kind = AlertKind.SLOT_DISABLED if disabled else AlertKind.SLOT_ENABLED
        detail = f"{why}, by {who}" if disabled else f"back in service ({why}), by {who}"
        event = alert_event(kind, detail=detail, rig=rig, slot=slot, reason=why, now=now_dt)
        async with self._write(queues=True) as conn:
            await conn.execute(
                "INSERT INTO slot_service "
                "(station, rig, slot, disabled, reason, changed_by, changed_at) "
                "VALUES (current_setting('jigd.station'), %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (station, rig, slot) DO UPDATE SET "
                "disabled = excluded.disabled, reason = excluded.reason, "
                "changed_by = excluded.changed_by, changed_at = excluded.changed_at",
                (rig, slot, disabled, why, who, now),
            )
            await db.journal(
                conn,
                now,
                "alert",
                rig=rig,
                slot=slot,
                alert=str(kind),
                reason=why,
                by=who,
                event_id=event.event_id,
            )
            await db.enqueue(conn, event, now)
        _LOGGER.warning("alert %s: %s", kind, event.message)
        return SlotService(rig, slot, disabled, why, who, now_dt)

    async def slot_services(self) -> list[SlotService]:
        async with self._read() as conn:
            rows = await fetch_all(
                conn,
                "SELECT rig, slot, disabled, reason, changed_by, changed_at FROM slot_service "
                "WHERE station = current_setting('jigd.station') ORDER BY rig, slot",
            )
        return [
            SlotService(r, s, bool(d), why, who, parse_utc(at)) for r, s, d, why, who, at in rows
        ]

    @completes
    async def record_selftest(self, rig: int, checks: Sequence[SelftestCheck]) -> SelftestRun:
        rec.check_selftest(rig, checks)
        now_dt = self._clock()
        now = format_utc(now_dt)
        async with self._write() as conn:
            row = await fetch_one(
                conn,
                "INSERT INTO selftests (rig, ts, station) "
                "VALUES (%s, %s, current_setting('jigd.station')) RETURNING id",
                (rig, now),
            )
            if row is None:  # never after a successful INSERT ... RETURNING
                raise StoreError(f"{self.where}: no row id for rig {rig}'s self-test")
            async with conn.cursor() as cursor:
                await cursor.executemany(
                    "INSERT INTO selftest_checks "
                    "(selftest_id, seq, slot, check_name, passed, detail) "
                    "VALUES (%s, %s, %s, %s, %s, %s)",
                    [
                        (row[0], seq, c.slot, c.check, c.passed, c.detail)
                        for seq, c in enumerate(checks)
                    ],
                )
        return SelftestRun(rig, now_dt, tuple(checks))

    async def last_selftests(self) -> list[SelftestRun]:
        async with self._read() as conn:
            runs = await fetch_all(
                conn,
                "SELECT id, rig, ts FROM selftests WHERE id IN (SELECT MAX(id) FROM selftests "
                "WHERE station = current_setting('jigd.station') GROUP BY rig) ORDER BY rig",
            )
            found = []
            for run_id, rig, ts in runs:
                checks = await fetch_all(
                    conn,
                    "SELECT slot, check_name, passed, detail FROM selftest_checks "
                    "WHERE selftest_id = %s ORDER BY seq",
                    (run_id,),
                )
                found.append(
                    SelftestRun(
                        rig,
                        parse_utc(ts),
                        tuple(SelftestCheck(s, c, bool(p), d) for s, c, p, d in checks),
                    )
                )
        return found
