CREATE TABLE welcomes_old (
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    stream_pos BIGINT NOT NULL,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    group_id TEXT NOT NULL,
    sender_user TEXT NOT NULL,
    sender_device TEXT NOT NULL,
    welcome BLOB NOT NULL,
    ts BIGINT NOT NULL
);
INSERT INTO welcomes_old
    (id, stream_pos, user_id, device_id, group_id, sender_user, sender_device, welcome, ts)
    SELECT w.id, w.stream_pos, w.user_id, w.device_id, w.group_id, w.sender_user,
           w.sender_device, b.welcome, w.ts
    FROM welcomes w JOIN welcome_bodies b ON b.id = w.body_id;
DROP TABLE welcomes;
DROP TABLE welcome_bodies;
ALTER TABLE welcomes_old RENAME TO welcomes;
CREATE INDEX welcomes_by_device ON welcomes(user_id, device_id, stream_pos);
