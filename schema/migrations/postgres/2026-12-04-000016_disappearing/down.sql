DROP INDEX group_messages_expiry;
ALTER TABLE group_messages DROP COLUMN expires_ts;
ALTER TABLE groups DROP COLUMN disappear_after_ms;
