-- Disappearing messages (docs/protocol.md#disappearing-messages): the timer the hub tracks
-- from the group's disappearing-messages extension (NULL: messages stay), and each message's
-- expiry (accepted + timer, application messages only): never delivered to a device after it,
-- its ciphertext wiped by the expiry sweep.
ALTER TABLE groups ADD COLUMN disappear_after_ms BIGINT;
ALTER TABLE group_messages ADD COLUMN expires_ts BIGINT;
CREATE INDEX group_messages_expiry ON group_messages (expires_ts) WHERE expires_ts IS NOT NULL;
