-- Per device type: which unified commands it supports and through which decoders handler
-- (devices/commands/capabilities.py). The profile row holds the type-level facts the safety
-- policy and the dispatcher need.

CREATE TABLE ledger.device_type_command_profiles (
    device_type     text        PRIMARY KEY,
    protocol        text        NOT NULL,
    valve_arming    boolean     NOT NULL DEFAULT false,
    delivery        text        NOT NULL DEFAULT 'now' CHECK (delivery IN ('now', 'on_wake')),
    reply_timeout_s double precision NOT NULL DEFAULT 10 CHECK (reply_timeout_s > 0),
    max_attempts    int         NOT NULL DEFAULT 3 CHECK (max_attempts BETWEEN 1 AND 20),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE ledger.device_type_commands (
    device_type text    NOT NULL REFERENCES ledger.device_type_command_profiles
                            ON DELETE CASCADE,
    command     text    NOT NULL,
    handler     text    NOT NULL,
    readback    boolean NOT NULL DEFAULT true,
    options     jsonb   NOT NULL DEFAULT '{}'::jsonb,
    PRIMARY KEY (device_type, command)
);

GRANT SELECT, INSERT, UPDATE, DELETE ON ledger.device_type_command_profiles,
    ledger.device_type_commands TO {{role.api}};
GRANT SELECT ON ledger.device_type_command_profiles, ledger.device_type_commands
    TO {{role.pipeline}}, {{role.billing}};
