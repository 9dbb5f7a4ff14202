-- Slots taken out of service (`jigctl slot disable`, or a failed self-test) and put back: one
-- row per slot that was ever changed, its current state, why, by whom and when.
CREATE TABLE slot_service (
    rig integer NOT NULL,
    slot integer NOT NULL,
    disabled boolean NOT NULL,
    reason text NOT NULL,
    changed_by text NOT NULL,
    changed_at text COLLATE "C" NOT NULL,
    PRIMARY KEY (rig, slot)
);

-- Rig self-tests: one row per run, and one per check made in it (slot NULL: the controller).
CREATE TABLE selftests (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    rig integer NOT NULL,
    ts text COLLATE "C" NOT NULL
);
CREATE INDEX selftests_rig ON selftests (rig, id);

CREATE TABLE selftest_checks (
    selftest_id bigint NOT NULL REFERENCES selftests (id),
    seq integer NOT NULL,
    slot integer,
    check_name text NOT NULL,
    passed boolean NOT NULL,
    detail text NOT NULL,
    PRIMARY KEY (selftest_id, seq)
);
