-- Dead letters that keep per-aggregate order (the model: Axon's sequenced dead-letter queue).
--
-- When the projector cannot apply an event, the event is parked here with the reason, and so is
-- every later event of the same aggregate (the Kafka key), without being applied: that
-- aggregate's read model stops before the bad event instead of skipping it, while every other
-- aggregate moves on. `catalogctl dlq retry` applies a queue in order (after a fix) and
-- empties it; `catalogctl dlq discard` drops it, logged in dead_letter_discards.
--
-- The raw message is kept (headers, payload), so an event that could not even be decoded is
-- kept as it arrived.
CREATE TABLE parked_events
(
    -- Arrival order: the order the queue is retried in.
    id              bigserial   PRIMARY KEY,
    aggregate_id    text        NOT NULL,
    -- From the message headers, when they could be read.
    aggregate_type  text,
    sequence        bigint,
    global_position bigint,
    event_id        uuid,
    event_type      text,
    headers         jsonb       NOT NULL,
    payload         bytea,
    -- Why the event could not be applied; NULL for events parked only because one before them was.
    reason          text,
    -- topic/partition/offset it was consumed from.
    source          text        NOT NULL,
    parked_at       timestamptz NOT NULL DEFAULT now(),
    -- The event id (or, for a message without a readable one, its source): a redelivery after
    -- a crash parks nothing twice.
    dedup_key       text        NOT NULL UNIQUE
);

CREATE INDEX parked_events_queue ON parked_events (aggregate_id, id);

-- Queues dropped by `catalogctl dlq discard`, with the operator's reason.
CREATE TABLE dead_letter_discards
(
    id             bigserial   PRIMARY KEY,
    aggregate_id   text        NOT NULL,
    events         integer     NOT NULL,
    first_sequence bigint,
    last_sequence  bigint,
    reason         text        NOT NULL,
    discarded_by   text        NOT NULL DEFAULT current_user,
    discarded_at   timestamptz NOT NULL DEFAULT now()
);

-- The projector parks (reads and inserts; it never deletes: retry and discard are the
-- operator's). It reads a lane's queues FOR KEY SHARE, which needs UPDATE on one column.
GRANT SELECT, INSERT, UPDATE (reason) ON parked_events TO catalog_projector;
GRANT USAGE ON SEQUENCE parked_events_id_seq TO catalog_projector;
