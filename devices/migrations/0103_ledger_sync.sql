-- Synchronisation with the utility's customer/billing system (devices/sync/).

-- The CIS change time last applied per entity: an older change is a conflict, the same one a
-- duplicate (absorbed).
CREATE TABLE ledger.sync_state (
    entity     text NOT NULL,
    entity_id  text NOT NULL,
    changed_at timestamptz NOT NULL,
    message_id text,
    applied_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (entity, entity_id)
);

-- Top-ups received from the CIS, once per top_up_id; each new one is queued in the outbox for
-- billing.topups in the same transaction.
CREATE TABLE ledger.sync_topups (
    top_up_id   text PRIMARY KEY,
    account_id  text NOT NULL REFERENCES ledger.accounts,
    amount      numeric NOT NULL CHECK (amount <> 0),
    ts          timestamptz NOT NULL,
    kind        text NOT NULL DEFAULT 'top_up' CHECK (kind IN ('top_up', 'refund', 'adjustment')),
    channel     text NOT NULL DEFAULT '',
    currency    text NOT NULL DEFAULT 'CNY',
    operator    text,
    reason      text NOT NULL DEFAULT '',
    message_id  text,
    received_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    CHECK (kind <> 'top_up' OR amount > 0)
);
CREATE INDEX ON ledger.sync_topups (account_id, ts);
CREATE TRIGGER x_outbox AFTER INSERT ON ledger.sync_topups
    FOR EACH ROW EXECUTE FUNCTION ledger.enqueue('billing.topups', 'topup', 'top_up_id');

-- Every CIS message not applied: rejects (invalid, unknown reference) and conflicts (stale,
-- changed locally since). 'pending' ones wait for a reference that may still arrive on another
-- topic and are retried; 'open' ones wait for a person; 'resolved' says how.
CREATE TABLE ledger.sync_exceptions (
    exception_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind            text NOT NULL CHECK (kind IN ('reject', 'conflict')),
    status          text NOT NULL DEFAULT 'open' CHECK (status IN ('pending', 'open', 'resolved')),
    topic           text NOT NULL,
    kafka_partition integer,
    kafka_offset    bigint,
    message_id      text,
    entity          text NOT NULL DEFAULT '',
    entity_id       text NOT NULL DEFAULT '',
    reason          text NOT NULL,
    hint            text NOT NULL DEFAULT '',
    key             bytea,
    payload         bytea,
    attempts        integer NOT NULL DEFAULT 1,
    received_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    last_attempt_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    resolved_at     timestamptz,
    resolved_by     text,
    resolution      text
);
CREATE INDEX ON ledger.sync_exceptions (status, received_at);
CREATE INDEX ON ledger.sync_exceptions (entity, entity_id);

-- A CIS price adjustment makes one tariff version, however often it is delivered.
CREATE UNIQUE INDEX tariff_versions_sync_source ON ledger.tariff_versions (tariff_id, source)
    WHERE source LIKE 'sync:%';

GRANT SELECT, INSERT, UPDATE ON ledger.sync_state, ledger.sync_exceptions TO {{role.api}};
GRANT SELECT, INSERT ON ledger.sync_topups TO {{role.api}};
GRANT SELECT ON ledger.sync_state, ledger.sync_topups, ledger.sync_exceptions TO {{role.billing}};
