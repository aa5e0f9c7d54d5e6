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
-- Changed in place: row ids and the id sequence stay (the sender names a transaction after
-- its rows' ids, and a receiver remembers transaction ids for days).
ALTER TABLE outbox RENAME COLUMN payload TO welcome;
ALTER TABLE outbox ALTER COLUMN group_id DROP NOT NULL;
ALTER TABLE outbox
    ADD COLUMN sender_user TEXT,
    ADD COLUMN sender_device TEXT,
    ADD COLUMN user_id TEXT,
    ADD COLUMN devices TEXT;
-- Every old `recipients` was written by serde_json: it is valid JSON.
UPDATE outbox
    SET sender_user = recipients::json -> 'sender' ->> 'user_id',
        sender_device = recipients::json -> 'sender' ->> 'device_id',
        recipients = (recipients::json -> 'recipients')::text
    WHERE kind = 'welcome';
UPDATE outbox
    SET user_id = recipients::json ->> 'user_id',
        devices = (recipients::json -> 'devices')::text,
        recipients = NULL,
        group_id = NULL
    WHERE kind = 'device_list_update';
-- Rows that do not fit (none was ever written) could not have been sent: the sender dropped
-- such a row when its turn came.
DELETE FROM outbox WHERE NOT (
    (kind = 'message' AND group_id IS NOT NULL AND seq IS NOT NULL
        AND welcome IS NULL AND sender_user IS NULL AND sender_device IS NULL
        AND recipients IS NULL AND user_id IS NULL AND devices IS NULL)
    OR (kind = 'welcome' AND group_id IS NOT NULL AND seq IS NULL
        AND welcome IS NOT NULL AND sender_user IS NOT NULL AND sender_device IS NOT NULL
        AND recipients IS NOT NULL AND user_id IS NULL AND devices IS NULL)
    OR (kind = 'device_list_update' AND group_id IS NULL AND seq IS NULL
        AND welcome IS NULL AND sender_user IS NULL AND sender_device IS NULL
        AND recipients IS NULL AND user_id IS NOT NULL AND devices IS NOT NULL)
);
-- Which columns each kind uses.
ALTER TABLE outbox ADD CONSTRAINT outbox_one_event CHECK (
    (kind = 'message' AND group_id IS NOT NULL AND seq IS NOT NULL
        AND welcome IS NULL AND sender_user IS NULL AND sender_device IS NULL
        AND recipients IS NULL AND user_id IS NULL AND devices IS NULL)
    OR (kind = 'welcome' AND group_id IS NOT NULL AND seq IS NULL
        AND welcome IS NOT NULL AND sender_user IS NOT NULL AND sender_device IS NOT NULL
        AND recipients IS NOT NULL AND user_id IS NULL AND devices IS NULL)
    OR (kind = 'device_list_update' AND group_id IS NULL AND seq IS NULL
        AND welcome IS NULL AND sender_user IS NULL AND sender_device IS NULL
        AND recipients IS NULL AND user_id IS NOT NULL AND devices IS NOT NULL)
);
