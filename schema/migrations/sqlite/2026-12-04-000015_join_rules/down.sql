ALTER TABLE groups DROP COLUMN join_rules;
