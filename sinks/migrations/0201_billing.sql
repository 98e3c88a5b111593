-- Billing data as the billing engine emitted it: charges (with their priced segments),
-- settlements (daily, monthly and yearly bills, every revision), balance movements (the
-- transactions of prepaid accounts), the current balance of each account, and top-ups.
-- Append-only except the current-balance projection. Money is numeric (the engine rounds
-- half-up to 0.01 per priced segment; sums of segments are never re-rounded).

-- Priced consumption of one account for one reading version, or an adjustment, receivable
-- or bill. An adjustment names the charge it corrects; history is never rewritten.
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
    'they correct in "corrects". Settled on the local day of the last instant of the period.';

-- One row per priced piece of a charge: a volume at one tier, price component, time-of-use
-- period and tariff version; the source of agg.tier_consumption_*. A charge is accounted at
-- the last instant of its period (accounted_at = period_end - 1 microsecond): the billing
-- engine settles it on that instant's local day, so tier totals per day equal the daily
-- settlements. price_period is the time-of-use period name ('' for step, flat and real-time
-- prices: a real-time "period" is the priced interval itself, kept in "period").
CREATE TABLE billing.charge_segments (
    charge_id          text        NOT NULL,
    segment_no         integer     NOT NULL,
    account_id         text        NOT NULL,
    meter_id           text        NOT NULL,
    kind               text        NOT NULL,
    accounted_at       timestamptz NOT NULL,
    tier               integer     NOT NULL,
    component          text        NOT NULL DEFAULT 'total',
    price_period       text        NOT NULL DEFAULT '',
    period             text        NOT NULL DEFAULT '',
    volume             numeric     NOT NULL,
    unit_price         numeric     NOT NULL,
    amount             numeric     NOT NULL,
    tariff_id          text        NOT NULL DEFAULT '',
    tariff_version     integer     NOT NULL DEFAULT 1,
    provisional        boolean     NOT NULL DEFAULT false,
    PRIMARY KEY (charge_id, segment_no, accounted_at)
);
COMMENT ON TABLE billing.charge_segments IS
    'The priced segments of each charge (tier, component, time-of-use period, tariff version).';

-- Settled consumption of one account for one local day, month or year (a bill). Every
-- revision is kept: a correction to a settled period publishes the next revision.
CREATE TABLE billing.settlements (
    settlement_id      text        NOT NULL,
    revision           integer     NOT NULL,
    account_id         text        NOT NULL,
    period             text        NOT NULL CHECK (period IN ('day', 'month', 'year')),
    period_id          text        NOT NULL,
    period_start       timestamptz NOT NULL,
    period_end         timestamptz NOT NULL,
    volume             numeric     NOT NULL,
    amount             numeric     NOT NULL,
    currency           text        NOT NULL DEFAULT 'CNY',
    estimated_volume   numeric     NOT NULL DEFAULT 0,
    provisional        boolean     NOT NULL DEFAULT false,
    charges            integer     NOT NULL DEFAULT 0,
    meters             text[]      NOT NULL DEFAULT '{}',
    tariff_id          text        NOT NULL DEFAULT '',
    cycle_id           text        NOT NULL DEFAULT '',
    cycle_volume_after numeric,
    balance_after      numeric,
    created_at         timestamptz,
    stored_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (settlement_id, revision, period_start)
);
CREATE INDEX settlements_account ON billing.settlements (account_id, period, period_start);
COMMENT ON TABLE billing.settlements IS
    'Daily, monthly and yearly settlements (bills), every revision (key settlement_id, '
    'revision); billing.settlements_current holds the highest revision of each.';

CREATE TABLE billing.settlement_segments (
    settlement_id      text        NOT NULL,
    revision           integer     NOT NULL,
    segment_no         integer     NOT NULL,
    account_id         text        NOT NULL,
    period             text        NOT NULL,
    period_start       timestamptz NOT NULL,
    tier               integer     NOT NULL,
    component          text        NOT NULL DEFAULT 'total',
    price_period       text        NOT NULL DEFAULT '',
    volume             numeric     NOT NULL,
    unit_price         numeric     NOT NULL,
    amount             numeric     NOT NULL,
    tariff_id          text        NOT NULL DEFAULT '',
    tariff_version     integer     NOT NULL DEFAULT 1,
    PRIMARY KEY (settlement_id, revision, segment_no, period_start)
);
COMMENT ON TABLE billing.settlement_segments IS
    'Tier, component and time-of-use breakdown of each settlement revision.';

CREATE VIEW billing.settlements_current AS
SELECT DISTINCT ON (settlement_id) *
FROM billing.settlements
ORDER BY settlement_id, revision DESC;
COMMENT ON VIEW billing.settlements_current IS 'The highest revision of each settlement.';

-- Every movement of a prepaid balance (charge, top-up, adjustment, refund, opening,
-- settlement), signed, with the balance after it: the account's transactions. Volume-mode
-- accounts (pre-purchased m³) also carry the volume moved and the m³ left.
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
    volume             numeric,
    volume_after       numeric,
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
    volume_balance     numeric,
    as_of              timestamptz NOT NULL,
    entry_id           text        NOT NULL,
    updated_at         timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE billing.balances IS
    'Current balance per account: the balance (and m³ left, volume mode) after its newest '
    'movement.';

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
    volume             numeric,
    stored_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (top_up_id, ts)
);
COMMENT ON TABLE billing.topups IS 'Top-ups, refunds and adjustments (key top_up_id).';

GRANT SELECT, INSERT ON billing.charges, billing.charge_segments, billing.settlements,
    billing.settlement_segments, billing.balance_changes, billing.topups TO {{role.pipeline}};
GRANT SELECT, INSERT, UPDATE ON billing.balances TO {{role.pipeline}};
GRANT SELECT ON billing.charges, billing.charge_segments, billing.settlements,
    billing.settlement_segments, billing.settlements_current, billing.balance_changes,
    billing.balances, billing.topups TO {{role.api}}, {{role.billing}};
