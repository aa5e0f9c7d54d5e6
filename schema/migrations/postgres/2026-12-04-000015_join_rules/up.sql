-- Join links (docs/protocol.md#join-links): the join rules the hub tracks from the group's
-- join-rules extension, as its canonical JSON `{"banned":[…],"code":"…"}`; NULL for a group
-- without them (not joinable by link).
ALTER TABLE groups ADD COLUMN join_rules TEXT;
