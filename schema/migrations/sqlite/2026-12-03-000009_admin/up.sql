-- Administration (docs/operations.md#administration): admin users, deactivated accounts,
-- registration tokens made at runtime, server ACL rules made at runtime, and the audit log
-- of every admin action.
ALTER TABLE users ADD COLUMN admin BOOLEAN NOT NULL DEFAULT FALSE;
-- Set once an admin deactivates the account: login is refused from then on.
ALTER TABLE users ADD COLUMN deactivated_ts BIGINT;

-- Only the SHA-256 of a token is kept; `token_id` (hex of its first 6 bytes) names it in
-- listings. `uses_allowed` NULL is unlimited, `expires_ts` NULL never expires.
CREATE TABLE registration_tokens (
    token_hash BLOB PRIMARY KEY NOT NULL,
    token_id TEXT NOT NULL UNIQUE,
    uses_allowed BIGINT,
    uses BIGINT NOT NULL DEFAULT 0,
    expires_ts BIGINT,
    created_ts BIGINT NOT NULL,
    created_by TEXT NOT NULL
);

-- Server ACL rules added at runtime, on top of the config file's: rule 'allow' or 'deny'.
CREATE TABLE server_acl (
    pattern TEXT NOT NULL,
    rule TEXT NOT NULL CHECK (rule IN ('allow', 'deny')),
    created_ts BIGINT NOT NULL,
    PRIMARY KEY (pattern, rule)
);

CREATE TABLE admin_audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts BIGINT NOT NULL,
    -- The admin's user id, or 'cli' for `parley admin make-admin` on the database.
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT,
    -- JSON with the action's parameters (never a password or a token).
    detail TEXT NOT NULL
);
CREATE INDEX admin_audit_by_ts ON admin_audit(ts);
