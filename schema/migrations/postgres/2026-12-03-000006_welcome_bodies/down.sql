ALTER TABLE welcomes ADD COLUMN welcome BYTEA;
UPDATE welcomes w SET welcome = b.welcome FROM welcome_bodies b WHERE b.id = w.body_id;
ALTER TABLE welcomes ALTER COLUMN welcome SET NOT NULL;
ALTER TABLE welcomes DROP CONSTRAINT welcomes_once;
ALTER TABLE welcomes DROP CONSTRAINT welcomes_body;
ALTER TABLE welcomes DROP COLUMN body_id;
DROP TABLE welcome_bodies;
