-- Stock reservations (issue 18): the reservations read model, held stock on the products read
-- model, and the process manager's saga table.

-- Units held by open reservations. `on_hand - reserved` is what can still be reserved; the
-- Product aggregate never lets it go below 0, so neither may the row.
ALTER TABLE products
    ADD COLUMN reserved bigint NOT NULL DEFAULT 0
        CONSTRAINT products_reserved_check CHECK (reserved >= 0 AND reserved <= on_hand);

-- One row per reservation, written by the projector (and `catalogctl rebuild`) under the
-- version rule. `items`: [{"product_id", "quantity", "state"}] in the order given.
CREATE TABLE reservations
(
    id         uuid PRIMARY KEY,
    owner      text        NOT NULL,
    status     text        NOT NULL
        CONSTRAINT reservations_status_check CHECK (status IN ('pending', 'held', 'rejected', 'confirmed', 'released')),
    items      jsonb       NOT NULL,
    expires_at timestamptz NOT NULL,
    reason     text,
    -- Its holds are released or committed: nothing left for the saga to do.
    settled    boolean     NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    version    bigint      NOT NULL CHECK (version > 0)
);

CREATE TRIGGER reservations_changed
    AFTER INSERT OR UPDATE ON reservations
    FOR EACH ROW EXECUTE FUNCTION notify_read_model_changed();

-- The process manager's own state: which sagas are in flight and when each must be looked at
-- again (the hold's deadline, or soon when a step is due). The reservation's events are the
-- saga's history; this table is what makes expiry survive a restart and lets a sweep find a
-- saga whose Kafka message was consumed but whose step did not finish.
CREATE TABLE reservation_sagas
(
    id         uuid PRIMARY KEY,
    -- When the sweep next reconciles it; NULL once settled.
    due_at     timestamptz,
    started_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    -- The reservation version the process manager last acted on.
    version    bigint      NOT NULL
);

CREATE INDEX reservation_sagas_due_at_idx ON reservation_sagas (due_at) WHERE due_at IS NOT NULL;

-- Least privilege (the roles of migration 20261130000010). The reservations read model is the
-- projector's to write and query-api's to read. The process manager sends commands, appending
-- events as command-api does, so it runs as catalog_command, which also keeps its progress in
-- reservation_sagas (a projector running `--role all` needs both roles).
GRANT SELECT ON reservations TO catalog_query;
GRANT SELECT, INSERT, UPDATE, DELETE ON reservations TO catalog_projector;
GRANT SELECT, INSERT, UPDATE, DELETE ON reservation_sagas TO catalog_command;
