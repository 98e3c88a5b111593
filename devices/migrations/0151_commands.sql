-- Commands, their approvals, mass commands (groups) and their approvals, operator
-- quarantine and safety locks (devices/commands/). State changes are audited in
-- ops.audit_log in the same transaction.

CREATE TABLE ops.command_groups (
    group_id           text        PRIMARY KEY,
    client_command_id  text,
    requested_by       text        NOT NULL,
    origin             text        NOT NULL,
    command            text        NOT NULL,
    params             jsonb       NOT NULL DEFAULT '{}'::jsonb,
    reason             text        NOT NULL DEFAULT '',
    selector           jsonb       NOT NULL DEFAULT '{}'::jsonb,
    state              text        NOT NULL CHECK (state IN
                           ('requested', 'approved', 'running', 'paused', 'completed',
                            'cancelled')),
    approvals_required int         NOT NULL CHECK (approvals_required >= 0),
    preview            jsonb       NOT NULL DEFAULT '[]'::jsonb,
    preview_hash       text        NOT NULL,
    device_count       int         NOT NULL,
    excluded_count     int         NOT NULL DEFAULT 0,
    fingerprint        text        NOT NULL,
    requested_at       timestamptz NOT NULL,
    expires_at         timestamptz NOT NULL,
    last_wave_at       timestamptz,
    waves              int         NOT NULL DEFAULT 0,
    paused_reason      text        NOT NULL DEFAULT '',
    failures_acknowledged int      NOT NULL DEFAULT 0,
    finished_at        timestamptz,
    updated_at         timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX command_groups_client_id ON ops.command_groups (requested_by, client_command_id)
    WHERE client_command_id IS NOT NULL;
CREATE INDEX command_groups_live ON ops.command_groups (state)
    WHERE state IN ('approved', 'running');

CREATE TABLE ops.command_group_approvals (
    group_id     text        NOT NULL REFERENCES ops.command_groups ON DELETE CASCADE,
    approver     text        NOT NULL,
    approved_at  timestamptz NOT NULL,
    preview_hash text        NOT NULL,
    comment      text        NOT NULL DEFAULT '',
    PRIMARY KEY (group_id, approver)
);

CREATE TABLE ops.commands (
    command_id         text        PRIMARY KEY,
    client_command_id  text,
    requested_by       text        NOT NULL,
    origin             text        NOT NULL,
    device_id          text        NOT NULL,
    device_type        text        NOT NULL DEFAULT '',
    protocol           text        NOT NULL DEFAULT '',
    address            text        NOT NULL DEFAULT '',
    region             text,
    requested_command  text        NOT NULL,
    command            text        NOT NULL,
    params             jsonb       NOT NULL DEFAULT '{}'::jsonb,
    safety_class       text        NOT NULL,
    state              text        NOT NULL CHECK (state IN
                           ('requested', 'quarantined', 'approved', 'queued', 'sent',
                            'confirmed', 'failed', 'expired', 'cancelled', 'rejected')),
    approvals_required int         NOT NULL DEFAULT 0 CHECK (approvals_required >= 0),
    policy_reasons     jsonb       NOT NULL DEFAULT '[]'::jsonb,
    readback           boolean     NOT NULL DEFAULT false,
    sets_safety_lock   boolean     NOT NULL DEFAULT false,
    purpose            text        NOT NULL DEFAULT 'command'
                           CHECK (purpose IN ('command', 'readback')),
    parent_command_id  text        REFERENCES ops.commands,
    group_id           text        REFERENCES ops.command_groups,
    operation_id       text,
    reason             text        NOT NULL DEFAULT '',
    priority           int         NOT NULL DEFAULT 5,
    fingerprint        text        NOT NULL,
    requested_at       timestamptz NOT NULL,
    expires_at         timestamptz NOT NULL,
    attempt            int         NOT NULL DEFAULT 0,
    max_attempts       int         NOT NULL DEFAULT 3 CHECK (max_attempts >= 1),
    delivery           text        NOT NULL DEFAULT 'now' CHECK (delivery IN ('now', 'on_wake')),
    reply_timeout_s    double precision NOT NULL DEFAULT 10,
    fep                text,
    service_point      text,
    link_id            text,
    handler            text        NOT NULL DEFAULT '',
    dispatched_at      timestamptz,
    sent_at            timestamptz,
    acknowledged_at    timestamptz,
    finished_at        timestamptz,
    next_check_at      timestamptz,
    result_detail      text        NOT NULL DEFAULT '',
    error_code         text,
    reply              jsonb       NOT NULL DEFAULT '{}'::jsonb,
    updated_at         timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX commands_client_id ON ops.commands (requested_by, client_command_id)
    WHERE client_command_id IS NOT NULL;
CREATE INDEX commands_due ON ops.commands (next_check_at)
    WHERE state IN ('requested', 'quarantined', 'approved', 'queued', 'sent');
CREATE INDEX commands_device ON ops.commands (device_id, requested_at DESC);
CREATE INDEX commands_requester ON ops.commands (requested_by, requested_at DESC);
CREATE INDEX commands_group ON ops.commands (group_id, state) WHERE group_id IS NOT NULL;
CREATE INDEX commands_operation ON ops.commands (operation_id) WHERE operation_id IS NOT NULL;
CREATE INDEX commands_parent ON ops.commands (parent_command_id)
    WHERE parent_command_id IS NOT NULL;
CREATE INDEX commands_state_time ON ops.commands (state, requested_at DESC);

CREATE TABLE ops.command_approvals (
    command_id  text        NOT NULL REFERENCES ops.commands ON DELETE CASCADE,
    approver    text        NOT NULL,
    approved_at timestamptz NOT NULL,
    comment     text        NOT NULL DEFAULT '',
    PRIMARY KEY (command_id, approver)
);

-- A person whose commands passed the anomaly threshold; held until an approver releases.
CREATE TABLE ops.operator_quarantine (
    operator      text        PRIMARY KEY,
    state         text        NOT NULL CHECK (state IN ('quarantined', 'released')),
    reason        text        NOT NULL,
    since         timestamptz NOT NULL,
    released_by   text,
    released_at   timestamptz,
    times         int         NOT NULL DEFAULT 1
);

-- A supply closed for a safety cause; only a person clears it, by reopening deliberately.
CREATE TABLE ops.safety_locks (
    lock_id     bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_id   text        NOT NULL,
    cause       text        NOT NULL,
    command_id  text,
    source      text        NOT NULL DEFAULT 'command',
    locked_at   timestamptz NOT NULL,
    cleared_by  text,
    cleared_at  timestamptz,
    clear_command_id text
);
CREATE UNIQUE INDEX safety_locks_active ON ops.safety_locks (device_id) WHERE cleared_at IS NULL;

GRANT SELECT, INSERT, UPDATE ON ops.commands, ops.command_approvals, ops.command_groups,
    ops.command_group_approvals, ops.operator_quarantine, ops.safety_locks TO {{role.api}};
GRANT SELECT ON ops.commands, ops.command_groups, ops.safety_locks TO {{role.billing}};
