-- Per-command overrides of a device type's command profile (devices/commands/facts.py).
-- The profile itself comes from ledger.device_types (protocol, command_handler/variant,
-- wake_mode, has_valve, valve_arm_supported, read_back, capabilities); a row here adds a
-- command the defaults do not give the type, routes it to another handler or variant, turns
-- its read-back off, or (enabled = false) takes it away.

CREATE TABLE ledger.device_type_commands (
    device_type text    NOT NULL REFERENCES ledger.device_types ON DELETE CASCADE,
    command     text    NOT NULL,
    enabled     boolean NOT NULL DEFAULT true,
    handler     text    NOT NULL DEFAULT '',
    readback    boolean,
    options     jsonb   NOT NULL DEFAULT '{}'::jsonb,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (device_type, command)
);
COMMENT ON TABLE ledger.device_type_commands IS
    'Per-command overrides of a device type''s command profile: handler/variant, read-back, '
    'options for the encoder (password level ...), or enabled = false to withdraw a command.';

GRANT SELECT, INSERT, UPDATE, DELETE ON ledger.device_type_commands TO {{role.api}};
GRANT SELECT ON ledger.device_type_commands TO {{role.pipeline}}, {{role.billing}};
