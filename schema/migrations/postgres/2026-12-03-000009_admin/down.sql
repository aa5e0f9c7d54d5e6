DROP TABLE admin_audit;
DROP TABLE server_acl;
DROP TABLE registration_tokens;
ALTER TABLE users DROP COLUMN deactivated_ts;
ALTER TABLE users DROP COLUMN admin;
