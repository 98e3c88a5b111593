-- Fewer indexes on the continuous aggregates: TimescaleDB gave each relation one index per
-- GROUP BY column (seven on agg.meter_consumption_hourly), each paid for on every refresh.
-- Kept: the bucket index, and (meter_id, bucket) / (account_id, bucket) where the billing
-- system and the API look rows up by meter or account. Measured on one day of a fleet at
-- hourly resolution, the hourly refresh spent most of its time maintaining the others.
DO $$
DECLARE r record;
BEGIN
    FOR r IN
        SELECT format('%I.%I', ns.nspname, ic.relname) AS index_name
        FROM timescaledb_information.continuous_aggregates c
        JOIN pg_namespace tn ON tn.nspname = c.materialization_hypertable_schema
        JOIN pg_class t ON t.relname = c.materialization_hypertable_name
            AND t.relnamespace = tn.oid
        JOIN pg_index x ON x.indrelid = t.oid
        JOIN pg_class ic ON ic.oid = x.indexrelid
        JOIN pg_namespace ns ON ns.oid = ic.relnamespace
        JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = x.indkey[0]
        WHERE c.view_schema = 'agg' AND x.indnatts = 2
          AND NOT (a.attname = 'meter_id' AND c.view_name LIKE 'meter\_consumption\_%')
          AND NOT (a.attname = 'account_id'
                   AND (c.view_name LIKE 'meter\_consumption\_%'
                        OR c.view_name LIKE 'tier\_consumption\_%'))
    LOOP
        EXECUTE 'DROP INDEX ' || r.index_name;
    END LOOP;
END $$;
