-- Search and listing (issue 16): full-text search with prefixes, typo tolerance, filters, sorts,
-- keyset pagination and facets over the products read model.
--
-- Both search columns are GENERATED from the columns the projector already writes, so the
-- projector, `catalogctl rebuild` (whose shadow table is `LIKE products INCLUDING ALL`: generated
-- expressions and indexes come along) and `verify` need no change. Index names follow the names
-- Postgres gives a `LIKE` copy's indexes (`<table>_<columns>_idx`), so a rebuild's rename by prefix
-- gives every index back exactly this name.

CREATE EXTENSION IF NOT EXISTS pg_trgm;
-- Plain values (`status`) next to the words, attributes and categories in one GIN index.
CREATE EXTENSION IF NOT EXISTS btree_gin;

-- What full-text search matches: name and SKU (weight A), attribute values (B), description (C).
-- Name and attribute values are indexed twice: stemmed (`english`: "machines" finds "machine") and
-- as written (`simple`: the prefix "runni" finds "running", whose stem is "run"; stop words stay
-- findable). The description, by far the longest text, only stemmed: parsing it a second time
-- added about a tenth to the cost of writing a product. IMMUTABLE, as a generated column
-- requires: the configurations are named, never the session's.
CREATE FUNCTION product_search_document(name text, sku text, attributes jsonb, description text)
    RETURNS tsvector
    LANGUAGE sql
    IMMUTABLE
    PARALLEL SAFE
RETURN setweight(to_tsvector('english'::regconfig, name) || to_tsvector('simple'::regconfig, name), 'A')
    || setweight(to_tsvector('simple'::regconfig, coalesce(sku, '')), 'A')
    || setweight(jsonb_to_tsvector('english'::regconfig, attributes, '["string"]')
                     || jsonb_to_tsvector('simple'::regconfig, attributes, '["string"]'), 'B')
    || setweight(to_tsvector('english'::regconfig, description), 'C');

-- What typo-tolerant search compares, by trigrams: name, SKU and brand.
CREATE FUNCTION product_search_text(name text, sku text, attributes jsonb)
    RETURNS text
    LANGUAGE sql
    IMMUTABLE
    PARALLEL SAFE
RETURN lower(concat_ws(' ', name, sku, attributes ->> 'brand'));

ALTER TABLE products
    ADD COLUMN search_document tsvector
        GENERATED ALWAYS AS (product_search_document(name, sku, attributes, description)) STORED,
    ADD COLUMN search_text     text
        GENERATED ALWAYS AS (product_search_text(name, sku, attributes)) STORED;

-- `q` and the filters that are not ranges: one GIN index over the words, the status, the attributes
-- (`attr.<key>=<value>` is containment, `@>`) and the categories (`&&`), so that a search with any
-- of those filters is one index scan whose conditions are intersected inside the index (separate
-- indexes left the planner filtering thousands of rows by hand). Counting the matches then reads
-- no table page the visibility map has marked all-visible. (The name is the one Postgres gives a
-- rebuild's copy, truncated, minus its prefix: a rebuild gives it back unchanged.)
CREATE INDEX products_search_document_status_attributes_category_idx ON products
    USING gin (search_document, status, attributes jsonb_path_ops, category_ids) WHERE NOT deleted;
-- Typo tolerance: trigram similarity, when the words as typed match nothing.
CREATE INDEX products_search_text_idx ON products USING gin (search_text gin_trgm_ops) WHERE NOT deleted;
-- The sorts and their keyset pages (`created` has `products_created_at_id_idx` already); the id
-- breaks ties, so each order is total. Shoppers' `status = 'published'` is a filter on these:
-- almost every product is published, and admins list every status with the same indexes.
CREATE INDEX products_price_id_idx ON products (price, id) WHERE NOT deleted;
CREATE INDEX products_name_id_idx ON products (name, id) WHERE NOT deleted;
CREATE INDEX products_updated_at_id_idx ON products (updated_at, id) WHERE NOT deleted;
-- Cursor pages place products changed since the first page as they were then: those are found
-- here, among products changed after their creation only (an import's new products are not).
CREATE INDEX products_updated_at_idx ON products (updated_at) WHERE NOT deleted AND updated_at > created_at;
