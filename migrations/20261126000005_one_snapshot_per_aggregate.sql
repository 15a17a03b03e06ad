-- Aggregate snapshots, as postgres-es writes them, are a cache of the fold of an aggregate's
-- events: the events stay the source of truth and a snapshot can always be rebuilt from them.
--
-- One row per aggregate. postgres-es inserts a snapshot when it holds none it can read (the
-- first one, or after the aggregate's fields changed and the stored one no longer
-- deserialises) and updates it in place afterwards. With last_sequence in the key, that insert
-- would add a second row next to the unreadable one, and a later load could pick either. The
-- trigger makes the insert replace whatever the aggregate had instead.
--
-- Safe to run while command-api writes: the insert happens in the same transaction as the
-- events it covers, after their insert took the aggregate's next sequence numbers, so two
-- writers never race on one aggregate's snapshot.
DELETE FROM snapshots s
 WHERE EXISTS (SELECT 1 FROM snapshots newer
                WHERE newer.aggregate_type = s.aggregate_type
                  AND newer.aggregate_id = s.aggregate_id
                  AND newer.last_sequence > s.last_sequence);

ALTER TABLE snapshots DROP CONSTRAINT snapshots_pkey;
ALTER TABLE snapshots ADD PRIMARY KEY (aggregate_type, aggregate_id);

CREATE FUNCTION snapshots_replace_previous() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM snapshots WHERE aggregate_type = NEW.aggregate_type AND aggregate_id = NEW.aggregate_id;
    RETURN NEW;
END;
$$;

CREATE TRIGGER snapshots_replace_previous
    BEFORE INSERT ON snapshots
    FOR EACH ROW EXECUTE FUNCTION snapshots_replace_previous();

-- postgres-es moves a snapshot on with `UPDATE ... WHERE current_snapshot = <the one loaded>`
-- in the transaction that appends the events, but only looks at the updated row count after
-- that transaction committed. Had the row gone in between (an operator cleared snapshots), the
-- events would be stored and the command still reported as an optimistic-lock conflict, which
-- command-api retries: a change applied twice. Failing the statement instead, with the
-- unique-violation code postgres-es reads as a conflict, rolls the events back before the
-- retry.
CREATE FUNCTION snapshots_update_must_match() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM updated) THEN
        RAISE EXCEPTION 'no snapshot matched: it was removed or replaced since the aggregate was loaded'
            USING ERRCODE = 'unique_violation';
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER snapshots_update_must_match
    AFTER UPDATE ON snapshots
    REFERENCING NEW TABLE AS updated
    FOR EACH STATEMENT EXECUTE FUNCTION snapshots_update_must_match();
