-- When a refresh token was rotated out (for the optional retry grace window).
ALTER TABLE refresh_tokens ADD COLUMN rotated_ts BIGINT;
