CREATE TABLE users (
    user_id TEXT PRIMARY KEY NOT NULL,
    localpart TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created_ts BIGINT NOT NULL
);

CREATE TABLE devices (
    user_id TEXT NOT NULL REFERENCES users(user_id) ON DELETE CASCADE,
    device_id TEXT NOT NULL,
    display_name TEXT,
    signature_key BYTEA,
    created_ts BIGINT NOT NULL,
    last_seen_ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id)
);

CREATE TABLE sessions (
    session_id TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    FOREIGN KEY (user_id, device_id) REFERENCES devices(user_id, device_id) ON DELETE CASCADE
);
CREATE INDEX sessions_by_device ON sessions(user_id, device_id);

CREATE TABLE refresh_tokens (
    token_hash BYTEA PRIMARY KEY NOT NULL,
    session_id TEXT NOT NULL REFERENCES sessions(session_id) ON DELETE CASCADE,
    rotated BOOLEAN NOT NULL,
    expires_ts BIGINT NOT NULL
);
CREATE INDEX refresh_tokens_by_session ON refresh_tokens(session_id);
