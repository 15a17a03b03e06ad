-- Each product's words in one search index, not two (issue 16: the read model complete within
-- 15 s of a 100,000-product import).
--
-- Migration 8's GIN index held every live product and migration 15's the published ones again,
-- so a published product's search document (about a hundred words, stemmed and as written) was
-- indexed twice on every write: the products upsert was 58 % of Postgres' time while the
-- projector caught up after an import, 0.27 ms a row. Migration 8's index now holds only the
-- products that are not published; a listing of every status asks for `status = 'published' OR
-- status <> 'published'` when it searches (see `read_model::search`), which the planner serves
-- with both partial indexes (a BitmapOr), and one of several statuses is an OR of equalities.
--
-- Same name and columns as migration 8's, so a rebuild's copy gets it back unchanged.
DROP INDEX IF EXISTS products_search_document_status_attributes_category_idx;
CREATE INDEX products_search_document_status_attributes_category_idx ON products
    USING gin (search_document, status, attributes jsonb_path_ops, category_ids)
    WHERE NOT deleted AND status <> 'published';
