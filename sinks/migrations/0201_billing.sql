-- Billing data as the billing engine emitted it: charges (with their priced segments),
-- daily settlements, balance movements (the transactions of prepaid accounts), the current
-- balance of each account, and top-ups. Append-only except the current-balance projection.
-- Money is numeric (the engine rounds half-up to 0.01 per priced segment).

-- Priced consumption of one account for one reading version, or an adjustment, settlement,
-- receivable or bill. An adjustment names the charge it corrects; history is never rewritten.
CREATE TABLE billing.charges (
    charge_id          text        NOT NULL,
    account_id         text        NOT NULL,
    meter_id           text        NOT NULL,
    kind               text        NOT NULL,
    period_start       timestamptz NOT NULL,
    period_end         timestamptz NOT NULL,
    volume             numeric     NOT NULL,
    amount             numeric     NOT NULL,
    currency           text        NOT NULL DEFAULT 'CNY',
    reading_ts         timestamptz,
    reading_version    integer,
    register           text        NOT NULL DEFAULT '',
    provisional        boolean     NOT NULL DEFAULT false,
    tariff_id          text        NOT NULL DEFAULT '',
    cycle_id           text        NOT NULL DEFAULT '',
    cycle_volume_after numeric,
    corrects           text,
    created_at         timestamptz,
    stored_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (charge_id, period_start)
);
COMMENT ON TABLE billing.charges IS
    'Charges as the billing engine priced them (key charge_id); adjustments name the charge '
    'they correct in "corrects". Attributed to time by period_start.';

-- One row per priced piece of a charge: a volume at one tier, price component and tariff
-- version. The source of agg.tier_consumption_*.
CREATE TABLE billing.charge_segments (
    charge_id          text        NOT NULL,
    segment_no         integer     NOT NULL,
    account_id         text        NOT NULL,
    meter_id           text        NOT NULL,
    kind               text        NOT NULL,
    period_start       timestamptz NOT NULL,
    tier               integer     NOT NULL,
    component          text        NOT NULL DEFAULT 'total',
    volume             numeric     NOT NULL,
    unit_price         numeric     NOT NULL,
    amount             numeric     NOT NULL,
    tariff_id          text        NOT NULL DEFAULT '',
    tariff_version     integer     NOT NULL DEFAULT 1,
    provisional        boolean     NOT NULL DEFAULT false,
    PRIMARY KEY (charge_id, segment_no, period_start)
);
COMMENT ON TABLE billing.charge_segments IS
    'The priced segments of each charge (tier, component, tariff version).';

-- The daily settlement of an account: what one local day cost (a charge of kind
-- ''settlement''), keyed by the charge that carries it.
CREATE TABLE billing.daily_settlements (
    charge_id          text        NOT NULL,
    account_id         text        NOT NULL,
    meter_id           text        NOT NULL,
    settlement_day     date        NOT NULL,
    period_start       timestamptz NOT NULL,
    period_end         timestamptz NOT NULL,
    volume             numeric     NOT NULL,
    amount             numeric     NOT NULL,
    currency           text        NOT NULL DEFAULT 'CNY',
    provisional        boolean     NOT NULL DEFAULT false,
    tariff_id          text        NOT NULL DEFAULT '',
    cycle_id           text        NOT NULL DEFAULT '',
    cycle_volume_after numeric,
    created_at         timestamptz,
    stored_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (charge_id, period_start)
);
CREATE INDEX daily_settlements_account_day ON billing.daily_settlements (account_id,
    settlement_day);
COMMENT ON TABLE billing.daily_settlements IS
    'Daily settlements per account and local day (the utility''s zone).';

-- Every movement of a prepaid balance (charge, top-up, adjustment, refund, opening,
-- settlement), signed, with the balance after it: the account's transactions.
CREATE TABLE billing.balance_changes (
    entry_id           text        NOT NULL,
    account_id         text        NOT NULL,
    ts                 timestamptz NOT NULL,
    kind               text        NOT NULL,
    amount             numeric     NOT NULL,
    balance_after      numeric     NOT NULL,
    currency           text        NOT NULL DEFAULT 'CNY',
    reference          text,
    alarm_state        text,
    stored_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (entry_id, ts)
);
COMMENT ON TABLE billing.balance_changes IS
    'Balance movements of prepaid accounts (key entry_id), signed; a charge is negative.';

-- The latest known balance of each account (a projection of balance_changes: the row of the
-- newest movement wins; an older movement arriving late never moves it back).
CREATE TABLE billing.balances (
    account_id         text        PRIMARY KEY,
    balance            numeric     NOT NULL,
    currency           text        NOT NULL DEFAULT 'CNY',
    alarm_state        text,
    as_of              timestamptz NOT NULL,
    entry_id           text        NOT NULL,
    updated_at         timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE billing.balances IS
    'Current balance per account: the balance after its newest movement.';

-- Money paid into a prepaid account, or taken back, as the billing system sent it.
CREATE TABLE billing.topups (
    top_up_id          text        NOT NULL,
    account_id         text        NOT NULL,
    amount             numeric     NOT NULL,
    ts                 timestamptz NOT NULL,
    kind               text        NOT NULL DEFAULT 'top_up',
    channel            text        NOT NULL DEFAULT '',
    currency           text        NOT NULL DEFAULT 'CNY',
    operator           text,
    reason             text        NOT NULL DEFAULT '',
    stored_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (top_up_id, ts)
);
COMMENT ON TABLE billing.topups IS 'Top-ups, refunds and adjustments (key top_up_id).';

GRANT SELECT, INSERT ON billing.charges, billing.charge_segments, billing.daily_settlements,
    billing.balance_changes, billing.topups TO {{role.pipeline}};
GRANT SELECT, INSERT, UPDATE ON billing.balances TO {{role.pipeline}};
GRANT SELECT ON billing.charges, billing.charge_segments, billing.daily_settlements,
    billing.balance_changes, billing.balances, billing.topups TO {{role.api}}, {{role.billing}};
