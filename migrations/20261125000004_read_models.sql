-- The read store, written only by the projector (and by `catalogctl rebuild`).
-- Every row carries `version`: the sequence of the last event of its aggregate it reflects.
-- An event applies only at version + 1, which makes redelivery harmless.

CREATE TABLE products
(
    id          uuid PRIMARY KEY,
    name        text          NOT NULL,
    description text          NOT NULL,
    price       numeric(12,2) NOT NULL,
    created_at  timestamptz   NOT NULL,
    updated_at  timestamptz   NOT NULL,
    version     bigint        NOT NULL CHECK (version > 0),
    -- A deleted product keeps its row (a tombstone) so a late duplicate of an older event
    -- is recognised as already applied instead of resurrecting it.
    deleted     boolean       NOT NULL DEFAULT false
);

-- The listing order: oldest first, id as the tie-break, so pages are stable.
-- Index and constraint names follow `<table>_...`: `catalogctl rebuild` builds a shadow table
-- `<table>_rebuild` LIKE this one and renames its objects back by that prefix when it swaps.
CREATE INDEX products_created_at_id_idx ON products (created_at, id) WHERE NOT deleted;

-- User profiles: no password hash or any other credential material.
CREATE TABLE users
(
    id          uuid PRIMARY KEY,
    username    text        NOT NULL,
    email       text        NOT NULL,
    roles       text[]      NOT NULL,
    active      boolean     NOT NULL,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    version     bigint      NOT NULL CHECK (version > 0)
);

-- Tells query-api (cache invalidation, `min_version` waits) which row reached which version.
-- Sent from the writing transaction, so it is delivered exactly when the change is visible.
CREATE FUNCTION notify_read_model_changed() RETURNS trigger
    LANGUAGE plpgsql AS
$$
BEGIN
    PERFORM pg_notify('catalog_read_model_changed', TG_TABLE_NAME || ' ' || NEW.id || ' ' || NEW.version);
    RETURN NULL;
END
$$;

CREATE TRIGGER products_changed
    AFTER INSERT OR UPDATE ON products
    FOR EACH ROW EXECUTE FUNCTION notify_read_model_changed();

CREATE TRIGGER users_changed
    AFTER INSERT OR UPDATE ON users
    FOR EACH ROW EXECUTE FUNCTION notify_read_model_changed();
