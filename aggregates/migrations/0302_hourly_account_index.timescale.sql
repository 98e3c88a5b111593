-- The per-meter hourly level is as large as its source (one row per meter and hour); looking
-- it up by account is rare (billing reads days and months), so its account index is not
-- worth maintaining on every refresh. Days and months keep theirs.
--
-- A refresh policy job may hold locks on these tables when this runs: a lost deadlock or
-- lock wait rolls the migration back and the runner runs it again.
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
        WHERE c.view_schema = 'agg' AND c.view_name = 'meter_consumption_hourly'
          AND a.attname = 'account_id'
    LOOP
        EXECUTE 'DROP INDEX ' || r.index_name;
    END LOOP;
END $$;
