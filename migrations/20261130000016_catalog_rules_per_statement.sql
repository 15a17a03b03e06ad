-- The catalog rules (20261130000006) checked once per statement instead of once per row, so
-- that a bulk import's batch of new products (one INSERT of up to a thousand ProductCreated
-- rows) is checked with a few set-based statements rather than a thousand PL/pgSQL calls (the
-- row trigger was about three quarters of such an INSERT's time).
--
-- The rules and their errors are unchanged:
-- - A statement whose Product/Category rows are all ProductCreated at sequence 1 (new products
--   only: what a bulk import appends) claims all their SKUs in one INSERT and locks and checks
--   all their categories in one query. A SKU taken by another product, or given twice in the
--   statement, fails the statement with CT409 naming it; an unknown category with CT422.
-- - Any other statement (every command's append, whatever its events) has its rows checked one
--   by one in insertion order, by the same code the row trigger ran (`catalog_check_event`).

-- The old row trigger's body, for one event.
CREATE FUNCTION catalog_check_event(event_aggregate_type text, event_aggregate_id text, event_kind text,
                                    event_payload json) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    body   jsonb := event_payload::jsonb -> event_kind;
    parent text;
BEGIN
    -- Tree changes are rare; one lock makes cycle and children checks race-free.
    IF event_aggregate_type = 'Category' THEN
        PERFORM pg_advisory_xact_lock(hashtext('catalog.category_tree'));
    END IF;
    CASE event_kind
        WHEN 'ProductCreated' THEN
            PERFORM catalog_claim('sku', body ->> 'sku', event_aggregate_id, 'sku');
            PERFORM catalog_require_categories(body -> 'category_ids', 'category_ids');
        WHEN 'ProductUpdated' THEN
            IF body ? 'sku' THEN
                PERFORM catalog_claim('sku', body ->> 'sku', event_aggregate_id, 'sku');
            END IF;
            IF body ? 'category_ids' THEN
                PERFORM catalog_require_categories(body -> 'category_ids', 'category_ids');
            END IF;
        WHEN 'ProductDeleted' THEN
            PERFORM catalog_claim('sku', NULL, event_aggregate_id, 'sku');
        WHEN 'CategoryCreated' THEN
            PERFORM catalog_claim('category_slug', body ->> 'slug', event_aggregate_id, 'slug');
            parent := body ->> 'parent_id';
            IF parent IS NOT NULL THEN
                PERFORM catalog_require_categories(jsonb_build_array(parent), 'parent_id');
            END IF;
            INSERT INTO category_tree (id, parent_id) VALUES (event_aggregate_id, parent);
        WHEN 'CategoryUpdated' THEN
            IF body ? 'slug' THEN
                PERFORM catalog_claim('category_slug', body ->> 'slug', event_aggregate_id, 'slug');
            END IF;
            IF body ? 'parent_id' THEN
                parent := body ->> 'parent_id';
                IF parent IS NOT NULL THEN
                    PERFORM catalog_require_categories(jsonb_build_array(parent), 'parent_id');
                    IF EXISTS (WITH RECURSIVE ancestors (id, parent_id) AS (
                                   SELECT id, parent_id FROM category_tree WHERE id = parent
                                   UNION
                                   SELECT t.id, t.parent_id FROM category_tree t JOIN ancestors a ON t.id = a.parent_id)
                               SELECT 1 FROM ancestors WHERE id = event_aggregate_id) THEN
                        RAISE EXCEPTION 'a category cannot move under itself or one of its descendants'
                            USING ERRCODE = 'CT409', DETAIL = 'parent_id', HINT = 'cycle';
                    END IF;
                END IF;
                UPDATE category_tree SET parent_id = parent WHERE id = event_aggregate_id;
            END IF;
        WHEN 'CategoryDeleted' THEN
            IF EXISTS (SELECT 1 FROM category_tree WHERE parent_id = event_aggregate_id) THEN
                RAISE EXCEPTION 'the category still has child categories; move or delete them first'
                    USING ERRCODE = 'CT409', DETAIL = 'id', HINT = 'has_children';
            END IF;
            PERFORM catalog_claim('category_slug', NULL, event_aggregate_id, 'slug');
            DELETE FROM category_tree WHERE id = event_aggregate_id;
        ELSE
            NULL;
    END CASE;
END;
$$;

CREATE FUNCTION events_check_catalog_rules_per_statement() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    checked      bigint;
    only_creates boolean;
    event        record;
    wanted       text[];
    missing      text[];
    taken        text;
    ids          text[];
    skus         text[];
    categories   jsonb[];
BEGIN
    SELECT count(*), coalesce(bool_and(event_type = 'ProductCreated' AND sequence = 1), false)
      INTO checked, only_creates
      FROM appended
     WHERE aggregate_type IN ('Product', 'Category');
    IF checked = 0 THEN
        RETURN NULL;
    END IF;
    IF checked = 1 OR NOT only_creates THEN
        FOR event IN SELECT aggregate_type, aggregate_id, event_type, payload
                       FROM appended
                      WHERE aggregate_type IN ('Product', 'Category')
                      ORDER BY global_position
        LOOP
            PERFORM catalog_check_event(event.aggregate_type, event.aggregate_id, event.event_type, event.payload);
        END LOOP;
        RETURN NULL;
    END IF;

    -- New products only (each its aggregate's first event, so distinct aggregates).
    SELECT array_agg(aggregate_id), array_agg(body ->> 'sku'), array_agg(body -> 'category_ids')
      INTO ids, skus, categories
      FROM (SELECT aggregate_id, payload::jsonb -> 'ProductCreated' AS body
              FROM appended
             WHERE aggregate_type = 'Product') AS created;

    -- SKUs: what catalog_claim does for each, in one statement. Unlike catalog_claim there is
    -- no claim of the product's to give up first: only its own events claim for a product, and
    -- this is its first. A plain INSERT costs half of one with ON CONFLICT; a SKU another product
    -- holds (a concurrent claim makes it wait for that transaction, as before) or that the
    -- statement gives twice fails it, and is then named.
    BEGIN
        INSERT INTO catalog_claims (kind, value, aggregate_id)
        SELECT 'sku', lower(c.sku), c.id FROM unnest(ids, skus) AS c (id, sku) WHERE c.sku IS NOT NULL;
    EXCEPTION WHEN unique_violation THEN
        SELECT c.sku INTO taken
          FROM unnest(skus) WITH ORDINALITY AS c (sku, n)
         WHERE c.sku IS NOT NULL
           AND (EXISTS (SELECT 1 FROM catalog_claims WHERE kind = 'sku' AND value = lower(c.sku))
                OR EXISTS (SELECT 1 FROM unnest(skus) WITH ORDINALITY AS o (sku, n)
                            WHERE lower(o.sku) = lower(c.sku) AND o.n < c.n))
         ORDER BY c.n
         LIMIT 1;
        RAISE EXCEPTION 'sku "%" is already used by another product', coalesce(taken, '?')
            USING ERRCODE = 'CT409', DETAIL = 'sku', HINT = 'taken';
    END;

    -- Categories: what catalog_require_categories does for each, for all of them at once.
    wanted := ARRAY(SELECT DISTINCT id
                      FROM unnest(categories) AS c (ids),
                           jsonb_array_elements_text(coalesce(c.ids, '[]'::jsonb)) AS id);
    IF cardinality(wanted) > 0 THEN
        PERFORM 1 FROM category_tree WHERE id = ANY (wanted) FOR KEY SHARE;
        missing := ARRAY(SELECT w FROM unnest(wanted) AS w
                          WHERE NOT EXISTS (SELECT 1 FROM category_tree WHERE id = w));
        IF cardinality(missing) > 0 THEN
            RAISE EXCEPTION 'no such category: %', array_to_string(missing, ', ')
                USING ERRCODE = 'CT422', DETAIL = 'category_ids', HINT = 'unknown_category';
        END IF;
    END IF;
    RETURN NULL;
END;
$$;

DROP TRIGGER events_check_catalog_rules ON events;
DROP FUNCTION events_check_catalog_rules();

CREATE TRIGGER events_check_catalog_rules
    AFTER INSERT ON events
    REFERENCING NEW TABLE AS appended
    FOR EACH STATEMENT
    EXECUTE FUNCTION events_check_catalog_rules_per_statement();
