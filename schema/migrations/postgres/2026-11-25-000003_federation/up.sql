-- Events waiting to be sent to another server, in order per destination. Rows are written in
-- the same transaction that accepts the message they carry and deleted once delivered.
CREATE TABLE outbox (
    id BIGSERIAL PRIMARY KEY,
    destination TEXT NOT NULL,
    kind TEXT NOT NULL,
    group_id TEXT NOT NULL,
    seq BIGINT,
    payload BYTEA,
    recipients TEXT,
    created_ts BIGINT NOT NULL
);
CREATE INDEX outbox_by_destination ON outbox(destination, id);

-- Answers to inbound transactions, so a replayed (origin, txn_id) gets the first answer.
CREATE TABLE inbound_transactions (
    origin TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    response TEXT NOT NULL,
    received_ts BIGINT NOT NULL,
    PRIMARY KEY (origin, txn_id)
);
