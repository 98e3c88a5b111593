-- Operator alerts and command results as they travelled on Kafka, and the sink's own
-- bookkeeping: corrections it refused to apply and its progress per partition.

-- Alert history: every raise and clear (key alert_id, state).
CREATE TABLE ops.alerts (
    alert_id           text        NOT NULL,
    state              text        NOT NULL CHECK (state IN ('raised', 'cleared')),
    object_type        text        NOT NULL,
    object_id          text        NOT NULL,
    severity           text        NOT NULL,
    code               text        NOT NULL,
    reason             text        NOT NULL,
    ts                 timestamptz NOT NULL,
    source             text        NOT NULL DEFAULT '',
    attributes         jsonb       NOT NULL DEFAULT '{}',
    stored_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (alert_id, state, ts)
);
COMMENT ON TABLE ops.alerts IS 'Alert raises and clears (key alert_id, state).';

-- The outcome history of dispatched commands (the lifecycle itself lives in ops.commands).
CREATE TABLE ops.command_results (
    command_id         text        NOT NULL,
    device_id          text        NOT NULL,
    status             text        NOT NULL,
    attempt            integer     NOT NULL DEFAULT 1,
    ts                 timestamptz NOT NULL,
    fep                text        NOT NULL DEFAULT '',
    detail             text        NOT NULL DEFAULT '',
    error_code         text,
    reply              jsonb       NOT NULL DEFAULT '{}',
    stored_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (command_id, status, attempt, ts)
);
COMMENT ON TABLE ops.command_results IS
    'Command results as FEPs published them (key command_id, status, attempt).';

-- A different value for an existing natural key: kept here, flagged for review, never
-- applied. The same conflicting message delivered twice is recorded once.
CREATE TABLE ops.sink_corrections (
    correction_id      bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    table_name         text        NOT NULL,
    natural_key        jsonb       NOT NULL,
    stored             jsonb       NOT NULL,
    incoming           jsonb       NOT NULL,
    differs            text[]      NOT NULL,
    incoming_hash      text        NOT NULL,
    source_topic       text,
    detected_at        timestamptz NOT NULL DEFAULT now(),
    reviewed_at        timestamptz,
    reviewed_by        text,
    resolution         text,
    UNIQUE (table_name, natural_key, incoming_hash)
);
CREATE INDEX sink_corrections_open ON ops.sink_corrections (detected_at)
    WHERE reviewed_at IS NULL;
COMMENT ON TABLE ops.sink_corrections IS
    'Incoming rows whose natural key exists with different values: flagged, never applied.';

-- Where each sink consumer group stands per partition, updated in the same transaction as
-- the rows it wrote (so the table never claims more than the database holds).
CREATE TABLE ops.sink_progress (
    consumer_group     text        NOT NULL,
    topic              text        NOT NULL,
    partition          integer     NOT NULL,
    next_offset        bigint      NOT NULL,
    rows_written       bigint      NOT NULL DEFAULT 0,
    duplicates_absorbed bigint     NOT NULL DEFAULT 0,
    corrections        bigint      NOT NULL DEFAULT 0,
    dead_lettered      bigint      NOT NULL DEFAULT 0,
    lag                bigint,
    updated_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, partition)
);
COMMENT ON TABLE ops.sink_progress IS
    'Per-partition progress of each sink group: next offset, counters, lag at last flush.';

GRANT SELECT, INSERT ON ops.alerts, ops.command_results TO {{role.pipeline}};
GRANT SELECT, INSERT ON ops.sink_corrections TO {{role.sink}};
GRANT SELECT, INSERT, UPDATE ON ops.sink_progress TO {{role.sink}};
GRANT SELECT ON ops.alerts, ops.command_results, ops.sink_corrections, ops.sink_progress
    TO {{role.api}};
GRANT UPDATE (reviewed_at, reviewed_by, resolution) ON ops.sink_corrections TO {{role.api}};
