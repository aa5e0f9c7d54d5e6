-- Retention of delivered messages (docs/operations.md#retention).
-- `received_pos`: the stream position up to which the device has said it received its events
-- (the `since` of its `/sync`, or a WebSocket `received` frame); no message at or before a
-- position some current member device has not reached is ever deleted.
ALTER TABLE devices ADD COLUMN received_pos BIGINT NOT NULL DEFAULT 0;
-- `pruned_seq`: every message of the group with a seq up to this one was deleted by retention
-- (a prefix of its log); catch-up pages say so, and followers skip ahead over it.
ALTER TABLE groups ADD COLUMN pruned_seq BIGINT NOT NULL DEFAULT 0;
-- Several processes: each fills the holes other processes' positions leave in its stream tail
-- with one read of a range of positions (schema/src/tail.rs). SQLite serves one process and
-- never reads by position alone.
CREATE INDEX group_messages_by_stream_pos ON group_messages(stream_pos);
CREATE INDEX welcomes_by_stream_pos ON welcomes(stream_pos);
