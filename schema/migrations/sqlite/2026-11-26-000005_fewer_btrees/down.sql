CREATE TABLE transaction_ids_old (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    group_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id, txn_id)
);
INSERT INTO transaction_ids_old (user_id, device_id, txn_id, group_id, seq)
    SELECT user_id, device_id, txn_id, group_id, seq FROM transaction_ids;
DROP TABLE transaction_ids;
ALTER TABLE transaction_ids_old RENAME TO transaction_ids;

CREATE TABLE group_messages_old (
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
INSERT INTO group_messages_old
    (group_id, seq, stream_pos, sender_user, sender_device, kind, epoch, message, adds, removes, ts)
    SELECT group_id, seq, stream_pos, sender_user, sender_device, kind, epoch, message, adds,
           removes, ts
    FROM group_messages;
DROP TABLE group_messages;
ALTER TABLE group_messages_old RENAME TO group_messages;
CREATE INDEX group_messages_by_pos ON group_messages(group_id, stream_pos);
