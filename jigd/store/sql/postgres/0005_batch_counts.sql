-- Each batch's counts, kept by triggers in the same transaction as the GUID states they count,
-- so reading a batch's summary costs the same whatever its size (docs/architecture.md,
-- "Store"). One row per batch; `expected` always equals pending plus the outcomes.
CREATE TABLE batch_counts (
    batch_id            text COLLATE "C" PRIMARY KEY REFERENCES batches (id),
    expected            integer NOT NULL DEFAULT 0,
    received            integer NOT NULL DEFAULT 0,
    pending             integer NOT NULL DEFAULT 0,
    reflashed           integer NOT NULL DEFAULT 0,
    already_current     integer NOT NULL DEFAULT 0,
    failed              integer NOT NULL DEFAULT 0,
    not_received        integer NOT NULL DEFAULT 0,
    CHECK (expected = pending + reflashed + already_current + failed + not_received),
    CHECK (LEAST(received, pending, reflashed, already_current, failed, not_received) >= 0)
);

INSERT INTO batch_counts
SELECT
    b.id,
    COUNT(s.guid),
    COUNT(*) FILTER (WHERE s.attempts > 0),
    COUNT(*) FILTER (WHERE s.guid IS NOT NULL AND s.outcome IS NULL),
    COUNT(*) FILTER (WHERE s.outcome = 'reflashed'),
    COUNT(*) FILTER (WHERE s.outcome = 'already_current'),
    COUNT(*) FILTER (WHERE s.outcome = 'failed'),
    COUNT(*) FILTER (WHERE s.outcome = 'not_received')
FROM batches b LEFT JOIN guid_states s ON s.batch_id = b.id
GROUP BY b.id;

CREATE FUNCTION batch_counts_new_batch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO batch_counts (batch_id) VALUES (NEW.id);
    RETURN NULL;
END;
$$;
CREATE TRIGGER batch_counts_new_batch AFTER INSERT ON batches
FOR EACH ROW EXECUTE FUNCTION batch_counts_new_batch();

-- 1 if the GUID state row counts under `outcome` (NULL: pending), else 0.
CREATE FUNCTION batch_counts_is(outcome text, wanted text) RETURNS integer
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN outcome IS NOT DISTINCT FROM wanted THEN 1 ELSE 0 END
$$;

CREATE FUNCTION batch_counts_new_guid() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE batch_counts SET
        expected = expected + 1,
        received = received + (NEW.attempts > 0)::integer,
        pending = pending + batch_counts_is(NEW.outcome, NULL),
        reflashed = reflashed + batch_counts_is(NEW.outcome, 'reflashed'),
        already_current = already_current + batch_counts_is(NEW.outcome, 'already_current'),
        failed = failed + batch_counts_is(NEW.outcome, 'failed'),
        not_received = not_received + batch_counts_is(NEW.outcome, 'not_received')
    WHERE batch_id = NEW.batch_id;
    RETURN NULL;
END;
$$;
CREATE TRIGGER batch_counts_new_guid AFTER INSERT ON guid_states
FOR EACH ROW EXECUTE FUNCTION batch_counts_new_guid();

CREATE FUNCTION batch_counts_guid_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE batch_counts SET
        received = received + (NEW.attempts > 0)::integer - (OLD.attempts > 0)::integer,
        pending = pending + batch_counts_is(NEW.outcome, NULL) - batch_counts_is(OLD.outcome, NULL),
        reflashed = reflashed
            + batch_counts_is(NEW.outcome, 'reflashed') - batch_counts_is(OLD.outcome, 'reflashed'),
        already_current = already_current
            + batch_counts_is(NEW.outcome, 'already_current')
            - batch_counts_is(OLD.outcome, 'already_current'),
        failed = failed
            + batch_counts_is(NEW.outcome, 'failed') - batch_counts_is(OLD.outcome, 'failed'),
        not_received = not_received
            + batch_counts_is(NEW.outcome, 'not_received')
            - batch_counts_is(OLD.outcome, 'not_received')
    WHERE batch_id = NEW.batch_id;
    RETURN NULL;
END;
$$;
CREATE TRIGGER batch_counts_guid_changed AFTER UPDATE OF outcome, attempts ON guid_states
FOR EACH ROW
WHEN (OLD.outcome IS DISTINCT FROM NEW.outcome OR (OLD.attempts > 0) <> (NEW.attempts > 0))
EXECUTE FUNCTION batch_counts_guid_changed();

-- The journal stays append-only except for retention: the events of a closed batch, and those
-- outside every batch (rejections, alerts), may be purged; an open batch's never.
DROP TRIGGER events_no_delete ON events;
CREATE FUNCTION events_no_delete_while_open() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.batch_id IS NOT NULL
        AND NOT EXISTS (SELECT 1 FROM batches WHERE id = OLD.batch_id AND status = 'closed')
    THEN
        RAISE EXCEPTION 'the journal of an open batch is append-only';
    END IF;
    RETURN OLD;
END;
$$;
CREATE TRIGGER events_no_delete_while_open BEFORE DELETE ON events
FOR EACH ROW EXECUTE FUNCTION events_no_delete_while_open();

CREATE INDEX outbox_published ON outbox (published_at) WHERE published_at IS NOT NULL;
CREATE INDEX batches_closed ON batches (closed_at) WHERE closed_at IS NOT NULL;
CREATE INDEX events_outside_batches ON events (ts) WHERE batch_id IS NULL;
