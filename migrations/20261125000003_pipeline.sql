-- The publisher's side of the pipeline.

-- Wakes the publisher when events are appended. pg_notify is delivered at commit, so a
-- listener never hears of a row it cannot yet read; one notification per statement is enough.
CREATE FUNCTION notify_events_appended() RETURNS trigger
    LANGUAGE plpgsql AS
$$
BEGIN
    PERFORM pg_notify('catalog_events_appended', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER events_appended
    AFTER INSERT ON events
    FOR EACH STATEMENT EXECUTE FUNCTION notify_events_appended();

-- How far the publisher has got, per topic: the (transaction_id, global_position) of the last
-- event the broker acknowledged. Written only after the acknowledgement, so a crash re-publishes
-- (at-least-once) and never skips.
CREATE TABLE publisher_checkpoints
(
    topic           text        PRIMARY KEY,
    transaction_id  xid8        NOT NULL,
    global_position bigint      NOT NULL,
    published_total bigint      NOT NULL DEFAULT 0,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
