ALTER TABLE groups DROP COLUMN pruned_seq;
ALTER TABLE devices DROP COLUMN received_pos;
