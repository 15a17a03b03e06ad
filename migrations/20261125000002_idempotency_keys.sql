-- Responses remembered for `Idempotency-Key` retries.
-- A row is claimed (status NULL) before the command runs, so two concurrent requests with one key
-- cannot both append; it is completed with the response, or deleted if the command failed.
CREATE TABLE idempotency_keys
(
    scope         text        NOT NULL, -- route and principal: keys of different clients never collide
    key           text        NOT NULL,
    request_hash  bytea       NOT NULL, -- SHA-256 of the body: same key with another body is refused
    status        smallint,             -- NULL while the first request is still in flight
    headers       jsonb,
    body          bytea,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, key)
);

CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);
