"""The SQLite store's reading of how long hubs took: the capacity plan's measurements.

One job on the worker thread (see jigd.store.sqlite.worker); the contract
(jigd.store.contract.Store.hub_times) describes it.
"""

from __future__ import annotations

from jigd.store import records as rec
from jigd.store.sqlite.worker import SqliteWorker, on_worker
from jigd.store.values import HubTimes

__all__ = ["TimesOperations"]

# Every GUID with an outcome of its own, its last attempt's start, and the end of that attempt's
# upload: the slot journals "uploaded N bytes, ..." at stage upload when an upload completes
# (a failed upload journals its error code there instead).
_HUB_TIMES_SQL = """
SELECT s.batch_id, s.guid, s.model, s.outcome, s.rig, s.slot, s.attempts, s.started_at,
       s.finished_at, a.started_at,
       (SELECT MAX(e.ts) FROM events e
        WHERE e.guid = s.guid AND e.batch_id = s.batch_id AND e.kind = 'stage'
          AND json_extract(e.data, '$.stage') = 'upload'
          AND json_extract(e.data, '$.attempt') = s.attempts
          AND json_extract(e.data, '$.detail') LIKE 'uploaded %')
FROM guid_states s
JOIN attempts a ON a.batch_id = s.batch_id AND a.guid = s.guid AND a.attempt = s.attempts
WHERE s.outcome IN ('reflashed', 'already_current', 'failed') AND s.model IS NOT NULL
  AND s.started_at IS NOT NULL AND s.finished_at IS NOT NULL
ORDER BY s.finished_at, s.batch_id, s.guid
"""


class TimesOperations(SqliteWorker):
    """How long the hubs with an outcome took, per attempt and upload."""

    @on_worker
    def hub_times(self) -> list[HubTimes]:
        with self._read() as conn:
            rows = conn.execute(_HUB_TIMES_SQL).fetchall()
        return [rec.to_hub_times(row) for row in rows]
