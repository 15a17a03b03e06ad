-- Idempotency records no longer hold an unkeyed SHA-256 of the request: a registration's was a
-- fast hash of the password, next to a username and email that are public in the events table.
-- Fingerprints are now HMAC-SHA256 under IDEMPOTENCY_KEY_SECRET, which is not in the database.
-- The old rows cannot be compared with the new fingerprints and must not stay at rest: delete
-- them (a retry of a request sent before this migration runs as a new request).
DELETE FROM idempotency_keys;

COMMENT ON TABLE idempotency_keys IS
    'Idempotency-Key records: kept IDEMPOTENCY_KEY_TTL_HOURS (24 by default), then ignored and purged by command-api';
COMMENT ON COLUMN idempotency_keys.scope IS
    'route and caller: the user id, or the client address for anonymous calls (registration)';
COMMENT ON COLUMN idempotency_keys.request_hash IS
    'HMAC-SHA256 of the canonical request under IDEMPOTENCY_KEY_SECRET (not stored in the database)';
