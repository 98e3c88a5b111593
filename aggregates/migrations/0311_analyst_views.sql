-- The analyst's view set (role analyst): everything an analyst needs to study consumption,
-- data quality and the network, without personal data. Left out on purpose: account and
-- customer ids (pseudonymous ids of people), who edited a value and their notes, peer
-- addresses and free-form attributes (IP addresses, balances in alert texts), and alert texts
-- about accounts. Meters, devices and network nodes stay: they are assets, not people.

CREATE VIEW analyst.meter_consumption_hourly AS
SELECT bucket, meter_id, register, unit, medium, tariff_id, consumption, reading_count,
       interval_count, estimated_count, min_consumption, max_consumption
FROM agg.meter_consumption_hourly;

CREATE VIEW analyst.meter_consumption_daily AS
SELECT bucket, meter_id, register, unit, medium, tariff_id, consumption, reading_count,
       interval_count, estimated_count, min_consumption, max_consumption
FROM agg.meter_consumption_daily;

CREATE VIEW analyst.meter_consumption_monthly AS
SELECT bucket, meter_id, register, unit, medium, tariff_id, consumption, reading_count,
       interval_count, estimated_count, min_consumption, max_consumption
FROM agg.meter_consumption_monthly;

CREATE VIEW analyst.dimension_consumption_hourly AS
SELECT * FROM agg.dimension_consumption_hourly;
CREATE VIEW analyst.dimension_consumption_daily AS
SELECT * FROM agg.dimension_consumption_daily;
CREATE VIEW analyst.dimension_consumption_monthly AS
SELECT * FROM agg.dimension_consumption_monthly;

-- Tier aggregates summed over accounts.
CREATE VIEW analyst.tier_consumption_daily AS
SELECT bucket, tariff_id, tier, component, price_period,
       count(DISTINCT account_id) AS account_count, sum(volume) AS volume,
       sum(amount) AS amount, sum(segment_count)::bigint AS segment_count,
       sum(provisional_count)::bigint AS provisional_count
FROM agg.tier_consumption_daily
GROUP BY bucket, tariff_id, tier, component, price_period;

CREATE VIEW analyst.tier_consumption_monthly AS
SELECT bucket, tariff_id, tier, component, price_period,
       count(DISTINCT account_id) AS account_count, sum(volume) AS volume,
       sum(amount) AS amount, sum(segment_count)::bigint AS segment_count,
       sum(provisional_count)::bigint AS provisional_count
FROM agg.tier_consumption_monthly
GROUP BY bucket, tariff_id, tier, component, price_period;

-- The current version of each validated reading, with its quality and network attribution.
CREATE VIEW analyst.validated_readings AS
SELECT meter_id, register, ts, version, value, unit, quality, method, flags, kind, consumption,
       interval_start, original_value IS NOT NULL AS value_replaced, customer_type, region,
       org_unit, supply_node, tariff_id, medium, source
FROM data.validated_readings_current;

CREATE VIEW analyst.device_events AS
SELECT event_id, device_id, meter_id, kind, severity, ts, fep
FROM data.device_events;

CREATE VIEW analyst.alerts AS
SELECT alert_id, state, object_type,
       CASE WHEN object_type IN ('account', 'customer') THEN NULL ELSE object_id END
           AS object_id,
       severity, code,
       CASE WHEN object_type IN ('account', 'customer') THEN NULL ELSE reason END AS reason,
       ts, source
FROM ops.alerts;

CREATE VIEW analyst.reading_edits AS
SELECT meter_id, register, ts, version, edited_at, reason_code, method, quality
FROM data.reading_edits;

GRANT SELECT ON analyst.meter_consumption_hourly, analyst.meter_consumption_daily,
    analyst.meter_consumption_monthly, analyst.dimension_consumption_hourly,
    analyst.dimension_consumption_daily, analyst.dimension_consumption_monthly,
    analyst.tier_consumption_daily, analyst.tier_consumption_monthly,
    analyst.validated_readings, analyst.device_events, analyst.alerts, analyst.reading_edits
    TO {{role.analyst}}, {{role.api}};
