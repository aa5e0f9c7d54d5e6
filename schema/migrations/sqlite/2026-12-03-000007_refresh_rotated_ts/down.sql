ALTER TABLE refresh_tokens DROP COLUMN rotated_ts;
