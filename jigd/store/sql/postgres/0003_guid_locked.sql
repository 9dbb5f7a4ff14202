-- Whether jigd left a failed hub locked: true locked (never unlocked, or locked again after the
-- failure), false it may be open (locking it again failed), NULL not known (a hub lost
-- mid-flash, outcomes other than failed).
ALTER TABLE guid_states ADD COLUMN locked boolean;
