-- One global stream position orders everything a device can receive (group messages,
-- welcomes). Writers take the next position inside their transaction, which serialises them:
-- positions become visible in order, so a sync token never skips an event.
CREATE TABLE stream_position (
    id INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    pos BIGINT NOT NULL
);
INSERT INTO stream_position (id, pos) VALUES (1, 0);

CREATE TABLE key_packages (
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    kp_ref BLOB NOT NULL UNIQUE,
    data BLOB NOT NULL,
    not_after_ms BIGINT NOT NULL,
    last_resort BOOLEAN NOT NULL,
    FOREIGN KEY (user_id, device_id) REFERENCES devices(user_id, device_id) ON DELETE CASCADE
);
CREATE INDEX key_packages_by_device ON key_packages(user_id, device_id, last_resort, id);

CREATE TABLE groups (
    group_id TEXT PRIMARY KEY NOT NULL,
    epoch BIGINT NOT NULL,
    last_seq BIGINT NOT NULL,
    group_info BLOB,
    created_ts BIGINT NOT NULL
);

-- A device's membership of a group: from the position of the commit that added it
-- (exclusive: it gets the Welcome, not that commit) to the one that removed it (inclusive).
CREATE TABLE memberships (
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    group_id TEXT NOT NULL REFERENCES groups(group_id) ON DELETE CASCADE,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    leaf_index BIGINT NOT NULL,
    joined_pos BIGINT NOT NULL,
    left_pos BIGINT
);
CREATE INDEX memberships_by_device ON memberships(user_id, device_id, group_id);
CREATE INDEX memberships_by_group ON memberships(group_id, left_pos);

CREATE TABLE group_messages (
    group_id TEXT NOT NULL REFERENCES groups(group_id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    stream_pos BIGINT NOT NULL UNIQUE,
    sender_user TEXT NOT NULL,
    sender_device TEXT NOT NULL,
    kind TEXT NOT NULL,
    epoch BIGINT NOT NULL,
    message BLOB NOT NULL,
    adds TEXT,
    removes TEXT,
    ts BIGINT NOT NULL,
    PRIMARY KEY (group_id, seq)
);
CREATE INDEX group_messages_by_pos ON group_messages(group_id, stream_pos);

CREATE TABLE welcomes (
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
CREATE INDEX welcomes_by_device ON welcomes(user_id, device_id, stream_pos);

-- Idempotency of PUT /send/{txn_id}: the first answer per (device, txn_id).
CREATE TABLE transaction_ids (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    group_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id, txn_id)
);
