DROP TABLE inbound_transactions;
DROP TABLE outbox;
