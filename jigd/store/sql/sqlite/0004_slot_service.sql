-- Slots taken out of service (`jigctl slot disable`, or a failed self-test) and put back: one
-- row per slot that was ever changed, its current state, why, by whom and when.
CREATE TABLE slot_service (
    rig INTEGER NOT NULL,
    slot INTEGER NOT NULL,
    disabled INTEGER NOT NULL CHECK (disabled IN (0, 1)),
    reason TEXT NOT NULL,
    changed_by TEXT NOT NULL,
    changed_at TEXT NOT NULL,
    PRIMARY KEY (rig, slot)
);

-- Rig self-tests: one row per run, and one per check made in it (slot NULL: the controller).
CREATE TABLE selftests (
    id INTEGER PRIMARY KEY,
    rig INTEGER NOT NULL,
    ts TEXT NOT NULL
);
CREATE INDEX selftests_rig ON selftests (rig, id);

CREATE TABLE selftest_checks (
    selftest_id INTEGER NOT NULL REFERENCES selftests (id),
    seq INTEGER NOT NULL,
    slot INTEGER,
    check_name TEXT NOT NULL,
    passed INTEGER NOT NULL CHECK (passed IN (0, 1)),
    detail TEXT NOT NULL,
    PRIMARY KEY (selftest_id, seq)
);
