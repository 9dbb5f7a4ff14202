-- Schema 6: one store shared by the stations of a site (docs/architecture.md, "Site").
-- `station` names the station that wrote a row. Rows written before this version have ''
-- (NULL in the journal and in GUID states), until the first station to open the store adopts
-- what can change (open attempts, unpublished events, slot service, self-tests); results and
-- the journal keep their past as it was written.
ALTER TABLE attempts ADD COLUMN station text COLLATE "C" NOT NULL DEFAULT '';
-- The station that began the GUID's last attempt: it holds the GUID's claim while the GUID is
-- in progress, and recorded its result once final.
ALTER TABLE guid_states ADD COLUMN station text COLLATE "C";
ALTER TABLE events ADD COLUMN station text COLLATE "C";
ALTER TABLE rejected_hubs ADD COLUMN station text COLLATE "C" NOT NULL DEFAULT '';
-- `station` names the topic (`<prefix>/<station>/...`); `publisher` is the station that
-- publishes it: the same, unless `jigctl station release` handed a gone station's rows over.
ALTER TABLE outbox ADD COLUMN station text COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE outbox ADD COLUMN publisher text COLLATE "C" NOT NULL DEFAULT '';
CREATE INDEX outbox_by_publisher ON outbox (publisher, id) WHERE published_at IS NULL;
ALTER TABLE selftests ADD COLUMN station text COLLATE "C" NOT NULL DEFAULT '';
DROP INDEX selftests_rig;
CREATE INDEX selftests_rig ON selftests (station, rig, id);

ALTER TABLE slot_service ADD COLUMN station text COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE slot_service DROP CONSTRAINT slot_service_pkey;
ALTER TABLE slot_service ADD PRIMARY KEY (station, rig, slot);

-- Every station that has opened the store: when it started and when it was last heard of, and
-- its slots as it last reported them (JSON), for `jigctl status` site-wide and for
-- `jigctl station release`.
CREATE TABLE stations (
    station     text COLLATE "C" PRIMARY KEY,
    host        text NOT NULL,
    pid         integer NOT NULL,
    started_at  text COLLATE "C" NOT NULL,
    seen_at     text COLLATE "C" NOT NULL,
    slots       text NOT NULL DEFAULT '[]' CHECK (slots::jsonb IS NOT NULL)
);
