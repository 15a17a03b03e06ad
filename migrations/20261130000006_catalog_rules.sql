-- Catalog-wide rules that no single aggregate can check on its own: a SKU or a category slug
-- belongs to one aggregate at a time, a product's categories exist, and the category tree has
-- no cycles and loses no category that still has children.
--
-- They are enforced by a trigger on `events`, so they hold in the very transaction that appends
-- the event (postgres-es's): a command that breaks one stores nothing, and two concurrent
-- commands cannot both pass. The tables below are the event store's own bookkeeping (like
-- snapshots), derived from the events and never read by the APIs; read models are built by the
-- projector as before.
--
-- Violations are raised with two SQLSTATEs of our own, which command-api maps to answers:
--   CT409  conflicts with another aggregate (taken SKU or slug, cycle, children left) -> 409
--   CT422  refers to something that does not exist (unknown category)                 -> 422
-- with the offending request field in DETAIL and a stable code in HINT.

-- Who holds each unique value. `value` is lower-cased: "ABC-1" and "abc-1" are one SKU.
CREATE TABLE catalog_claims
(
    kind         text NOT NULL CHECK (kind IN ('sku', 'category_slug')),
    value        text NOT NULL,
    aggregate_id text NOT NULL,
    PRIMARY KEY (kind, value)
);
CREATE UNIQUE INDEX catalog_claims_holder ON catalog_claims (kind, aggregate_id);

-- The live categories and their parents.
CREATE TABLE category_tree
(
    id        text PRIMARY KEY,
    parent_id text REFERENCES category_tree (id)
);
CREATE INDEX category_tree_parent ON category_tree (parent_id);

-- Gives `holder` the value (NULL: gives up the one it had), or fails if another aggregate has it.
CREATE FUNCTION catalog_claim(claim_kind text, claimed text, holder text, field text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM catalog_claims WHERE kind = claim_kind AND aggregate_id = holder;
    IF claimed IS NOT NULL THEN
        -- A concurrent claim of the same value makes this wait for that transaction's outcome.
        INSERT INTO catalog_claims (kind, value, aggregate_id) VALUES (claim_kind, lower(claimed), holder)
            ON CONFLICT DO NOTHING;
        IF NOT FOUND THEN
            RAISE EXCEPTION '% "%" is already used by another %', field, claimed,
                CASE claim_kind WHEN 'sku' THEN 'product' ELSE 'category' END
                USING ERRCODE = 'CT409', DETAIL = field, HINT = 'taken';
        END IF;
    END IF;
END;
$$;

-- Fails unless every id in `ids` (a JSON array) is a live category. The rows are locked
-- against deletion until the appending transaction ends.
CREATE FUNCTION catalog_require_categories(ids jsonb, field text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    wanted text[] := ARRAY(SELECT jsonb_array_elements_text(coalesce(ids, '[]'::jsonb)));
    missing text[];
BEGIN
    PERFORM 1 FROM category_tree WHERE id = ANY (wanted) FOR KEY SHARE;
    missing := ARRAY(SELECT w FROM unnest(wanted) AS w WHERE NOT EXISTS (SELECT 1 FROM category_tree WHERE id = w));
    IF cardinality(missing) > 0 THEN
        RAISE EXCEPTION 'no such category: %', array_to_string(missing, ', ')
            USING ERRCODE = 'CT422', DETAIL = field, HINT = 'unknown_category';
    END IF;
END;
$$;

CREATE FUNCTION events_check_catalog_rules() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    body   jsonb := NEW.payload::jsonb -> NEW.event_type;
    parent text;
BEGIN
    -- Tree changes are rare; one lock makes cycle and children checks race-free.
    IF NEW.aggregate_type = 'Category' THEN
        PERFORM pg_advisory_xact_lock(hashtext('catalog.category_tree'));
    END IF;
    CASE NEW.event_type
        WHEN 'ProductCreated' THEN
            PERFORM catalog_claim('sku', body ->> 'sku', NEW.aggregate_id, 'sku');
            PERFORM catalog_require_categories(body -> 'category_ids', 'category_ids');
        WHEN 'ProductUpdated' THEN
            IF body ? 'sku' THEN
                PERFORM catalog_claim('sku', body ->> 'sku', NEW.aggregate_id, 'sku');
            END IF;
            IF body ? 'category_ids' THEN
                PERFORM catalog_require_categories(body -> 'category_ids', 'category_ids');
            END IF;
        WHEN 'ProductDeleted' THEN
            PERFORM catalog_claim('sku', NULL, NEW.aggregate_id, 'sku');
        WHEN 'CategoryCreated' THEN
            PERFORM catalog_claim('category_slug', body ->> 'slug', NEW.aggregate_id, 'slug');
            parent := body ->> 'parent_id';
            IF parent IS NOT NULL THEN
                PERFORM catalog_require_categories(jsonb_build_array(parent), 'parent_id');
            END IF;
            INSERT INTO category_tree (id, parent_id) VALUES (NEW.aggregate_id, parent);
        WHEN 'CategoryUpdated' THEN
            IF body ? 'slug' THEN
                PERFORM catalog_claim('category_slug', body ->> 'slug', NEW.aggregate_id, 'slug');
            END IF;
            IF body ? 'parent_id' THEN
                parent := body ->> 'parent_id';
                IF parent IS NOT NULL THEN
                    PERFORM catalog_require_categories(jsonb_build_array(parent), 'parent_id');
                    IF EXISTS (WITH RECURSIVE ancestors (id, parent_id) AS (
                                   SELECT id, parent_id FROM category_tree WHERE id = parent
                                   UNION
                                   SELECT t.id, t.parent_id FROM category_tree t JOIN ancestors a ON t.id = a.parent_id)
                               SELECT 1 FROM ancestors WHERE id = NEW.aggregate_id) THEN
                        RAISE EXCEPTION 'a category cannot move under itself or one of its descendants'
                            USING ERRCODE = 'CT409', DETAIL = 'parent_id', HINT = 'cycle';
                    END IF;
                END IF;
                UPDATE category_tree SET parent_id = parent WHERE id = NEW.aggregate_id;
            END IF;
        WHEN 'CategoryDeleted' THEN
            IF EXISTS (SELECT 1 FROM category_tree WHERE parent_id = NEW.aggregate_id) THEN
                RAISE EXCEPTION 'the category still has child categories; move or delete them first'
                    USING ERRCODE = 'CT409', DETAIL = 'id', HINT = 'has_children';
            END IF;
            PERFORM catalog_claim('category_slug', NULL, NEW.aggregate_id, 'slug');
            DELETE FROM category_tree WHERE id = NEW.aggregate_id;
        ELSE
            NULL;
    END CASE;
    RETURN NULL;
END;
$$;

CREATE TRIGGER events_check_catalog_rules
    AFTER INSERT ON events
    FOR EACH ROW
    WHEN (NEW.aggregate_type IN ('Product', 'Category'))
    EXECUTE FUNCTION events_check_catalog_rules();
