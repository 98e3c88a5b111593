-- Cheaper refreshes and retention on plain PostgreSQL.
--
-- 1. The refresher deletes and inserts whole bucket ranges, and rows arrive in bucket order:
--    a BRIN index on bucket finds the ranges for a fraction of what a B-tree costs on every
--    refresh. The B-trees by meter and by account stay (lookups of the billing system and
--    the API); the tier levels get one by account.
-- 2. Retention (`unimeter storage policies`) deletes old source rows with the session setting
--    unimeter.retention = on: those deletes must not invalidate the aggregates, which keep
--    the history the source no longer has.

DROP INDEX agg.meter_consumption_hourly_bucket, agg.meter_consumption_daily_bucket,
    agg.meter_consumption_monthly_bucket, agg.dimension_consumption_hourly_bucket,
    agg.dimension_consumption_daily_bucket, agg.dimension_consumption_monthly_bucket,
    agg.tier_consumption_hourly_bucket, agg.tier_consumption_daily_bucket,
    agg.tier_consumption_monthly_bucket;

CREATE INDEX meter_consumption_hourly_bucket ON agg.meter_consumption_hourly USING brin (bucket);
CREATE INDEX meter_consumption_daily_bucket ON agg.meter_consumption_daily USING brin (bucket);
CREATE INDEX meter_consumption_monthly_bucket ON agg.meter_consumption_monthly
    USING brin (bucket);
CREATE INDEX dimension_consumption_hourly_bucket ON agg.dimension_consumption_hourly
    USING brin (bucket);
CREATE INDEX dimension_consumption_daily_bucket ON agg.dimension_consumption_daily
    USING brin (bucket);
CREATE INDEX dimension_consumption_monthly_bucket ON agg.dimension_consumption_monthly
    USING brin (bucket);
CREATE INDEX tier_consumption_hourly_bucket ON agg.tier_consumption_hourly USING brin (bucket);
CREATE INDEX tier_consumption_daily_bucket ON agg.tier_consumption_daily USING brin (bucket);
CREATE INDEX tier_consumption_monthly_bucket ON agg.tier_consumption_monthly
    USING brin (bucket);

CREATE OR REPLACE FUNCTION agg.log_consumption_old() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF current_setting('unimeter.retention', true) = 'on' THEN
        RETURN NULL;  -- old rows aged out: the aggregates keep their history
    END IF;
    INSERT INTO agg.invalidations (source, hour)
    SELECT DISTINCT 'consumption', date_trunc('hour', interval_start, 'UTC') FROM old_rows;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION agg.log_charges_old() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF current_setting('unimeter.retention', true) = 'on' THEN
        RETURN NULL;
    END IF;
    INSERT INTO agg.invalidations (source, hour)
    SELECT DISTINCT 'charges', date_trunc('hour', accounted_at, 'UTC') FROM old_rows;
    RETURN NULL;
END $$;

-- By account on the per-meter levels too (the billing views select by account), as on
-- TimescaleDB.
CREATE INDEX meter_consumption_hourly_account_id ON agg.meter_consumption_hourly
    (account_id, bucket);
CREATE INDEX meter_consumption_daily_account_id ON agg.meter_consumption_daily
    (account_id, bucket);
CREATE INDEX meter_consumption_monthly_account_id ON agg.meter_consumption_monthly
    (account_id, bucket);
