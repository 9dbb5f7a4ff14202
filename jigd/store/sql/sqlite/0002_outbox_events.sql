-- The outbox holds the store's events, not MQTT messages: each row is an event's kind and its
-- payload text; the publisher maps the kind to a topic, QoS and retain flag. Rows keep their
-- id (commit order), event_id and payload byte for byte, so pending ones are delivered as they
-- would have been. The kind follows from the payload's schema.
CREATE TABLE outbox_events (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id        TEXT NOT NULL UNIQUE,
    kind            TEXT NOT NULL CHECK (kind IN ('result', 'summary', 'alert')),
    payload         TEXT NOT NULL CHECK (json_valid(payload)),
    created_at      TEXT NOT NULL,
    published_at    TEXT
) STRICT;
INSERT INTO outbox_events (id, event_id, kind, payload, created_at, published_at)
SELECT
    id,
    event_id,
    CASE json_extract(payload, '$.schema')
        WHEN 'jigd.result/1' THEN 'result'
        WHEN 'jigd.summary/1' THEN 'summary'
        WHEN 'jigd.alert/1' THEN 'alert'
    END,
    payload,
    created_at,
    published_at
FROM outbox
ORDER BY id;
-- Ids are never reused: carry the old table's AUTOINCREMENT counter over.
DELETE FROM sqlite_sequence WHERE name = 'outbox_events';
INSERT INTO sqlite_sequence (name, seq) SELECT 'outbox_events', seq FROM sqlite_sequence
WHERE name = 'outbox';
DROP TABLE outbox;
ALTER TABLE outbox_events RENAME TO outbox;
CREATE INDEX outbox_pending ON outbox (id) WHERE published_at IS NULL;
