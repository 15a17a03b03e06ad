-- The read side of the catalog domain (issue 15): products gain SKU, currency, status, categories,
-- attributes, images and stock; categories and every product's history get read models of their own.
-- Written only by the projector (and `catalogctl rebuild`), under the same version rule as the others.
--
-- Rows that exist when this runs were folded from the old events: they get the values the event
-- store's upcaster gives those events (published, no SKU, categories, attributes, images or stock),
-- and `EUR` as their currency. A catalog whose CATALOG_DEFAULT_CURRENCY is not EUR, and any catalog
-- that wants its history read model filled, runs `catalogctl rebuild` after migrating;
-- `catalogctl verify` reports the rows that still differ.

-- Up to 4 fraction digits: some currencies have 3 (BHD) or 4 (CLF). Amounts leave the read model
-- with exactly their currency's digits (see `read_model::products`).
ALTER TABLE products ALTER COLUMN price TYPE numeric(18,4);

ALTER TABLE products
    ADD COLUMN currency     text    NOT NULL DEFAULT 'EUR',
    ADD COLUMN sku          text,
    ADD COLUMN status       text    NOT NULL DEFAULT 'published'
        CONSTRAINT products_status_check CHECK (status IN ('draft', 'published', 'archived')),
    ADD COLUMN category_ids uuid[]  NOT NULL DEFAULT '{}',
    -- {"colour": "red", ...}
    ADD COLUMN attributes   jsonb   NOT NULL DEFAULT '{}',
    -- [{"url": "https://...", "alt": "..."}, ...] in display order
    ADD COLUMN images       jsonb   NOT NULL DEFAULT '[]',
    ADD COLUMN on_hand      bigint  NOT NULL DEFAULT 0 CONSTRAINT products_on_hand_check CHECK (on_hand >= 0);

-- The defaults were for the rows above; every row written from now on names each value.
ALTER TABLE products
    ALTER COLUMN currency DROP DEFAULT,
    ALTER COLUMN status DROP DEFAULT,
    ALTER COLUMN category_ids DROP DEFAULT,
    ALTER COLUMN attributes DROP DEFAULT,
    ALTER COLUMN images DROP DEFAULT,
    ALTER COLUMN on_hand DROP DEFAULT;

-- Listings by status (readers see only published products) in the listing order.
CREATE INDEX products_status_created_at_id_idx ON products (status, created_at, id) WHERE NOT deleted;
-- Product counts per category and products of a category.
CREATE INDEX products_category_ids_idx ON products USING gin (category_ids) WHERE NOT deleted;

-- Categories; a deleted one keeps its row (a tombstone), like products.
CREATE TABLE categories
(
    id          uuid PRIMARY KEY,
    name        text        NOT NULL,
    slug        text        NOT NULL,
    -- NULL: a root category. No foreign key: rows arrive in event order, not tree order.
    parent_id   uuid,
    description text        NOT NULL,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    version     bigint      NOT NULL CHECK (version > 0),
    deleted     boolean     NOT NULL DEFAULT false
);

CREATE TRIGGER categories_changed
    AFTER INSERT OR UPDATE ON categories
    FOR EACH ROW EXECUTE FUNCTION notify_read_model_changed();

-- One row per product event: what it changed and the product as it was after it. Rows are only
-- ever inserted; the latest row of a product is the history model's version of it.
CREATE TABLE product_history
(
    product_id uuid        NOT NULL,
    version    bigint      NOT NULL CHECK (version > 0),
    -- The event type: ProductCreated, ProductUpdated, ProductStockAdjusted, ProductDeleted.
    type       text        NOT NULL,
    -- When the event was recorded.
    at         timestamptz NOT NULL,
    -- Who caused it (the event's metadata.actor), when known.
    actor      text,
    -- [{"field": "price", "from": "19.99", "to": "17.99"}, ...]
    changes    jsonb       NOT NULL,
    -- The product view after the event, `deleted` included.
    state      jsonb       NOT NULL,
    -- Also serves "newest first" (a backward scan) and "latest version of a product".
    CONSTRAINT product_history_pkey PRIMARY KEY (product_id, version)
);

-- Time travel: the last event of a product at or before an instant.
CREATE INDEX product_history_product_id_at_idx ON product_history (product_id, at);
