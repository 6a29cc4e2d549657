-- Migration 0023: receipts by stream position, so that the pushers can ask which users' read
-- receipts moved since a position (each clears that user's cached badge) without a scan.
CREATE INDEX receipts_by_position ON receipts (stream_pos);
