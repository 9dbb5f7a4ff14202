-- The outbox holds the store's events, not MQTT messages: each row is an event's kind and its
-- payload text; the publisher maps the kind to a topic, QoS and retain flag. Rows keep their
-- id (commit order), event_id and payload byte for byte. The kind follows from the payload's
-- schema.
CREATE TABLE outbox_events (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id        text NOT NULL UNIQUE,
    kind            text NOT NULL CHECK (kind IN ('result', 'summary', 'alert')),
    payload         text NOT NULL CHECK (payload::jsonb IS NOT NULL),
    created_at      text COLLATE "C" NOT NULL,
    published_at    text COLLATE "C"
);
INSERT INTO outbox_events (id, event_id, kind, payload, created_at, published_at)
OVERRIDING SYSTEM VALUE
SELECT
    id,
    event_id,
    CASE payload::jsonb ->> 'schema'
        WHEN 'jigd.result/1' THEN 'result'
        WHEN 'jigd.summary/1' THEN 'summary'
        WHEN 'jigd.alert/1' THEN 'alert'
    END,
    payload,
    created_at,
    published_at
FROM outbox
ORDER BY id;
-- Ids are never reused: carry the old table's counter over.
SELECT setval(
    pg_get_serial_sequence('outbox_events', 'id'),
    GREATEST((SELECT last_value FROM outbox_id_seq), 1),
    (SELECT is_called FROM outbox_id_seq)
);
DROP TABLE outbox;
ALTER TABLE outbox_events RENAME TO outbox;
ALTER INDEX outbox_events_pkey RENAME TO outbox_pkey;
ALTER INDEX outbox_events_event_id_key RENAME TO outbox_event_id_key;
ALTER SEQUENCE outbox_events_id_seq RENAME TO outbox_id_seq;
CREATE INDEX outbox_pending ON outbox (id) WHERE published_at IS NULL;
