-- History and outbox per statement instead of per row (bench/ledger.py: bulk loads spent most
-- of their time in per-row trigger calls, to_jsonb of wide rows and one NOTIFY per outbox
-- insert). Same rows in ledger.history and ledger.outbox as before, written with one
-- INSERT ... SELECT over the statement's transition tables.

-- ----------------------------------------------------------------- functions

-- ledger.history_rows(key column, ...): AFTER ... FOR EACH STATEMENT with transition tables
-- new_rows / old_rows. An update records only the changed columns, and only for rows whose
-- row_version moved (a real change).
CREATE FUNCTION ledger.history_rows() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    key_expr text := '';
    join_cond text := '';
    strip constant text := ' - ''updated_at'' - ''row_version'' - ''created_at''';
    who constant text := COALESCE(NULLIF(current_setting('unimeter.actor', true), ''),
                                  session_user);
    why constant text := COALESCE(current_setting('unimeter.reason', true), '');
BEGIN
    FOR i IN 0 .. TG_NARGS - 1 LOOP
        key_expr := key_expr || CASE WHEN i = 0 THEN '' ELSE ' || '':'' || ' END
                    || format('r.%I::text', TG_ARGV[i]);
        join_cond := join_cond || CASE WHEN i = 0 THEN '' ELSE ' AND ' END
                     || format('o.%I = r.%I', TG_ARGV[i], TG_ARGV[i]);
    END LOOP;
    IF TG_OP = 'INSERT' THEN
        EXECUTE format(
            'INSERT INTO ledger.history (entity, entity_id, op, row_version, actor, reason, '
            'before, after) SELECT %L, %s, ''insert'', r.row_version, $1, $2, NULL, '
            'to_jsonb(r)%s FROM new_rows r', TG_TABLE_NAME, key_expr, strip)
        USING who, why;
    ELSIF TG_OP = 'DELETE' THEN
        EXECUTE format(
            'INSERT INTO ledger.history (entity, entity_id, op, row_version, actor, reason, '
            'before, after) SELECT %L, %s, ''delete'', r.row_version, $1, $2, '
            'to_jsonb(r)%s, NULL FROM old_rows r', TG_TABLE_NAME, key_expr, strip)
        USING who, why;
    ELSE
        -- The CTE is materialised so each row's documents are built once, not once per key.
        EXECUTE format(
            'WITH d AS MATERIALIZED ('
            '  SELECT %s AS entity_id, r.row_version AS rv, to_jsonb(r)%s AS nd, '
            '         to_jsonb(o)%s AS od '
            '    FROM new_rows r JOIN old_rows o ON %s '
            '   WHERE r.row_version IS DISTINCT FROM o.row_version) '
            'INSERT INTO ledger.history (entity, entity_id, op, row_version, actor, reason, '
            'before, after) '
            'SELECT %L, d.entity_id, ''update'', d.rv, $1, $2, '
            '  (SELECT jsonb_object_agg(e.key, e.value) FROM jsonb_each(d.od) e '
            '    WHERE d.nd -> e.key IS DISTINCT FROM e.value), '
            '  (SELECT jsonb_object_agg(e.key, e.value) FROM jsonb_each(d.nd) e '
            '    WHERE d.od -> e.key IS DISTINCT FROM e.value) '
            '  FROM d',
            key_expr, strip, strip, join_cond, TG_TABLE_NAME)
        USING who, why;
    END IF;
    RETURN NULL;
END $$;
-- Transition tables have no statistics: keep the planner from JIT-compiling tiny queries.
ALTER FUNCTION ledger.history_rows() SET jit = off;

-- ledger.outbox_rows(topic, entity, 'key1[,key2]', 'col1[,col2]'): AFTER ... FOR EACH
-- STATEMENT; on UPDATE a row is queued only when one of the listed columns changed
-- (default row_version: any real change).
CREATE FUNCTION ledger.outbox_rows() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    keys text[] := string_to_array(TG_ARGV[2], ',');
    watched text[] := string_to_array(COALESCE(NULLIF(TG_ARGV[3], ''), 'row_version'), ',');
    key_expr text := '';
    join_cond text := '';
    changed text := '';
    n bigint;
BEGIN
    FOR i IN 1 .. cardinality(keys) LOOP
        key_expr := key_expr || CASE WHEN i = 1 THEN '' ELSE ' || '':'' || ' END
                    || format('r.%I::text', keys[i]);
        join_cond := join_cond || CASE WHEN i = 1 THEN '' ELSE ' AND ' END
                     || format('o.%I = r.%I', keys[i], keys[i]);
    END LOOP;
    FOR i IN 1 .. cardinality(watched) LOOP
        changed := changed || CASE WHEN i = 1 THEN '' ELSE ' OR ' END
                   || format('r.%I IS DISTINCT FROM o.%I', watched[i], watched[i]);
    END LOOP;
    IF TG_OP = 'INSERT' THEN
        EXECUTE format('INSERT INTO ledger.outbox (topic, entity, entity_id) '
                       'SELECT %L, %L, %s FROM new_rows r', TG_ARGV[0], TG_ARGV[1], key_expr);
    ELSIF TG_OP = 'DELETE' THEN
        EXECUTE format('INSERT INTO ledger.outbox (topic, entity, entity_id) '
                       'SELECT %L, %L, %s FROM old_rows r', TG_ARGV[0], TG_ARGV[1], key_expr);
    ELSE
        EXECUTE format('INSERT INTO ledger.outbox (topic, entity, entity_id) '
                       'SELECT %L, %L, %s FROM new_rows r JOIN old_rows o ON %s WHERE %s',
                       TG_ARGV[0], TG_ARGV[1], key_expr, join_cond, changed);
    END IF;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n > 0 THEN
        PERFORM pg_notify('ledger_outbox', '');
    END IF;
    RETURN NULL;
END $$;

ALTER FUNCTION ledger.outbox_rows() SET jit = off;

-- The row-level enqueue (still used by ledger.sync_topups) notifies by itself.
CREATE OR REPLACE FUNCTION ledger.enqueue() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    doc jsonb;
    entity_key text := '';
BEGIN
    doc := CASE WHEN TG_OP = 'DELETE' THEN to_jsonb(OLD) ELSE to_jsonb(NEW) END;
    FOR i IN 2 .. TG_NARGS - 1 LOOP
        entity_key := entity_key || CASE WHEN i = 2 THEN '' ELSE ':' END
                      || (doc ->> TG_ARGV[i]);
    END LOOP;
    INSERT INTO ledger.outbox (topic, entity, entity_id)
    VALUES (TG_ARGV[0], TG_ARGV[1], entity_key);
    PERFORM pg_notify('ledger_outbox', '');
    RETURN NULL;
END $$;

DROP TRIGGER notify ON ledger.outbox;

-- ----------------------------------------------------------------- history triggers

DO $$
DECLARE
    spec text[];
    args text;
BEGIN
    FOREACH spec SLICE 1 IN ARRAY ARRAY[
        ARRAY['org_units', 'org_unit_id', ''],
        ARRAY['locations', 'location_id', ''],
        ARRAY['supply_nodes', 'supply_node_id', ''],
        ARRAY['service_points', 'service_point_id', ''],
        ARRAY['fep_assignments', 'service_point_id', 'fep_id'],
        ARRAY['manufacturers', 'manufacturer_id', ''],
        ARRAY['vee_groups', 'vee_group_id', ''],
        ARRAY['device_types', 'device_type', ''],
        ARRAY['devices', 'device_id', ''],
        ARRAY['customers', 'customer_id', ''],
        ARRAY['tariffs', 'tariff_id', ''],
        ARRAY['tariff_versions', 'tariff_id', 'version'],
        ARRAY['accounts', 'account_id', ''],
        ARRAY['meters', 'meter_id', ''],
        ARRAY['collection_plans', 'plan_id', '']
    ] LOOP
        args := CASE WHEN spec[3] = '' THEN quote_literal(spec[2])
                     ELSE quote_literal(spec[2]) || ', ' || quote_literal(spec[3]) END;
        EXECUTE format('DROP TRIGGER y_history ON ledger.%I', spec[1]);
        EXECUTE format('CREATE TRIGGER y_history_i AFTER INSERT ON ledger.%I '
                       'REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT '
                       'EXECUTE FUNCTION ledger.history_rows(%s)', spec[1], args);
        EXECUTE format('CREATE TRIGGER y_history_u AFTER UPDATE ON ledger.%I '
                       'REFERENCING NEW TABLE AS new_rows OLD TABLE AS old_rows '
                       'FOR EACH STATEMENT EXECUTE FUNCTION ledger.history_rows(%s)',
                       spec[1], args);
        EXECUTE format('CREATE TRIGGER y_history_d AFTER DELETE ON ledger.%I '
                       'REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT '
                       'EXECUTE FUNCTION ledger.history_rows(%s)', spec[1], args);
    END LOOP;
END $$;

-- ----------------------------------------------------------------- outbox triggers

DROP TRIGGER x_outbox ON ledger.meters;
DROP TRIGGER x_outbox_u ON ledger.meters;
DROP TRIGGER x_outbox ON ledger.devices;
DROP TRIGGER x_outbox_u ON ledger.devices;
DROP TRIGGER x_outbox_u ON ledger.device_types;
DROP TRIGGER x_outbox_u ON ledger.meter_sizes;
DROP TRIGGER x_outbox ON ledger.accounts;
DROP TRIGGER x_outbox_u ON ledger.accounts;
DROP TRIGGER x_outbox_m ON ledger.accounts;
DROP TRIGGER x_outbox_u ON ledger.customers;
DROP TRIGGER x_outbox_m ON ledger.customers;
DROP TRIGGER x_outbox_u ON ledger.locations;
DROP TRIGGER x_outbox_a ON ledger.locations;
DROP TRIGGER x_outbox ON ledger.tariff_versions;
DROP TRIGGER x_outbox_u ON ledger.tariff_versions;
DROP TRIGGER x_outbox_u ON ledger.tariffs;
DROP TRIGGER x_outbox ON ledger.vee_groups;
DROP TRIGGER x_outbox_u ON ledger.vee_groups;

DO $$
DECLARE
    spec text[];
    args text;
BEGIN
    -- table, events (i/u/d), topic, entity, key columns, watched columns on update
    FOREACH spec SLICE 1 IN ARRAY ARRAY[
        ARRAY['meters', 'iud', 'ledger.meters', 'meter', 'meter_id', ''],
        ARRAY['devices', 'iud', 'ledger.meters', 'device', 'device_id', ''],
        ARRAY['device_types', 'u', 'ledger.meters', 'device_type', 'device_type', ''],
        ARRAY['meter_sizes', 'u', 'ledger.meters', 'meter_size', 'size', 'qmax'],
        ARRAY['accounts', 'iud', 'ledger.accounts', 'account', 'account_id', ''],
        ARRAY['accounts', 'u', 'ledger.meters', 'account', 'account_id', ''],
        ARRAY['customers', 'u', 'ledger.accounts', 'customer', 'customer_id', 'customer_type'],
        ARRAY['customers', 'u', 'ledger.meters', 'customer', 'customer_id', 'customer_type'],
        ARRAY['locations', 'u', 'ledger.meters', 'location', 'location_id', 'path,org_unit_id'],
        ARRAY['locations', 'u', 'ledger.accounts', 'location', 'location_id', 'path'],
        ARRAY['tariff_versions', 'iud', 'ledger.tariffs', 'tariff_version', 'tariff_id,version',
              ''],
        ARRAY['tariffs', 'u', 'ledger.tariffs', 'tariff', 'tariff_id', ''],
        ARRAY['vee_groups', 'iud', 'ledger.vee_groups', 'vee_group', 'vee_group_id', '']
    ] LOOP
        args := format('%L, %L, %L, %L', spec[3], spec[4], spec[5], spec[6]);
        IF position('i' IN spec[2]) > 0 THEN
            EXECUTE format('CREATE TRIGGER %I AFTER INSERT ON ledger.%I '
                           'REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT '
                           'EXECUTE FUNCTION ledger.outbox_rows(%s)',
                           'x_outbox_i_' || replace(spec[3], 'ledger.', ''), spec[1], args);
        END IF;
        IF position('u' IN spec[2]) > 0 THEN
            EXECUTE format('CREATE TRIGGER %I AFTER UPDATE ON ledger.%I '
                           'REFERENCING NEW TABLE AS new_rows OLD TABLE AS old_rows '
                           'FOR EACH STATEMENT EXECUTE FUNCTION ledger.outbox_rows(%s)',
                           'x_outbox_u_' || replace(spec[3], 'ledger.', ''), spec[1], args);
        END IF;
        IF position('d' IN spec[2]) > 0 THEN
            EXECUTE format('CREATE TRIGGER %I AFTER DELETE ON ledger.%I '
                           'REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT '
                           'EXECUTE FUNCTION ledger.outbox_rows(%s)',
                           'x_outbox_d_' || replace(spec[3], 'ledger.', ''), spec[1], args);
        END IF;
    END LOOP;
END $$;
