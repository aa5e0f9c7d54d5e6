-- A Welcome is stored once, whatever its number of recipients: `welcome_bodies` holds the bytes,
-- `welcomes` one small row per recipient device pointing at them. A body relayed by another
-- server remembers (origin, event_id), so a replayed event is stored once.
CREATE TABLE welcome_bodies (
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    welcome BLOB NOT NULL,
    origin TEXT,
    event_id TEXT
);
CREATE UNIQUE INDEX welcome_bodies_by_event ON welcome_bodies(origin, event_id);

INSERT INTO welcome_bodies (id, welcome) SELECT id, welcome FROM welcomes;
CREATE TABLE welcomes_new (
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    stream_pos BIGINT NOT NULL,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    group_id TEXT NOT NULL,
    sender_user TEXT NOT NULL,
    sender_device TEXT NOT NULL,
    body_id BIGINT NOT NULL REFERENCES welcome_bodies(id),
    ts BIGINT NOT NULL,
    UNIQUE (body_id, user_id, device_id)
);
INSERT INTO welcomes_new
    (id, stream_pos, user_id, device_id, group_id, sender_user, sender_device, body_id, ts)
    SELECT id, stream_pos, user_id, device_id, group_id, sender_user, sender_device, id, ts
    FROM welcomes;
DROP TABLE welcomes;
ALTER TABLE welcomes_new RENAME TO welcomes;
CREATE INDEX welcomes_by_device ON welcomes(user_id, device_id, stream_pos);
