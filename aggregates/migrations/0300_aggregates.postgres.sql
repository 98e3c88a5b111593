-- The aggregate relations on plain PostgreSQL: tables with the same names and columns as the
-- continuous aggregates of 0300_aggregates.timescale.sql (the one description is
-- aggregates/definitions.py), kept by the incremental refresher of aggregates/refresh.py
-- (`unimeter aggregates refresh`, or the scheduler through aggregates.refresh_aggregates).
--
-- Invalidation log + watermark: statement-level triggers on the source tables record which
-- UTC hours a statement touched (one row per distinct hour, not per row); the refresher
-- recomputes exactly those hours, then the local days and months that contain them, from the
-- level below, and records how far it has materialised. Late data of any age is therefore
-- folded into all three levels by the next refresh.

CREATE TABLE agg.meter_consumption_hourly (
    bucket             timestamp with time zone NOT NULL,
    meter_id           text,
    register           text,
    unit               text,
    medium             text,
    account_id         text,
    tariff_id          text,
    consumption        numeric,
    reading_count      bigint,
    interval_count     bigint,
    estimated_count    bigint,
    min_consumption    numeric,
    max_consumption    numeric
);
CREATE INDEX meter_consumption_hourly_bucket ON agg.meter_consumption_hourly (bucket);
CREATE INDEX meter_consumption_hourly_meter_id ON agg.meter_consumption_hourly (meter_id, bucket);

CREATE TABLE agg.meter_consumption_daily (
    bucket             timestamp with time zone NOT NULL,
    meter_id           text,
    register           text,
    unit               text,
    medium             text,
    account_id         text,
    tariff_id          text,
    consumption        numeric,
    reading_count      bigint,
    interval_count     bigint,
    estimated_count    bigint,
    min_consumption    numeric,
    max_consumption    numeric
);
CREATE INDEX meter_consumption_daily_bucket ON agg.meter_consumption_daily (bucket);
CREATE INDEX meter_consumption_daily_meter_id ON agg.meter_consumption_daily (meter_id, bucket);

CREATE TABLE agg.meter_consumption_monthly (
    bucket             timestamp with time zone NOT NULL,
    meter_id           text,
    register           text,
    unit               text,
    medium             text,
    account_id         text,
    tariff_id          text,
    consumption        numeric,
    reading_count      bigint,
    interval_count     bigint,
    estimated_count    bigint,
    min_consumption    numeric,
    max_consumption    numeric
);
CREATE INDEX meter_consumption_monthly_bucket ON agg.meter_consumption_monthly (bucket);
CREATE INDEX meter_consumption_monthly_meter_id ON agg.meter_consumption_monthly (meter_id, bucket);

CREATE TABLE agg.dimension_consumption_hourly (
    bucket             timestamp with time zone NOT NULL,
    medium             text,
    register           text,
    unit               text,
    customer_type      text,
    region             text,
    org_unit           text,
    supply_node        text,
    tariff_id          text,
    consumption        numeric,
    reading_count      bigint,
    interval_count     bigint,
    estimated_count    bigint,
    min_consumption    numeric,
    max_consumption    numeric
);
CREATE INDEX dimension_consumption_hourly_bucket ON agg.dimension_consumption_hourly (bucket);

CREATE TABLE agg.dimension_consumption_daily (
    bucket             timestamp with time zone NOT NULL,
    medium             text,
    register           text,
    unit               text,
    customer_type      text,
    region             text,
    org_unit           text,
    supply_node        text,
    tariff_id          text,
    consumption        numeric,
    reading_count      bigint,
    interval_count     bigint,
    estimated_count    bigint,
    min_consumption    numeric,
    max_consumption    numeric
);
CREATE INDEX dimension_consumption_daily_bucket ON agg.dimension_consumption_daily (bucket);

CREATE TABLE agg.dimension_consumption_monthly (
    bucket             timestamp with time zone NOT NULL,
    medium             text,
    register           text,
    unit               text,
    customer_type      text,
    region             text,
    org_unit           text,
    supply_node        text,
    tariff_id          text,
    consumption        numeric,
    reading_count      bigint,
    interval_count     bigint,
    estimated_count    bigint,
    min_consumption    numeric,
    max_consumption    numeric
);
CREATE INDEX dimension_consumption_monthly_bucket ON agg.dimension_consumption_monthly (bucket);

CREATE TABLE agg.tier_consumption_hourly (
    bucket             timestamp with time zone NOT NULL,
    account_id         text,
    tariff_id          text,
    tier               integer,
    component          text,
    price_period       text,
    volume             numeric,
    amount             numeric,
    segment_count      bigint,
    provisional_count  bigint,
    min_volume         numeric,
    max_volume         numeric
);
CREATE INDEX tier_consumption_hourly_bucket ON agg.tier_consumption_hourly (bucket);
CREATE INDEX tier_consumption_hourly_account_id ON agg.tier_consumption_hourly (account_id, bucket);

CREATE TABLE agg.tier_consumption_daily (
    bucket             timestamp with time zone NOT NULL,
    account_id         text,
    tariff_id          text,
    tier               integer,
    component          text,
    price_period       text,
    volume             numeric,
    amount             numeric,
    segment_count      bigint,
    provisional_count  bigint,
    min_volume         numeric,
    max_volume         numeric
);
CREATE INDEX tier_consumption_daily_bucket ON agg.tier_consumption_daily (bucket);
CREATE INDEX tier_consumption_daily_account_id ON agg.tier_consumption_daily (account_id, bucket);

CREATE TABLE agg.tier_consumption_monthly (
    bucket             timestamp with time zone NOT NULL,
    account_id         text,
    tariff_id          text,
    tier               integer,
    component          text,
    price_period       text,
    volume             numeric,
    amount             numeric,
    segment_count      bigint,
    provisional_count  bigint,
    min_volume         numeric,
    max_volume         numeric
);
CREATE INDEX tier_consumption_monthly_bucket ON agg.tier_consumption_monthly (bucket);
CREATE INDEX tier_consumption_monthly_account_id ON agg.tier_consumption_monthly (account_id, bucket);

-- The zone of the daily and monthly buckets, fixed when the aggregates were created (the
-- TimescaleDB variant writes it into the continuous-aggregate definitions the same way).
CREATE TABLE agg.bucket_zone (
    only_row  boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    timezone  text    NOT NULL
);
INSERT INTO agg.bucket_zone (timezone) VALUES ({{timezone}});

-- UTC hours whose source rows changed since the last refresh (several rows per hour are
-- fine: the refresher reads distinct hours).
CREATE TABLE agg.invalidations (
    source     text        NOT NULL,
    hour       timestamptz NOT NULL,
    logged_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX invalidations_source_hour ON agg.invalidations (source, hour);

-- How far each aggregate relation is materialised, and its last refresh.
CREATE TABLE agg.refresh_state (
    relation          text        PRIMARY KEY,
    watermark         timestamptz,
    last_refresh_at   timestamptz,
    last_buckets      integer,
    last_duration_ms  integer
);

CREATE FUNCTION agg.log_consumption_new() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO agg.invalidations (source, hour)
    SELECT DISTINCT 'consumption', date_trunc('hour', interval_start, 'UTC') FROM new_rows;
    RETURN NULL;
END $$;

CREATE FUNCTION agg.log_consumption_old() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO agg.invalidations (source, hour)
    SELECT DISTINCT 'consumption', date_trunc('hour', interval_start, 'UTC') FROM old_rows;
    RETURN NULL;
END $$;

CREATE FUNCTION agg.log_consumption_update() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO agg.invalidations (source, hour)
    SELECT DISTINCT 'consumption', date_trunc('hour', interval_start, 'UTC')
    FROM (SELECT interval_start FROM new_rows UNION ALL SELECT interval_start FROM old_rows) t;
    RETURN NULL;
END $$;

CREATE TRIGGER consumption_intervals_invalidate_insert
    AFTER INSERT ON data.consumption_intervals REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION agg.log_consumption_new();
CREATE TRIGGER consumption_intervals_invalidate_delete
    AFTER DELETE ON data.consumption_intervals REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION agg.log_consumption_old();
CREATE TRIGGER consumption_intervals_invalidate_update
    AFTER UPDATE ON data.consumption_intervals REFERENCING NEW TABLE AS new_rows
    OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION agg.log_consumption_update();

CREATE FUNCTION agg.log_charges_new() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO agg.invalidations (source, hour)
    SELECT DISTINCT 'charges', date_trunc('hour', accounted_at, 'UTC') FROM new_rows;
    RETURN NULL;
END $$;

CREATE FUNCTION agg.log_charges_old() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO agg.invalidations (source, hour)
    SELECT DISTINCT 'charges', date_trunc('hour', accounted_at, 'UTC') FROM old_rows;
    RETURN NULL;
END $$;

CREATE FUNCTION agg.log_charges_update() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO agg.invalidations (source, hour)
    SELECT DISTINCT 'charges', date_trunc('hour', accounted_at, 'UTC')
    FROM (SELECT accounted_at FROM new_rows UNION ALL SELECT accounted_at FROM old_rows) t;
    RETURN NULL;
END $$;

CREATE TRIGGER charge_segments_invalidate_insert
    AFTER INSERT ON billing.charge_segments REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION agg.log_charges_new();
CREATE TRIGGER charge_segments_invalidate_delete
    AFTER DELETE ON billing.charge_segments REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION agg.log_charges_old();
CREATE TRIGGER charge_segments_invalidate_update
    AFTER UPDATE ON billing.charge_segments REFERENCING NEW TABLE AS new_rows
    OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION agg.log_charges_update();

REVOKE ALL ON FUNCTION agg.log_consumption_new(), agg.log_consumption_old(),
    agg.log_consumption_update(), agg.log_charges_new(), agg.log_charges_old(),
    agg.log_charges_update() FROM PUBLIC;

-- Same readers as on TimescaleDB.
GRANT SELECT ON agg.meter_consumption_hourly, agg.meter_consumption_daily,
    agg.meter_consumption_monthly, agg.dimension_consumption_hourly,
    agg.dimension_consumption_daily, agg.dimension_consumption_monthly,
    agg.tier_consumption_hourly, agg.tier_consumption_daily, agg.tier_consumption_monthly
    TO {{role.api}}, {{role.billing}}, {{role.pipeline}};
GRANT SELECT ON agg.dimension_consumption_hourly, agg.dimension_consumption_daily,
    agg.dimension_consumption_monthly TO {{role.analyst}};
GRANT SELECT ON agg.refresh_state, agg.bucket_zone, agg.invalidations TO {{role.api}},
    {{role.billing}};
