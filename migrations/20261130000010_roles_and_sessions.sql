-- Least-privilege database roles, and refresh-token sessions.
--
-- Roles. Each service connects as a login user of its own that is a member of one of these
-- NOLOGIN roles (operators create the login users and their passwords; see docs/runbook.md):
--   catalog_command    command-api: appends and reads events and snapshots, keeps idempotency
--                      records and refresh-token sessions, and whatever the append triggers
--                      touch (catalog_claims, category_tree).
--   catalog_projector  projector: reads events, writes the read models and its checkpoints.
--   catalog_query      query-api: reads the read models, nothing else.
-- Migrations, rebuilds and catalogctl run as the schema's owner.
--
-- Roles are cluster-wide, while grants are per database: several databases (tests, or
-- several environments on one server) may run this migration at once, so a role that exists
-- already, or is being created concurrently, is fine.
DO $$
DECLARE
    role_name text;
BEGIN
    FOREACH role_name IN ARRAY ARRAY['catalog_command', 'catalog_projector', 'catalog_query'] LOOP
        BEGIN
            EXECUTE format('CREATE ROLE %I NOLOGIN', role_name);
        EXCEPTION
            -- unique_violation: a concurrent CREATE ROLE of the same name won the race.
            WHEN duplicate_object OR unique_violation THEN NULL;
        END;
    END LOOP;
END
$$;

-- The schema's objects, not CREATE on it.
GRANT USAGE ON SCHEMA public TO catalog_command, catalog_projector, catalog_query;

-- command-api. postgres-es appends events (global_position is a bigserial) and moves snapshots
-- on (the snapshot triggers delete the previous row); the append trigger keeps catalog_claims
-- and category_tree (it locks category rows FOR KEY SHARE, which needs UPDATE).
GRANT SELECT, INSERT ON events TO catalog_command;
GRANT USAGE ON SEQUENCE events_global_position_seq TO catalog_command;
GRANT SELECT, INSERT, UPDATE, DELETE ON snapshots TO catalog_command;
GRANT SELECT, INSERT, UPDATE, DELETE ON idempotency_keys TO catalog_command;
GRANT SELECT, INSERT, UPDATE, DELETE ON catalog_claims TO catalog_command;
GRANT SELECT, INSERT, UPDATE, DELETE ON category_tree TO catalog_command;

-- projector: the publisher reads events and keeps its checkpoint; the consumer folds events
-- into the read models (its parked dead letters get their grants with their table, in a later
-- migration).
GRANT SELECT ON events TO catalog_projector;
GRANT SELECT, INSERT, UPDATE ON publisher_checkpoints TO catalog_projector;
GRANT SELECT, INSERT, UPDATE, DELETE ON products, users, categories, product_history TO catalog_projector;

-- query-api: the read models only (never events, snapshots or anything with credentials).
GRANT SELECT ON products, users, categories, product_history TO catalog_query;

-- Refresh-token sessions (command-api). A session ("family") starts at login and ends at its
-- absolute expiry, at logout, or when it is revoked (then its rows are deleted). Each refresh
-- rotates the token: the presented one is marked used and a new one is issued in the same
-- session; presenting a used token again means it was stolen, and ends the whole session.
CREATE TABLE refresh_sessions
(
    id                  uuid PRIMARY KEY,
    user_id             uuid        NOT NULL,
    -- The user's credentials_version when the session started: a password, role or activation
    -- change since then (a higher version on the User aggregate) ends the session.
    credentials_version bigint      NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    expires_at          timestamptz NOT NULL
);

CREATE INDEX refresh_sessions_user_id ON refresh_sessions (user_id, created_at);
CREATE INDEX refresh_sessions_expires_at ON refresh_sessions (expires_at);

CREATE TABLE refresh_tokens
(
    -- SHA-256 of the opaque token (256 random bits): the token itself is never stored, and a
    -- fast hash is enough for a secret nobody can guess.
    token_hash bytea PRIMARY KEY,
    session_id uuid        NOT NULL REFERENCES refresh_sessions (id) ON DELETE CASCADE,
    issued_at  timestamptz NOT NULL DEFAULT now(),
    -- Set when the token was exchanged for its successor.
    used_at    timestamptz
);

CREATE INDEX refresh_tokens_session_id ON refresh_tokens (session_id, issued_at);

GRANT SELECT, INSERT, UPDATE, DELETE ON refresh_sessions, refresh_tokens TO catalog_command;
