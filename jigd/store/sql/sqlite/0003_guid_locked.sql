-- Whether jigd left a failed hub locked: 1 locked (never unlocked, or locked again after the
-- failure), 0 it may be open (locking it again failed), NULL not known (a hub lost mid-flash,
-- results recorded before this version, outcomes other than failed).
ALTER TABLE guid_states ADD COLUMN locked INTEGER CHECK (locked IN (0, 1));
