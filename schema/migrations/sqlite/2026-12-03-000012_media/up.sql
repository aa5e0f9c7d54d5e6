-- The media repository (docs/protocol.md#media). One row per file in `media.store_path`:
-- uploads of this server's users (`uploader` set), and other servers' media cached here
-- (`uploader` NULL). The bytes are ciphertext; the server never has their keys.
-- `referenced_ts`: when a message the uploader sent first named the media; media never
-- named is deleted after `retention.unreferenced_media_ms`. `last_access_ts` orders the
-- remote cache's eviction.
CREATE TABLE media (
    server_name TEXT NOT NULL,
    media_id TEXT NOT NULL,
    uploader TEXT,
    size BIGINT NOT NULL,
    created_ts BIGINT NOT NULL,
    last_access_ts BIGINT NOT NULL,
    referenced_ts BIGINT,
    PRIMARY KEY (server_name, media_id)
);
CREATE INDEX media_by_uploader ON media (uploader, size);
CREATE INDEX media_by_access ON media (last_access_ts);
