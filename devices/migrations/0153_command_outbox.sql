-- Messages the control plane must publish (command dispatches, alerts), written in the same
-- transaction as the state change that causes them and published by `unimeter command serve`
-- (transactional outbox: nothing is published that was not committed, nothing committed is
-- lost). Rows are deleted once the broker acknowledged them.

CREATE TABLE ops.command_outbox (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topic      text        NOT NULL,
    key        bytea       NOT NULL,
    value      bytea       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- FOR UPDATE SKIP LOCKED (claiming a batch) needs the UPDATE privilege.
GRANT SELECT, INSERT, UPDATE, DELETE ON ops.command_outbox TO {{role.api}};
