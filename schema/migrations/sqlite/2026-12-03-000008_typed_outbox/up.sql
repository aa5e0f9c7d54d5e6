-- The outbox, typed: every column has one meaning, for the kinds of event that use it (the
-- CHECK says which), and the store reads a row back into its event type.
--
-- Before, `recipients` held a JSON object whose shape depended on `kind` ({sender, recipients}
-- for a Welcome, {user_id, devices} for a device-list update), `payload` the Welcome, and a
-- device-list update had an empty `group_id`.
--
--   kind           'message' | 'welcome' | 'device_list_update'
--   group_id       message, welcome: the group
--   seq            message: its seq in the group's log (the message is read from the log)
--   welcome        welcome: the MLS Welcome's bytes
--   sender_user,
--   sender_device  welcome: the device whose commit made it
--   recipients     welcome: JSON [{user_id, device_id}], the destination's added devices
--   user_id        device_list_update: the local user
--   devices        device_list_update: JSON [{device_id, signature_key}], signature_key in
--                  padded standard base64
--
-- Rebuilt (SQLite cannot change a column's nullability or add a CHECK in place). Row ids are
-- kept, and so is the AUTOINCREMENT counter even when the queue is empty: the sender names a
-- transaction after its rows' ids, and a receiver remembers transaction ids for days, so an
-- id must never be handed out twice.
CREATE TABLE outbox_new (
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    destination TEXT NOT NULL,
    kind TEXT NOT NULL,
    group_id TEXT,
    seq BIGINT,
    welcome BLOB,
    sender_user TEXT,
    sender_device TEXT,
    recipients TEXT,
    user_id TEXT,
    devices TEXT,
    created_ts BIGINT NOT NULL,
    -- Which columns each kind uses.
    CHECK (
        (kind = 'message' AND group_id IS NOT NULL AND seq IS NOT NULL
            AND welcome IS NULL AND sender_user IS NULL AND sender_device IS NULL
            AND recipients IS NULL AND user_id IS NULL AND devices IS NULL)
        OR (kind = 'welcome' AND group_id IS NOT NULL AND seq IS NULL
            AND welcome IS NOT NULL AND sender_user IS NOT NULL AND sender_device IS NOT NULL
            AND recipients IS NOT NULL AND user_id IS NULL AND devices IS NULL)
        OR (kind = 'device_list_update' AND group_id IS NULL AND seq IS NULL
            AND welcome IS NULL AND sender_user IS NULL AND sender_device IS NULL
            AND recipients IS NULL AND user_id IS NOT NULL AND devices IS NOT NULL)
    )
);
-- Rows that do not fit the CHECK (none was ever written) are left out: they could not have
-- been sent, the sender dropped such a row when its turn came.
INSERT OR IGNORE INTO outbox_new (id, destination, kind, group_id, seq, created_ts)
    SELECT id, destination, kind, group_id, seq, created_ts FROM outbox
    WHERE kind = 'message' AND seq IS NOT NULL;
INSERT OR IGNORE INTO outbox_new (id, destination, kind, group_id, welcome, sender_user, sender_device,
        recipients, created_ts)
    SELECT id, destination, kind, group_id, payload,
           json_extract(recipients, '$.sender.user_id'),
           json_extract(recipients, '$.sender.device_id'),
           json_extract(recipients, '$.recipients'),
           created_ts
    FROM outbox
    WHERE kind = 'welcome' AND payload IS NOT NULL AND json_valid(recipients);
INSERT OR IGNORE INTO outbox_new (id, destination, kind, user_id, devices, created_ts)
    SELECT id, destination, kind, json_extract(recipients, '$.user_id'),
           json_extract(recipients, '$.devices'), created_ts
    FROM outbox
    WHERE kind = 'device_list_update' AND json_valid(recipients);
DELETE FROM sqlite_sequence WHERE name = 'outbox_new';
INSERT INTO sqlite_sequence (name, seq)
    SELECT 'outbox_new', MAX(seq) FROM sqlite_sequence WHERE name = 'outbox' HAVING COUNT(*) > 0;
DROP TABLE outbox;
ALTER TABLE outbox_new RENAME TO outbox;
CREATE INDEX outbox_by_destination ON outbox(destination, id);
