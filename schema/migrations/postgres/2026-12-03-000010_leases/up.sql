-- Leases between processes sharing one PostgreSQL database (docs/operations.md#scaling): a
-- named job (`outbox:<destination>`: sending to one server; `fill:<group_id>`: filling one
-- followed group's gap) is run by the process holding its lease, until `until_ts`; a process
-- that stops lets it expire and another takes over. SQLite serves one process and takes none.
CREATE TABLE leases (
    name TEXT PRIMARY KEY NOT NULL,
    holder TEXT NOT NULL,
    until_ts BIGINT NOT NULL
);
