-- Schema 6: one store shared by the stations of a site (docs/architecture.md, "Site").
-- `station` names the station that wrote a row. Rows written before this version have ''
-- (NULL in the journal and in GUID states), until the first station to open the store adopts
-- what can change (open attempts, unpublished events, slot service, self-tests); results and
-- the journal keep their past as it was written.
ALTER TABLE attempts ADD COLUMN station TEXT NOT NULL DEFAULT '';
-- The station that began the GUID's last attempt: it holds the GUID's claim while the GUID is
-- in progress, and recorded its result once final.
ALTER TABLE guid_states ADD COLUMN station TEXT;
ALTER TABLE events ADD COLUMN station TEXT;
ALTER TABLE rejected_hubs ADD COLUMN station TEXT NOT NULL DEFAULT '';
-- `station` names the topic (`<prefix>/<station>/...`); `publisher` is the station that
-- publishes it: the same, unless `jigctl station release` handed a gone station's rows over.
ALTER TABLE outbox ADD COLUMN station TEXT NOT NULL DEFAULT '';
ALTER TABLE outbox ADD COLUMN publisher TEXT NOT NULL DEFAULT '';
CREATE INDEX outbox_by_publisher ON outbox (publisher, id)
WHERE published_at IS NULL;
ALTER TABLE selftests ADD COLUMN station TEXT NOT NULL DEFAULT '';
DROP INDEX selftests_rig;
CREATE INDEX selftests_rig ON selftests (station, rig, id);

CREATE TABLE slot_service_6 (
    station TEXT NOT NULL DEFAULT '',
    rig INTEGER NOT NULL,
    slot INTEGER NOT NULL,
    disabled INTEGER NOT NULL CHECK (disabled IN (0, 1)),
    reason TEXT NOT NULL,
    changed_by TEXT NOT NULL,
    changed_at TEXT NOT NULL,
    PRIMARY KEY (station, rig, slot)
);
INSERT INTO slot_service_6 (rig, slot, disabled, reason, changed_by, changed_at)
SELECT rig, slot, disabled, reason, changed_by, changed_at FROM slot_service;
DROP TABLE slot_service;
ALTER TABLE slot_service_6 RENAME TO slot_service;

-- Every station that has opened the store: when it started and when it was last heard of, and
-- its slots as it last reported them (JSON), for `jigctl status` site-wide and for
-- `jigctl station release`.
CREATE TABLE stations (
    station     TEXT PRIMARY KEY,
    host        TEXT NOT NULL,
    pid         INTEGER NOT NULL,
    started_at  TEXT NOT NULL,
    seen_at     TEXT NOT NULL,
    slots       TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(slots))
);
