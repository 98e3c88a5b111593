-- The aggregate relations on TimescaleDB: three hierarchies of continuous aggregates, hourly
-- (UTC) -> daily -> monthly (the utility's zone), the same names and columns as the tables
-- the plain-PostgreSQL refresher keeps (0300_aggregates.postgres.sql; the one description
-- is aggregates/definitions.py).
--
-- Daily and monthly buckets carry the time zone, so they are "variable" buckets; each sits on
-- the fixed-width level below it (hourly UTC -> daily local -> monthly local is a valid
-- hierarchy; every measure composes: sums of sums, minima of minima). Real-time aggregation
-- is on (materialized_only = false): a query sees the buckets not materialised yet, computed
-- from the level below, so "this month so far" is always complete.
--
-- Refresh policies: every window reaches back past the late-data horizon, so a reading up to
-- late_data_days late is folded into all three levels without a manual refresh (each level
-- picks up the level below on its next run; `unimeter aggregates refresh` runs them in order
-- at once). A policy window must span at least two buckets of its level. Compression of the
-- hourly and daily levels starts only past their refresh windows.

CREATE MATERIALIZED VIEW agg.meter_consumption_hourly
    WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '1 hour', interval_start) AS bucket,
       meter_id, register, unit, medium, account_id, tariff_id,
       sum(volume) AS consumption,
       count(*) FILTER (WHERE closes_reading) AS reading_count,
       count(*) AS interval_count,
       count(*) FILTER (WHERE estimated) AS estimated_count,
       min(volume) AS min_consumption,
       max(volume) AS max_consumption
FROM data.consumption_intervals
GROUP BY 1, meter_id, register, unit, medium, account_id, tariff_id
WITH NO DATA;

CREATE MATERIALIZED VIEW agg.meter_consumption_daily
    WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '1 day', bucket, {{timezone}}) AS bucket,
       meter_id, register, unit, medium, account_id, tariff_id,
       sum(consumption) AS consumption,
       sum(reading_count)::bigint AS reading_count,
       sum(interval_count)::bigint AS interval_count,
       sum(estimated_count)::bigint AS estimated_count,
       min(min_consumption) AS min_consumption,
       max(max_consumption) AS max_consumption
FROM agg.meter_consumption_hourly
GROUP BY 1, meter_id, register, unit, medium, account_id, tariff_id
WITH NO DATA;

CREATE MATERIALIZED VIEW agg.meter_consumption_monthly
    WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '1 month', bucket, {{timezone}}) AS bucket,
       meter_id, register, unit, medium, account_id, tariff_id,
       sum(consumption) AS consumption,
       sum(reading_count)::bigint AS reading_count,
       sum(interval_count)::bigint AS interval_count,
       sum(estimated_count)::bigint AS estimated_count,
       min(min_consumption) AS min_consumption,
       max(max_consumption) AS max_consumption
FROM agg.meter_consumption_daily
GROUP BY 1, meter_id, register, unit, medium, account_id, tariff_id
WITH NO DATA;

CREATE MATERIALIZED VIEW agg.dimension_consumption_hourly
    WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '1 hour', interval_start) AS bucket,
       medium, register, unit, customer_type, region, org_unit, supply_node, tariff_id,
       sum(volume) AS consumption,
       count(*) FILTER (WHERE closes_reading) AS reading_count,
       count(*) AS interval_count,
       count(*) FILTER (WHERE estimated) AS estimated_count,
       min(volume) AS min_consumption,
       max(volume) AS max_consumption
FROM data.consumption_intervals
GROUP BY 1, medium, register, unit, customer_type, region, org_unit, supply_node, tariff_id
WITH NO DATA;

CREATE MATERIALIZED VIEW agg.dimension_consumption_daily
    WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '1 day', bucket, {{timezone}}) AS bucket,
       medium, register, unit, customer_type, region, org_unit, supply_node, tariff_id,
       sum(consumption) AS consumption,
       sum(reading_count)::bigint AS reading_count,
       sum(interval_count)::bigint AS interval_count,
       sum(estimated_count)::bigint AS estimated_count,
       min(min_consumption) AS min_consumption,
       max(max_consumption) AS max_consumption
FROM agg.dimension_consumption_hourly
GROUP BY 1, medium, register, unit, customer_type, region, org_unit, supply_node, tariff_id
WITH NO DATA;

CREATE MATERIALIZED VIEW agg.dimension_consumption_monthly
    WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '1 month', bucket, {{timezone}}) AS bucket,
       medium, register, unit, customer_type, region, org_unit, supply_node, tariff_id,
       sum(consumption) AS consumption,
       sum(reading_count)::bigint AS reading_count,
       sum(interval_count)::bigint AS interval_count,
       sum(estimated_count)::bigint AS estimated_count,
       min(min_consumption) AS min_consumption,
       max(max_consumption) AS max_consumption
FROM agg.dimension_consumption_daily
GROUP BY 1, medium, register, unit, customer_type, region, org_unit, supply_node, tariff_id
WITH NO DATA;

CREATE MATERIALIZED VIEW agg.tier_consumption_hourly
    WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '1 hour', accounted_at) AS bucket,
       account_id, tariff_id, tier, component, price_period,
       sum(volume) AS volume,
       sum(amount) AS amount,
       count(*) AS segment_count,
       count(*) FILTER (WHERE provisional) AS provisional_count,
       min(volume) AS min_volume,
       max(volume) AS max_volume
FROM billing.charge_segments
GROUP BY 1, account_id, tariff_id, tier, component, price_period
WITH NO DATA;

CREATE MATERIALIZED VIEW agg.tier_consumption_daily
    WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '1 day', bucket, {{timezone}}) AS bucket,
       account_id, tariff_id, tier, component, price_period,
       sum(volume) AS volume,
       sum(amount) AS amount,
       sum(segment_count)::bigint AS segment_count,
       sum(provisional_count)::bigint AS provisional_count,
       min(min_volume) AS min_volume,
       max(max_volume) AS max_volume
FROM agg.tier_consumption_hourly
GROUP BY 1, account_id, tariff_id, tier, component, price_period
WITH NO DATA;

CREATE MATERIALIZED VIEW agg.tier_consumption_monthly
    WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '1 month', bucket, {{timezone}}) AS bucket,
       account_id, tariff_id, tier, component, price_period,
       sum(volume) AS volume,
       sum(amount) AS amount,
       sum(segment_count)::bigint AS segment_count,
       sum(provisional_count)::bigint AS provisional_count,
       min(min_volume) AS min_volume,
       max(max_volume) AS max_volume
FROM agg.tier_consumption_daily
GROUP BY 1, account_id, tariff_id, tier, component, price_period
WITH NO DATA;

-- The zone of the daily and monthly buckets, fixed here as in the definitions above (the
-- refresh helpers read it to widen explicit windows to whole local days and months).
CREATE TABLE agg.bucket_zone (
    only_row  boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    timezone  text    NOT NULL
);
INSERT INTO agg.bucket_zone (timezone) VALUES ({{timezone}});

SELECT add_continuous_aggregate_policy('agg.meter_consumption_hourly',
    start_offset => INTERVAL '{{late_data_days}} days' + INTERVAL '1 day',
    end_offset => INTERVAL '1 hour', schedule_interval => INTERVAL '5 minutes');
SELECT add_continuous_aggregate_policy('agg.dimension_consumption_hourly',
    start_offset => INTERVAL '{{late_data_days}} days' + INTERVAL '1 day',
    end_offset => INTERVAL '1 hour', schedule_interval => INTERVAL '5 minutes');
SELECT add_continuous_aggregate_policy('agg.tier_consumption_hourly',
    start_offset => INTERVAL '{{late_data_days}} days' + INTERVAL '1 day',
    end_offset => INTERVAL '1 hour', schedule_interval => INTERVAL '5 minutes');

SELECT add_continuous_aggregate_policy('agg.meter_consumption_daily',
    start_offset => INTERVAL '{{late_data_days}} days' + INTERVAL '3 days',
    end_offset => INTERVAL '1 hour', schedule_interval => INTERVAL '15 minutes');
SELECT add_continuous_aggregate_policy('agg.dimension_consumption_daily',
    start_offset => INTERVAL '{{late_data_days}} days' + INTERVAL '3 days',
    end_offset => INTERVAL '1 hour', schedule_interval => INTERVAL '15 minutes');
SELECT add_continuous_aggregate_policy('agg.tier_consumption_daily',
    start_offset => INTERVAL '{{late_data_days}} days' + INTERVAL '3 days',
    end_offset => INTERVAL '1 hour', schedule_interval => INTERVAL '15 minutes');

SELECT add_continuous_aggregate_policy('agg.meter_consumption_monthly',
    start_offset => INTERVAL '{{late_data_days}} days' + INTERVAL '2 months',
    end_offset => INTERVAL '1 hour', schedule_interval => INTERVAL '1 hour');
SELECT add_continuous_aggregate_policy('agg.dimension_consumption_monthly',
    start_offset => INTERVAL '{{late_data_days}} days' + INTERVAL '2 months',
    end_offset => INTERVAL '1 hour', schedule_interval => INTERVAL '1 hour');
SELECT add_continuous_aggregate_policy('agg.tier_consumption_monthly',
    start_offset => INTERVAL '{{late_data_days}} days' + INTERVAL '2 months',
    end_offset => INTERVAL '1 hour', schedule_interval => INTERVAL '1 hour');

ALTER MATERIALIZED VIEW agg.meter_consumption_hourly SET (timescaledb.compress = true,
    timescaledb.compress_segmentby = 'meter_id', timescaledb.compress_orderby = 'bucket');
SELECT add_compression_policy('agg.meter_consumption_hourly',
    compress_after => INTERVAL '{{late_data_days}} days' + INTERVAL '3 days');
ALTER MATERIALIZED VIEW agg.meter_consumption_daily SET (timescaledb.compress = true,
    timescaledb.compress_segmentby = 'meter_id', timescaledb.compress_orderby = 'bucket');
SELECT add_compression_policy('agg.meter_consumption_daily',
    compress_after => INTERVAL '{{late_data_days}} days' + INTERVAL '60 days');

-- Who reads what: the billing system and the API read every aggregate; analysts the ones
-- without account ids (the per-meter and tier levels reach them through analyst.* views).
GRANT SELECT ON agg.meter_consumption_hourly, agg.meter_consumption_daily,
    agg.meter_consumption_monthly, agg.dimension_consumption_hourly,
    agg.dimension_consumption_daily, agg.dimension_consumption_monthly,
    agg.tier_consumption_hourly, agg.tier_consumption_daily, agg.tier_consumption_monthly
    TO {{role.api}}, {{role.billing}}, {{role.pipeline}};
GRANT SELECT ON agg.dimension_consumption_hourly, agg.dimension_consumption_daily,
    agg.dimension_consumption_monthly TO {{role.analyst}};
GRANT SELECT ON agg.bucket_zone TO {{role.api}}, {{role.billing}};
