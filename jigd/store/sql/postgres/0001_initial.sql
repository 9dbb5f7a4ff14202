-- Times are text written by jigd.events.format_utc (fixed width, UTC, microseconds), as in the
-- SQLite schema: text order is time order, and every value reads back byte for byte. JSON is
-- text too (checked as jsonb), so journal data and outbox payloads stay exactly as written.
-- Keys and times sort in the "C" collation (byte order), as SQLite sorts them, whatever the
-- database's own collation.
CREATE TABLE batches (
    id          text COLLATE "C" PRIMARY KEY,
    seq         integer NOT NULL UNIQUE,
    booking     text NOT NULL,
    party       text NOT NULL,
    source      text NOT NULL,
    status      text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed')),
    created_at  text COLLATE "C" NOT NULL,
    closed_at   text COLLATE "C",
    CHECK ((status = 'closed') = (closed_at IS NOT NULL))
);

-- The GUIDs a manifest lists, with what the sending party declared. Never changes.
CREATE TABLE expected_guids (
    batch_id            text COLLATE "C" NOT NULL REFERENCES batches (id),
    guid                text COLLATE "C" NOT NULL,
    line                integer NOT NULL,
    declared_model      text,
    declared_firmware   text,
    PRIMARY KEY (batch_id, guid)
);
CREATE INDEX expected_guids_by_guid ON expected_guids (guid);

-- Where each listed GUID is; once final, its one outcome never changes (trigger below).
CREATE TABLE guid_states (
    batch_id            text COLLATE "C" NOT NULL,
    guid                text COLLATE "C" NOT NULL,
    status              text NOT NULL DEFAULT 'pending'
                        CHECK (status IN ('pending', 'in_progress', 'interrupted', 'final')),
    outcome             text
                        CHECK (outcome IN ('reflashed', 'already_current', 'failed',
                                           'not_received')),
    model               text,
    from_version        text,
    to_version          text,
    image_sha256        text,
    rig                 integer,
    slot                integer,
    attempts            integer NOT NULL DEFAULT 0,
    started_at          text COLLATE "C",
    finished_at         text COLLATE "C",
    failure_stage       text,
    failure_code        text,
    failure_detail      text,
    last_link_errors    text NOT NULL DEFAULT '[]' CHECK (last_link_errors::jsonb IS NOT NULL),
    updated_at          text COLLATE "C" NOT NULL,
    PRIMARY KEY (batch_id, guid),
    FOREIGN KEY (batch_id, guid) REFERENCES expected_guids (batch_id, guid),
    CHECK ((status = 'final') = (outcome IS NOT NULL))
);
CREATE INDEX guid_states_by_status ON guid_states (status);

CREATE FUNCTION guid_states_final_is_final() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'a GUID with a final outcome cannot change';
END;
$$;
CREATE TRIGGER guid_states_final_is_final BEFORE UPDATE ON guid_states
FOR EACH ROW WHEN (OLD.status = 'final') EXECUTE FUNCTION guid_states_final_is_final();

CREATE TABLE attempts (
    batch_id        text COLLATE "C" NOT NULL,
    guid            text COLLATE "C" NOT NULL,
    attempt         integer NOT NULL CHECK (attempt >= 1),
    rig             integer NOT NULL,
    slot            integer NOT NULL,
    started_at      text COLLATE "C" NOT NULL,
    finished_at     text COLLATE "C",
    stage_reached   text,
    error_code      text,
    error_detail    text,
    PRIMARY KEY (batch_id, guid, attempt),
    FOREIGN KEY (batch_id, guid) REFERENCES guid_states (batch_id, guid)
);

-- Append-only: every action, traceable per GUID, rig and slot.
CREATE TABLE events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    ts          text COLLATE "C" NOT NULL,
    kind        text NOT NULL,
    batch_id    text COLLATE "C",
    guid        text COLLATE "C",
    rig         integer,
    slot        integer,
    data        text NOT NULL DEFAULT '{}' CHECK (data::jsonb IS NOT NULL)
);
CREATE INDEX events_by_guid ON events (guid) WHERE guid IS NOT NULL;
CREATE INDEX events_by_batch ON events (batch_id) WHERE batch_id IS NOT NULL;

CREATE FUNCTION events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the journal is append-only';
END;
$$;
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
FOR EACH ROW EXECUTE FUNCTION events_append_only();
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
FOR EACH ROW EXECUTE FUNCTION events_append_only();

-- Hubs seen in a slot that no open batch lists: outside every batch's books.
CREATE TABLE rejected_hubs (
    id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    guid    text COLLATE "C" NOT NULL,
    rig     integer NOT NULL,
    slot    integer NOT NULL,
    reason  text NOT NULL,
    ts      text COLLATE "C" NOT NULL
);
CREATE INDEX rejected_hubs_by_guid ON rejected_hubs (guid);

-- MQTT messages, committed with what they report; id order is commit order.
CREATE TABLE outbox (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id        text NOT NULL UNIQUE,
    topic           text NOT NULL,
    payload         text NOT NULL CHECK (payload::jsonb IS NOT NULL),
    qos             integer NOT NULL CHECK (qos IN (0, 1, 2)),
    retain          boolean NOT NULL,
    created_at      text COLLATE "C" NOT NULL,
    published_at    text COLLATE "C"
);
CREATE INDEX outbox_pending ON outbox (id) WHERE published_at IS NULL;
