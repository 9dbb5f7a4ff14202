CREATE TABLE batches (
    id          TEXT PRIMARY KEY,
    seq         INTEGER NOT NULL UNIQUE,
    booking     TEXT NOT NULL,
    party       TEXT NOT NULL,
    source      TEXT NOT NULL,
    status      TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed')),
    created_at  TEXT NOT NULL,
    closed_at   TEXT,
    CHECK ((status = 'closed') = (closed_at IS NOT NULL))
) STRICT;

-- The GUIDs a manifest lists, with what the sending party declared. Never changes.
CREATE TABLE expected_guids (
    batch_id            TEXT NOT NULL REFERENCES batches (id),
    guid                TEXT NOT NULL,
    line                INTEGER NOT NULL,
    declared_model      TEXT,
    declared_firmware   TEXT,
    PRIMARY KEY (batch_id, guid)
) STRICT, WITHOUT ROWID;
CREATE INDEX expected_guids_by_guid ON expected_guids (guid);

-- Where each listed GUID is; once final, its one outcome never changes (trigger below).
CREATE TABLE guid_states (
    batch_id            TEXT NOT NULL,
    guid                TEXT NOT NULL,
    status              TEXT NOT NULL DEFAULT 'pending'
                        CHECK (status IN ('pending', 'in_progress', 'interrupted', 'final')),
    outcome             TEXT
                        CHECK (outcome IN ('reflashed', 'already_current', 'failed',
                                           'not_received')),
    model               TEXT,
    from_version        TEXT,
    to_version          TEXT,
    image_sha256        TEXT,
    rig                 INTEGER,
    slot                INTEGER,
    attempts            INTEGER NOT NULL DEFAULT 0,
    started_at          TEXT,
    finished_at         TEXT,
    failure_stage       TEXT,
    failure_code        TEXT,
    failure_detail      TEXT,
    last_link_errors    TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(last_link_errors)),
    updated_at          TEXT NOT NULL,
    PRIMARY KEY (batch_id, guid),
    FOREIGN KEY (batch_id, guid) REFERENCES expected_guids (batch_id, guid),
    CHECK ((status = 'final') = (outcome IS NOT NULL))
) STRICT, WITHOUT ROWID;
CREATE INDEX guid_states_by_status ON guid_states (status);
CREATE TRIGGER guid_states_final_is_final BEFORE UPDATE ON guid_states
WHEN OLD.status = 'final'
BEGIN
    SELECT RAISE(ABORT, 'a GUID with a final outcome cannot change');
END;

CREATE TABLE attempts (
    batch_id        TEXT NOT NULL,
    guid            TEXT NOT NULL,
    attempt         INTEGER NOT NULL CHECK (attempt >= 1),
    rig             INTEGER NOT NULL,
    slot            INTEGER NOT NULL,
    started_at      TEXT NOT NULL,
    finished_at     TEXT,
    stage_reached   TEXT,
    error_code      TEXT,
    error_detail    TEXT,
    PRIMARY KEY (batch_id, guid, attempt),
    FOREIGN KEY (batch_id, guid) REFERENCES guid_states (batch_id, guid)
) STRICT, WITHOUT ROWID;

-- Append-only: every action, traceable per GUID, rig and slot.
CREATE TABLE events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    ts          TEXT NOT NULL,
    kind        TEXT NOT NULL,
    batch_id    TEXT,
    guid        TEXT,
    rig         INTEGER,
    slot        INTEGER,
    data        TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(data))
) STRICT;
CREATE INDEX events_by_guid ON events (guid) WHERE guid IS NOT NULL;
CREATE INDEX events_by_batch ON events (batch_id) WHERE batch_id IS NOT NULL;
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'the journal is append-only');
END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN
    SELECT RAISE(ABORT, 'the journal is append-only');
END;

-- Hubs seen in a slot that no open batch lists: outside every batch's books.
CREATE TABLE rejected_hubs (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    guid    TEXT NOT NULL,
    rig     INTEGER NOT NULL,
    slot    INTEGER NOT NULL,
    reason  TEXT NOT NULL,
    ts      TEXT NOT NULL
) STRICT;
CREATE INDEX rejected_hubs_by_guid ON rejected_hubs (guid);

-- MQTT messages, committed with what they report; id order is commit order.
CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id        TEXT NOT NULL UNIQUE,
    topic           TEXT NOT NULL,
    payload         TEXT NOT NULL CHECK (json_valid(payload)),
    qos             INTEGER NOT NULL CHECK (qos IN (0, 1, 2)),
    retain          INTEGER NOT NULL CHECK (retain IN (0, 1)),
    created_at      TEXT NOT NULL,
    published_at    TEXT
) STRICT;
CREATE INDEX outbox_pending ON outbox (id) WHERE published_at IS NULL;
