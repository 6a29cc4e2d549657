-- Migration 0010: EDUs waiting to be sent to other servers, one row per destination (deleted
-- once the destination took them, so they survive restarts and outages), and the transactions
-- other servers sent, so that a retried transaction is answered as the first time and not
-- applied twice.
CREATE TABLE federation_outbox (
    id {ID},
    destination TEXT NOT NULL,
    edu_type TEXT NOT NULL,
    content_json TEXT NOT NULL,
    created_ts BIGINT NOT NULL
);
CREATE INDEX federation_outbox_by_destination ON federation_outbox (destination, id);

CREATE TABLE federation_inbound_transactions (
    origin TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    response_json TEXT NOT NULL,
    received_ts BIGINT NOT NULL,
    PRIMARY KEY (origin, txn_id)
);
