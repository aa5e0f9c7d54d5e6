DROP INDEX welcomes_by_stream_pos;
DROP INDEX group_messages_by_stream_pos;
ALTER TABLE groups DROP COLUMN pruned_seq;
ALTER TABLE devices DROP COLUMN received_pos;
