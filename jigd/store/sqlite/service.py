"""The SQLite store's slot service state and rig self-tests.

Each operation is one job on the worker thread (see jigd.store.sqlite.worker); the contract
(jigd.store.contract.Store) describes it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from jigd.events import AlertKind, alert_event, format_utc, parse_utc
from jigd.store import records as rec
from jigd.store.errors import InvalidRecordError, StoreError
from jigd.store.sqlite import rows as db
from jigd.store.sqlite.worker import SqliteWorker, notifies, on_worker
from jigd.store.values import SelftestCheck, SelftestRun, SlotService

__all__ = ["ServiceOperations"]

_LOGGER = logging.getLogger(__package__)  # one logger for the backend: jigd.store.sqlite


class ServiceOperations(SqliteWorker):
    """Slots out of service, and the rigs' self-tests."""

    @notifies
    @on_worker
    def set_slot_service(
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
        with self._write() as conn:
            conn.execute(
                "INSERT INTO slot_service "
                "(station, rig, slot, disabled, reason, changed_by, changed_at) "
                "VALUES (jigd_station(), ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (station, rig, slot) DO UPDATE SET "
                "disabled = excluded.disabled, reason = excluded.reason, "
                "changed_by = excluded.changed_by, changed_at = excluded.changed_at",
                (rig, slot, int(disabled), why, who, now),
            )
            db.journal(
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
            db.enqueue(conn, event, now)
        _LOGGER.warning("alert %s: %s", kind, event.message)
        return SlotService(rig, slot, disabled, why, who, now_dt)

    @on_worker
    def slot_services(self) -> list[SlotService]:
        rows = self._db.execute(
            "SELECT rig, slot, disabled, reason, changed_by, changed_at FROM slot_service "
            "WHERE station = jigd_station() ORDER BY rig, slot"
        ).fetchall()
        return [
            SlotService(r, s, bool(d), why, who, parse_utc(at)) for r, s, d, why, who, at in rows
        ]

    @on_worker
    def record_selftest(self, rig: int, checks: Sequence[SelftestCheck]) -> SelftestRun:
        rec.check_selftest(rig, checks)
        now_dt = self._clock()
        now = format_utc(now_dt)
        with self._write() as conn:
            cursor = conn.execute(
                "INSERT INTO selftests (rig, ts, station) VALUES (?, ?, jigd_station())",
                (rig, now),
            )
            run_id = cursor.lastrowid
            if run_id is None:  # never after a successful INSERT into a rowid table
                raise StoreError(f"{self.path}: no row id for rig {rig}'s self-test")
            conn.executemany(
                "INSERT INTO selftest_checks (selftest_id, seq, slot, check_name, passed, detail) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (run_id, seq, c.slot, c.check, int(c.passed), c.detail)
                    for seq, c in enumerate(checks)
                ],
            )
        return SelftestRun(rig, now_dt, tuple(checks))

    @on_worker
    def last_selftests(self) -> list[SelftestRun]:
        runs = self._db.execute(
            "SELECT id, rig, ts FROM selftests WHERE id IN "
            "(SELECT MAX(id) FROM selftests WHERE station = jigd_station() GROUP BY rig) "
            "ORDER BY rig"
        ).fetchall()
        found = []
        for run_id, rig, ts in runs:
            checks = self._db.execute(
                "SELECT slot, check_name, passed, detail FROM selftest_checks "
                "WHERE selftest_id = ? ORDER BY seq",
                (run_id,),
            ).fetchall()
            found.append(
                SelftestRun(
                    rig,
                    parse_utc(ts),
                    tuple(SelftestCheck(s, c, bool(p), d) for s, c, p, d in checks),
                )
            )
        return found
