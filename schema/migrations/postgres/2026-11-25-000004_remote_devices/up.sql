-- Other servers' users' device signature keys, as last fetched or pushed to us.
CREATE TABLE remote_devices (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    signature_key BYTEA NOT NULL,
    updated_ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id)
);
CREATE TABLE remote_device_lists (
    user_id TEXT PRIMARY KEY NOT NULL,
    updated_ts BIGINT NOT NULL
);
