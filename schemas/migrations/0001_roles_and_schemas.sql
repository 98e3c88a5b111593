-- unimeter: as-admin
-- Roles and schemas of DESIGN.md §4, least privilege.
--
-- Roles are NOLOGIN groups: a deployment grants them to its login users (one per process);
-- locally the configured login acts as them through `-c role=...` at connect time.
--   owner     owns every object; migrations only
--   ingest    appends raw data (frames, raw readings, device events); never updates or deletes
--   pipeline  writes derived data (validated readings, edits, charges, balances, alerts)
--   sink      the storage writer: member of ingest and pipeline
--   api       the control plane: ledger, commands, operations; reads data
--   billing   the utility's billing system: reads charges and aggregates, writes sync tables
--   analyst   read-only, no personal data
DO $$
DECLARE r text;
BEGIN
    FOREACH r IN ARRAY ARRAY[{{role_name.owner}}, {{role_name.ingest}}, {{role_name.pipeline}},
                            {{role_name.sink}}, {{role_name.api}}, {{role_name.billing}},
                            {{role_name.analyst}}]
    LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('CREATE ROLE %I NOLOGIN', r);
        END IF;
        -- The migrating login must be able to act as every role.
        IF NOT pg_has_role(current_user, r, 'MEMBER') THEN
            EXECUTE format('GRANT %I TO %I', r, current_user);
        END IF;
    END LOOP;
END $$;

GRANT {{role.ingest}}, {{role.pipeline}} TO {{role.sink}};

DO $$
BEGIN
    EXECUTE format('GRANT CREATE, CONNECT, TEMPORARY ON DATABASE %I TO %I',
                   current_database(), {{role_name.owner}});
    EXECUTE format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO %I, %I, %I, %I, %I, %I',
                   current_database(), {{role_name.ingest}}, {{role_name.pipeline}},
                   {{role_name.sink}}, {{role_name.api}}, {{role_name.billing}},
                   {{role_name.analyst}});
END $$;

-- ledger: devices, customers, accounts, topology (control plane)
-- data:   raw and validated readings, device events (time series)
-- billing: charges, balances, settlements, transactions
-- ops:    commands, alerts, audit, sessions, imports
-- agg:    hourly/daily/monthly aggregates
-- analyst: views without personal data
CREATE SCHEMA IF NOT EXISTS ledger AUTHORIZATION {{role.owner}};
CREATE SCHEMA IF NOT EXISTS data AUTHORIZATION {{role.owner}};
CREATE SCHEMA IF NOT EXISTS billing AUTHORIZATION {{role.owner}};
CREATE SCHEMA IF NOT EXISTS ops AUTHORIZATION {{role.owner}};
CREATE SCHEMA IF NOT EXISTS agg AUTHORIZATION {{role.owner}};
CREATE SCHEMA IF NOT EXISTS analyst AUTHORIZATION {{role.owner}};

GRANT USAGE ON SCHEMA unimeter_meta TO {{role.owner}}, {{role.ingest}}, {{role.pipeline}},
    {{role.api}}, {{role.billing}}, {{role.analyst}};
GRANT SELECT ON unimeter_meta.settings TO {{role.owner}}, {{role.ingest}}, {{role.pipeline}},
    {{role.api}}, {{role.billing}}, {{role.analyst}};

GRANT USAGE ON SCHEMA data TO {{role.ingest}}, {{role.pipeline}}, {{role.api}},
    {{role.analyst}};
GRANT USAGE ON SCHEMA ledger TO {{role.pipeline}}, {{role.api}}, {{role.billing}};
GRANT USAGE ON SCHEMA billing TO {{role.pipeline}}, {{role.api}}, {{role.billing}};
GRANT USAGE ON SCHEMA ops TO {{role.ingest}}, {{role.pipeline}}, {{role.api}},
    {{role.billing}};
GRANT USAGE ON SCHEMA agg TO {{role.pipeline}}, {{role.api}}, {{role.billing}},
    {{role.analyst}};
GRANT USAGE ON SCHEMA analyst TO {{role.analyst}}, {{role.api}};
