-- A Welcome is stored once, whatever its number of recipients: `welcome_bodies` holds the bytes,
-- `welcomes` one small row per recipient device pointing at them. A body relayed by another
-- server remembers (origin, event_id), so a replayed event is stored once.
CREATE TABLE welcome_bodies (
    id BIGSERIAL PRIMARY KEY,
    welcome BYTEA NOT NULL,
    origin TEXT,
    event_id TEXT
);
CREATE UNIQUE INDEX welcome_bodies_by_event ON welcome_bodies(origin, event_id);

INSERT INTO welcome_bodies (id, welcome) SELECT id, welcome FROM welcomes;
SELECT setval(pg_get_serial_sequence('welcome_bodies', 'id'),
              GREATEST((SELECT MAX(id) FROM welcome_bodies), 1));
ALTER TABLE welcomes ADD COLUMN body_id BIGINT;
UPDATE welcomes SET body_id = id;
ALTER TABLE welcomes ALTER COLUMN body_id SET NOT NULL;
ALTER TABLE welcomes ADD CONSTRAINT welcomes_body FOREIGN KEY (body_id) REFERENCES welcome_bodies(id);
ALTER TABLE welcomes ADD CONSTRAINT welcomes_once UNIQUE (body_id, user_id, device_id);
ALTER TABLE welcomes DROP COLUMN welcome;
