-- The category check of the catalog rules (20261130000006) without its fixed cost.
--
-- pg_stat_statements over `cargo xtask bench write` showed the rules trigger as the largest
-- item of a product create: 0.32 ms of the 0.56 ms append, 0.22 ms of it in
-- catalog_require_categories, although the bench's products have no categories. Its second
-- statement (the ids that are missing, a NOT EXISTS per id) costs 0.06 ms even for an empty
-- list (2,000 calls in a loop: 60 ms). Now:
-- - an empty list returns at once;
-- - otherwise one statement locks the rows and counts them, and the missing ids are looked for
--   only when some are missing (the error path).
-- The errors and the locks are unchanged.
CREATE OR REPLACE FUNCTION catalog_require_categories(ids jsonb, field text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    wanted  text[] := ARRAY(SELECT jsonb_array_elements_text(coalesce(ids, '[]'::jsonb)));
    found   bigint;
    missing text[];
BEGIN
    IF cardinality(wanted) = 0 THEN
        RETURN;
    END IF;
    SELECT count(*) INTO found
      FROM (SELECT 1 FROM category_tree WHERE id = ANY (wanted) FOR KEY SHARE) AS locked;
    -- Fewer rows than ids: some are missing, or an id is given twice.
    IF found < cardinality(wanted) THEN
        missing := ARRAY(SELECT w FROM unnest(wanted) AS w
                          WHERE NOT EXISTS (SELECT 1 FROM category_tree WHERE id = w));
        IF cardinality(missing) > 0 THEN
            RAISE EXCEPTION 'no such category: %', array_to_string(missing, ', ')
                USING ERRCODE = 'CT422', DETAIL = field, HINT = 'unknown_category';
        END IF;
    END IF;
END;
$$;
