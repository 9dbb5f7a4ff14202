-- Each batch's counts, kept by triggers in the same transaction as the GUID states they count,
-- so reading a batch's summary costs the same whatever its size (docs/architecture.md,
-- "Store"). One row per batch; `expected` always equals pending plus the outcomes.
CREATE TABLE batch_counts (
    batch_id            TEXT PRIMARY KEY REFERENCES batches (id),
    expected            INTEGER NOT NULL DEFAULT 0,
    received            INTEGER NOT NULL DEFAULT 0,
    pending             INTEGER NOT NULL DEFAULT 0,
    reflashed           INTEGER NOT NULL DEFAULT 0,
    already_current     INTEGER NOT NULL DEFAULT 0,
    failed              INTEGER NOT NULL DEFAULT 0,
    not_received        INTEGER NOT NULL DEFAULT 0,
    CHECK (expected = pending + reflashed + already_current + failed + not_received),
    CHECK (MIN(received, pending, reflashed, already_current, failed, not_received) >= 0)
) STRICT, WITHOUT ROWID;

INSERT INTO batch_counts
SELECT
    b.id,
    COUNT(s.guid),
    COALESCE(SUM(s.attempts > 0), 0),
    COALESCE(SUM(s.guid IS NOT NULL AND s.outcome IS NULL), 0),
    COALESCE(SUM(s.outcome IS 'reflashed'), 0),
    COALESCE(SUM(s.outcome IS 'already_current'), 0),
    COALESCE(SUM(s.outcome IS 'failed'), 0),
    COALESCE(SUM(s.outcome IS 'not_received'), 0)
FROM batches b LEFT JOIN guid_states s ON s.batch_id = b.id
GROUP BY b.id;

CREATE TRIGGER batch_counts_new_batch AFTER INSERT ON batches
BEGIN
    INSERT INTO batch_counts (batch_id) VALUES (NEW.id);
END;

CREATE TRIGGER batch_counts_new_guid AFTER INSERT ON guid_states
BEGIN
    UPDATE batch_counts SET
        expected = expected + 1,
        received = received + (NEW.attempts > 0),
        pending = pending + (NEW.outcome IS NULL),
        reflashed = reflashed + (NEW.outcome IS 'reflashed'),
        already_current = already_current + (NEW.outcome IS 'already_current'),
        failed = failed + (NEW.outcome IS 'failed'),
        not_received = not_received + (NEW.outcome IS 'not_received')
    WHERE batch_id = NEW.batch_id;
END;

CREATE TRIGGER batch_counts_guid_changed AFTER UPDATE OF outcome, attempts ON guid_states
WHEN OLD.outcome IS NOT NEW.outcome OR (OLD.attempts > 0) <> (NEW.attempts > 0)
BEGIN
    UPDATE batch_counts SET
        received = received + (NEW.attempts > 0) - (OLD.attempts > 0),
        pending = pending + (NEW.outcome IS NULL) - (OLD.outcome IS NULL),
        reflashed = reflashed + (NEW.outcome IS 'reflashed') - (OLD.outcome IS 'reflashed'),
        already_current = already_current
            + (NEW.outcome IS 'already_current') - (OLD.outcome IS 'already_current'),
        failed = failed + (NEW.outcome IS 'failed') - (OLD.outcome IS 'failed'),
        not_received = not_received
            + (NEW.outcome IS 'not_received') - (OLD.outcome IS 'not_received')
    WHERE batch_id = NEW.batch_id;
END;

-- The journal stays append-only except for retention: the events of a closed batch, and those
-- outside every batch (rejections, alerts), may be purged; an open batch's never.
DROP TRIGGER events_no_delete;
CREATE TRIGGER events_no_delete_while_open BEFORE DELETE ON events
WHEN OLD.batch_id IS NOT NULL
    AND NOT EXISTS (SELECT 1 FROM batches WHERE id = OLD.batch_id AND status = 'closed')
BEGIN
    SELECT RAISE(ABORT, 'the journal of an open batch is append-only');
END;

CREATE INDEX outbox_published ON outbox (published_at) WHERE published_at IS NOT NULL;
CREATE INDEX batches_closed ON batches (closed_at) WHERE closed_at IS NOT NULL;
CREATE INDEX events_outside_batches ON events (ts) WHERE batch_id IS NULL;
