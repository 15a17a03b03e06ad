-- docker-compose.yml only (DEVELOPMENT): run by the postgres image on the first start of an
-- empty data volume. Creates one login user per service, each a member of the least-privilege
-- role the migrations grant to (20261130000010_roles_and_sessions.sql creates the same NOLOGIN
-- roles and tolerates them existing). The passwords are public; never use them anywhere real.
DO $$
DECLARE
    role_name text;
BEGIN
    FOREACH role_name IN ARRAY ARRAY['catalog_command', 'catalog_projector', 'catalog_query'] LOOP
        BEGIN
            EXECUTE format('CREATE ROLE %I NOLOGIN', role_name);
        EXCEPTION WHEN duplicate_object THEN NULL;
        END;
    END LOOP;
END
$$;

CREATE ROLE command_api LOGIN PASSWORD 'command-api-dev-password' IN ROLE catalog_command;
CREATE ROLE query_api LOGIN PASSWORD 'query-api-dev-password' IN ROLE catalog_query;
-- The projector runs --role all, which includes the reservations process manager: it appends
-- events (sends commands) like command-api, so it is a member of catalog_command too.
CREATE ROLE projector LOGIN PASSWORD 'projector-dev-password' IN ROLE catalog_projector, catalog_command;
