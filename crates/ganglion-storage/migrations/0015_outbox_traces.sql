-- Migration 0015: the trace of the request that made a queued PDU (its W3C `traceparent`), so
-- the federation sender's transaction joins the client's send in one trace. NULL when traces
-- are not exported.
ALTER TABLE federation_pdu_outbox ADD COLUMN traceparent TEXT;
