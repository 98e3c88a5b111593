-- What the utility's billing system reads (role billing): consumption per account, meter and
-- tariff by local day and month, priced volume per tariff tier, charges and settlements per
-- local day. Days and months are those of the utility's zone (agg.bucket_zone); `day` and
-- `month` are local dates, `bucket` the UTC instant the local period starts at.
-- On TimescaleDB the aggregates are real-time, so the current day and month are complete so
-- far; on plain PostgreSQL they are as fresh as the last `unimeter aggregates refresh`.

CREATE VIEW billing.account_consumption_daily AS
SELECT (a.bucket AT TIME ZONE z.timezone)::date AS day, a.bucket, a.account_id, a.meter_id,
       a.register, a.unit, a.medium, a.tariff_id, a.consumption, a.reading_count,
       a.interval_count, a.estimated_count
FROM agg.meter_consumption_daily a CROSS JOIN agg.bucket_zone z
WHERE a.account_id IS NOT NULL;
COMMENT ON VIEW billing.account_consumption_daily IS
    'Consumption per account, meter, register and tariff per local day.';

CREATE VIEW billing.account_consumption_monthly AS
SELECT (a.bucket AT TIME ZONE z.timezone)::date AS month, a.bucket, a.account_id, a.meter_id,
       a.register, a.unit, a.medium, a.tariff_id, a.consumption, a.reading_count,
       a.interval_count, a.estimated_count
FROM agg.meter_consumption_monthly a CROSS JOIN agg.bucket_zone z
WHERE a.account_id IS NOT NULL;
COMMENT ON VIEW billing.account_consumption_monthly IS
    'Consumption per account, meter, register and tariff per local month (month = its 1st).';

CREATE VIEW billing.tier_consumption_daily AS
SELECT (t.bucket AT TIME ZONE z.timezone)::date AS day, t.bucket, t.account_id, t.tariff_id,
       t.tier, t.component, t.price_period, t.volume, t.amount, t.segment_count,
       t.provisional_count
FROM agg.tier_consumption_daily t CROSS JOIN agg.bucket_zone z;
COMMENT ON VIEW billing.tier_consumption_daily IS
    'Priced volume and amount per account, tariff, price tier, component and time-of-use '
    'period per local day (a charge counts on the day it is settled).';

CREATE VIEW billing.tier_consumption_monthly AS
SELECT (t.bucket AT TIME ZONE z.timezone)::date AS month, t.bucket, t.account_id, t.tariff_id,
       t.tier, t.component, t.price_period, t.volume, t.amount, t.segment_count,
       t.provisional_count
FROM agg.tier_consumption_monthly t CROSS JOIN agg.bucket_zone z;
COMMENT ON VIEW billing.tier_consumption_monthly IS
    'Priced volume and amount per account, tariff, price tier, component and time-of-use '
    'period per local month.';

-- A charge is settled on the local day holding the last instant of its period.
CREATE VIEW billing.charges_daily AS
SELECT ((c.period_end - interval '1 microsecond') AT TIME ZONE z.timezone)::date AS day,
       c.account_id, c.kind, c.tariff_id, c.currency, count(*) AS charge_count,
       count(*) FILTER (WHERE c.provisional) AS provisional_count,
       sum(c.volume) AS volume, sum(c.amount) AS amount
FROM billing.charges c CROSS JOIN agg.bucket_zone z
GROUP BY 1, c.account_id, c.kind, c.tariff_id, c.currency;
COMMENT ON VIEW billing.charges_daily IS
    'Charges (consumption, adjustments, receivables …) per account, kind and settlement day.';

-- The current revision of each daily settlement and monthly bill, with local dates.
CREATE VIEW billing.settlements_daily AS
SELECT (s.period_start AT TIME ZONE z.timezone)::date AS day, s.account_id, s.settlement_id,
       s.revision, s.volume, s.amount, s.currency, s.estimated_volume, s.provisional,
       s.charges, s.meters, s.tariff_id, s.cycle_id, s.cycle_volume_after, s.balance_after,
       s.created_at
FROM billing.settlements_current s CROSS JOIN agg.bucket_zone z
WHERE s.period = 'day';
COMMENT ON VIEW billing.settlements_daily IS
    'Daily settlements per account (current revision), by local day.';

CREATE VIEW billing.settlements_monthly AS
SELECT (s.period_start AT TIME ZONE z.timezone)::date AS month, s.account_id, s.settlement_id,
       s.revision, s.volume, s.amount, s.currency, s.estimated_volume, s.provisional,
       s.charges, s.meters, s.tariff_id, s.cycle_id, s.cycle_volume_after, s.balance_after,
       s.created_at
FROM billing.settlements_current s CROSS JOIN agg.bucket_zone z
WHERE s.period = 'month';
COMMENT ON VIEW billing.settlements_monthly IS
    'Monthly bills per account (current revision), by local month (month = its 1st).';

GRANT SELECT ON billing.account_consumption_daily, billing.account_consumption_monthly,
    billing.tier_consumption_daily, billing.tier_consumption_monthly, billing.charges_daily,
    billing.settlements_daily, billing.settlements_monthly TO {{role.billing}}, {{role.api}};
