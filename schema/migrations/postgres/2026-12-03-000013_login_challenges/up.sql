-- Challenges for passwordless login (docs/protocol.md#challenge-login): issued for a device
-- with a bound signature key, used once, expiring after `auth.login_challenge_ttl_ms`. Only
-- the SHA-256 of a challenge is kept (hex).
CREATE TABLE login_challenges (
    challenge_hash TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    expires_ts BIGINT NOT NULL
);
CREATE INDEX login_challenges_by_device ON login_challenges (user_id, device_id, created_ts);
CREATE INDEX login_challenges_by_expiry ON login_challenges (expires_ts);
