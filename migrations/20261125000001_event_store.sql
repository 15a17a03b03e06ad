-- The event store. The first seven columns are the postgres-es layout, which appends to it.
-- The rest give readers a commit-safe global order:
--   global_position  taken from a sequence at insert time; unique, but NOT in commit order:
--                    a transaction that took a lower value may commit after one that took a higher.
--   transaction_id   the writing transaction; a reader that only reads rows whose transaction is
--                    older than pg_snapshot_xmin(pg_current_snapshot()) and orders by
--                    (transaction_id, global_position) never skips a late commit.
CREATE TABLE events
(
    aggregate_type  text                         NOT NULL,
    aggregate_id    text                         NOT NULL,
    sequence        bigint CHECK (sequence >= 0) NOT NULL,
    event_type      text                         NOT NULL,
    event_version   text                         NOT NULL,
    payload         json                         NOT NULL,
    metadata        json                         NOT NULL,
    global_position bigserial                    NOT NULL,
    transaction_id  xid8                         NOT NULL DEFAULT pg_current_xact_id(),
    event_id        uuid                         NOT NULL DEFAULT gen_random_uuid(),
    recorded_at     timestamptz                  NOT NULL DEFAULT now(),
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);

CREATE UNIQUE INDEX events_global_position ON events (global_position);
CREATE UNIQUE INDEX events_event_id ON events (event_id);
CREATE INDEX events_commit_order ON events (transaction_id, global_position);

-- Required by postgres-es; only used if snapshotting is switched on.
CREATE TABLE snapshots
(
    aggregate_type   text                                 NOT NULL,
    aggregate_id     text                                 NOT NULL,
    last_sequence    bigint CHECK (last_sequence >= 0)    NOT NULL,
    current_snapshot bigint CHECK (current_snapshot >= 0) NOT NULL,
    payload          json                                 NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, last_sequence)
);
