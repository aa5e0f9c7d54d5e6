CREATE TABLE outbox_old (
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    destination TEXT NOT NULL,
    kind TEXT NOT NULL,
    group_id TEXT NOT NULL,
    seq BIGINT,
    payload BLOB,
    recipients TEXT,
    created_ts BIGINT NOT NULL
);
INSERT INTO outbox_old (id, destination, kind, group_id, seq, payload, recipients, created_ts)
    SELECT id, destination, kind, COALESCE(group_id, ''), seq, welcome,
           CASE kind
               WHEN 'welcome' THEN json_object(
                   'sender', json_object('user_id', sender_user, 'device_id', sender_device),
                   'recipients', json(recipients))
               WHEN 'device_list_update' THEN json_object('user_id', user_id, 'devices', json(devices))
           END,
           created_ts
    FROM outbox;
DELETE FROM sqlite_sequence WHERE name = 'outbox_old';
INSERT INTO sqlite_sequence (name, seq)
    SELECT 'outbox_old', MAX(seq) FROM sqlite_sequence WHERE name = 'outbox' HAVING COUNT(*) > 0;
DROP TABLE outbox;
ALTER TABLE outbox_old RENAME TO outbox;
CREATE INDEX outbox_by_destination ON outbox(destination, id);
