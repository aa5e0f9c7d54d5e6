-- Fewer B-trees to write per message (SQLite only: each B-tree a write touches is one more
-- page in every commit's WAL frames).
--
-- group_messages is keyed by its stream position (a rowid alias): the table itself replaces the
-- separate UNIQUE index on stream_pos, and appends go to its last page.
CREATE TABLE group_messages_new (
    stream_pos INTEGER PRIMARY KEY NOT NULL,
    group_id TEXT NOT NULL REFERENCES groups(group_id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    sender_user TEXT NOT NULL,
    sender_device TEXT NOT NULL,
    kind TEXT NOT NULL,
    epoch BIGINT NOT NULL,
    message BLOB NOT NULL,
    adds TEXT,
    removes TEXT,
    ts BIGINT NOT NULL,
    UNIQUE (group_id, seq)
);
INSERT INTO group_messages_new
    (stream_pos, group_id, seq, sender_user, sender_device, kind, epoch, message, adds, removes, ts)
    SELECT stream_pos, group_id, seq, sender_user, sender_device, kind, epoch, message, adds,
           removes, ts
    FROM group_messages;
DROP TABLE group_messages;
ALTER TABLE group_messages_new RENAME TO group_messages;
CREATE INDEX group_messages_by_pos ON group_messages(group_id, stream_pos);

-- transaction_ids is only ever looked up by its key: stored in the key's B-tree alone, with no
-- rowid table beside it.
CREATE TABLE transaction_ids_new (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    group_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id, txn_id)
) WITHOUT ROWID;
INSERT INTO transaction_ids_new (user_id, device_id, txn_id, group_id, seq)
    SELECT user_id, device_id, txn_id, group_id, seq FROM transaction_ids;
DROP TABLE transaction_ids;
ALTER TABLE transaction_ids_new RENAME TO transaction_ids;
