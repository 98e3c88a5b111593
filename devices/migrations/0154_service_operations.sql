-- Service operations (devices/operations/): register, transfer, deregister; install,
-- replace, remove a meter — resumable sequences of ledger changes and commands with their
-- step state, and the compensation that undoes the done steps when one fails.

CREATE TABLE ops.service_operations (
    operation_id        text        PRIMARY KEY,
    client_operation_id text,
    kind                text        NOT NULL CHECK (kind IN ('register', 'transfer', 'deregister',
                                                             'install', 'replace', 'remove')),
    params              jsonb       NOT NULL,
    context             jsonb       NOT NULL DEFAULT '{}'::jsonb,
    state               text        NOT NULL CHECK (state IN
                            ('running', 'compensating', 'completed', 'compensated', 'failed')),
    current_step        int         NOT NULL DEFAULT 0,
    requested_by        text        NOT NULL,
    origin              text        NOT NULL DEFAULT 'api',
    reason              text        NOT NULL DEFAULT '',
    region              text,
    error               text        NOT NULL DEFAULT '',
    fingerprint         text        NOT NULL,
    created_at          timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL,
    finished_at         timestamptz
);
CREATE UNIQUE INDEX service_operations_client_id
    ON ops.service_operations (requested_by, client_operation_id)
    WHERE client_operation_id IS NOT NULL;
CREATE INDEX service_operations_live ON ops.service_operations (updated_at)
    WHERE state IN ('running', 'compensating');
CREATE INDEX service_operations_created ON ops.service_operations (created_at DESC);

CREATE TABLE ops.service_operation_steps (
    operation_id    text        NOT NULL REFERENCES ops.service_operations ON DELETE CASCADE,
    step_no         int         NOT NULL,
    name            text        NOT NULL,
    kind            text        NOT NULL CHECK (kind IN ('ledger', 'command')),
    state           text        NOT NULL CHECK (state IN
                        ('pending', 'waiting', 'done', 'skipped', 'failed', 'compensating',
                         'compensated', 'compensation_failed')),
    device_id       text,
    command_id      text,
    compensation_command_id text,
    undo            jsonb       NOT NULL DEFAULT '{}'::jsonb,
    result          jsonb       NOT NULL DEFAULT '{}'::jsonb,
    error           text        NOT NULL DEFAULT '',
    started_at      timestamptz,
    finished_at     timestamptz,
    PRIMARY KEY (operation_id, step_no)
);

GRANT SELECT, INSERT, UPDATE ON ops.service_operations, ops.service_operation_steps
    TO {{role.api}};
GRANT SELECT ON ops.service_operations, ops.service_operation_steps TO {{role.billing}};
