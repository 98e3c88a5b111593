-- Ledger: touch/history/outbox triggers, the denormalised views the stream and the control
-- plane read, the analyst views without personal data, and the grants.

-- ----------------------------------------------------------------- touch + history

DO $$
DECLARE
    spec text[];
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
        EXECUTE format('CREATE TRIGGER z_touch BEFORE INSERT OR UPDATE ON ledger.%I '
                       'FOR EACH ROW EXECUTE FUNCTION ledger.touch()', spec[1]);
        IF spec[3] = '' THEN
            EXECUTE format('CREATE TRIGGER y_history AFTER INSERT OR UPDATE OR DELETE '
                           'ON ledger.%I FOR EACH ROW EXECUTE FUNCTION '
                           'ledger.record_history(%L)', spec[1], spec[2]);
        ELSE
            EXECUTE format('CREATE TRIGGER y_history AFTER INSERT OR UPDATE OR DELETE '
                           'ON ledger.%I FOR EACH ROW EXECUTE FUNCTION '
                           'ledger.record_history(%L, %L)', spec[1], spec[2], spec[3]);
        END IF;
    END LOOP;
END $$;

-- ----------------------------------------------------------------- outbox
-- Each trigger names the topic, the entity kind the publisher expands, and the key columns.
-- Updates enqueue only on a real change (row_version moved); what a change affects:
--   meter, device (+ its collection subtree), device type, account, customer type, location
--   (path or governing org unit) -> ledger.meters; account, customer, location ->
--   ledger.accounts; tariff, tariff version -> ledger.tariffs; VEE group -> ledger.vee_groups.

CREATE TRIGGER x_outbox AFTER INSERT OR DELETE ON ledger.meters
    FOR EACH ROW EXECUTE FUNCTION ledger.enqueue('ledger.meters', 'meter', 'meter_id');
CREATE TRIGGER x_outbox_u AFTER UPDATE ON ledger.meters
    FOR EACH ROW WHEN (OLD.row_version IS DISTINCT FROM NEW.row_version)
    EXECUTE FUNCTION ledger.enqueue('ledger.meters', 'meter', 'meter_id');

CREATE TRIGGER x_outbox AFTER INSERT OR DELETE ON ledger.devices
    FOR EACH ROW EXECUTE FUNCTION ledger.enqueue('ledger.meters', 'device', 'device_id');
CREATE TRIGGER x_outbox_u AFTER UPDATE ON ledger.devices
    FOR EACH ROW WHEN (OLD.row_version IS DISTINCT FROM NEW.row_version)
    EXECUTE FUNCTION ledger.enqueue('ledger.meters', 'device', 'device_id');

CREATE TRIGGER x_outbox_u AFTER UPDATE ON ledger.device_types
    FOR EACH ROW WHEN (OLD.row_version IS DISTINCT FROM NEW.row_version)
    EXECUTE FUNCTION ledger.enqueue('ledger.meters', 'device_type', 'device_type');

CREATE TRIGGER x_outbox_u AFTER UPDATE ON ledger.meter_sizes
    FOR EACH ROW WHEN (OLD.qmax IS DISTINCT FROM NEW.qmax)
    EXECUTE FUNCTION ledger.enqueue('ledger.meters', 'meter_size', 'size');

CREATE TRIGGER x_outbox AFTER INSERT OR DELETE ON ledger.accounts
    FOR EACH ROW EXECUTE FUNCTION ledger.enqueue('ledger.accounts', 'account', 'account_id');
CREATE TRIGGER x_outbox_u AFTER UPDATE ON ledger.accounts
    FOR EACH ROW WHEN (OLD.row_version IS DISTINCT FROM NEW.row_version)
    EXECUTE FUNCTION ledger.enqueue('ledger.accounts', 'account', 'account_id');
CREATE TRIGGER x_outbox_m AFTER UPDATE ON ledger.accounts
    FOR EACH ROW WHEN (OLD.row_version IS DISTINCT FROM NEW.row_version)
    EXECUTE FUNCTION ledger.enqueue('ledger.meters', 'account', 'account_id');

CREATE TRIGGER x_outbox_u AFTER UPDATE ON ledger.customers
    FOR EACH ROW WHEN (OLD.customer_type IS DISTINCT FROM NEW.customer_type)
    EXECUTE FUNCTION ledger.enqueue('ledger.accounts', 'customer', 'customer_id');
CREATE TRIGGER x_outbox_m AFTER UPDATE ON ledger.customers
    FOR EACH ROW WHEN (OLD.customer_type IS DISTINCT FROM NEW.customer_type)
    EXECUTE FUNCTION ledger.enqueue('ledger.meters', 'customer', 'customer_id');

CREATE TRIGGER x_outbox_u AFTER UPDATE ON ledger.locations
    FOR EACH ROW WHEN (OLD.path IS DISTINCT FROM NEW.path
                       OR OLD.org_unit_id IS DISTINCT FROM NEW.org_unit_id)
    EXECUTE FUNCTION ledger.enqueue('ledger.meters', 'location', 'location_id');
CREATE TRIGGER x_outbox_a AFTER UPDATE ON ledger.locations
    FOR EACH ROW WHEN (OLD.path IS DISTINCT FROM NEW.path)
    EXECUTE FUNCTION ledger.enqueue('ledger.accounts', 'location', 'location_id');

CREATE TRIGGER x_outbox AFTER INSERT OR DELETE ON ledger.tariff_versions
    FOR EACH ROW EXECUTE FUNCTION
    ledger.enqueue('ledger.tariffs', 'tariff_version', 'tariff_id', 'version');
CREATE TRIGGER x_outbox_u AFTER UPDATE ON ledger.tariff_versions
    FOR EACH ROW WHEN (OLD.row_version IS DISTINCT FROM NEW.row_version)
    EXECUTE FUNCTION ledger.enqueue('ledger.tariffs', 'tariff_version', 'tariff_id', 'version');
CREATE TRIGGER x_outbox_u AFTER UPDATE ON ledger.tariffs
    FOR EACH ROW WHEN (OLD.row_version IS DISTINCT FROM NEW.row_version)
    EXECUTE FUNCTION ledger.enqueue('ledger.tariffs', 'tariff', 'tariff_id');

CREATE TRIGGER x_outbox AFTER INSERT OR DELETE ON ledger.vee_groups
    FOR EACH ROW EXECUTE FUNCTION ledger.enqueue('ledger.vee_groups', 'vee_group',
                                                 'vee_group_id');
CREATE TRIGGER x_outbox_u AFTER UPDATE ON ledger.vee_groups
    FOR EACH ROW WHEN (OLD.row_version IS DISTINCT FROM NEW.row_version)
    EXECUTE FUNCTION ledger.enqueue('ledger.vee_groups', 'vee_group', 'vee_group_id');

-- ----------------------------------------------------------------- views

-- Every device with what the control plane needs to address, route and authorise it: its
-- command handler, the link and service point it is reached through (its own or the nearest
-- ancestor's), its effective location (its own, else its account's premises) with region and
-- governing org unit, and for meters the account and its protection.
CREATE VIEW ledger.device_context AS
SELECT d.device_id,
       d.kind,
       d.device_type,
       dt.manufacturer_id,
       dt.model,
       dt.protocol,
       dt.protocol_variant,
       dt.frame_template,
       dt.report_template,
       dt.command_handler,
       dt.command_variant,
       dt.transport,
       dt.wake_mode,
       COALESCE(m.has_valve, dt.has_valve) AS has_valve,
       dt.valve_arm_supported,
       dt.read_back,
       d.status,
       d.address,
       d.serial_no,
       d.parent_device_id,
       d.point_no,
       d.path,
       lk.link_id,
       lk.device_id AS link_device_id,
       sp.service_point_id,
       COALESCE(d.location_id, a.location_id) AS location_id,
       loc.path[1] AS region_id,
       gov.org_unit_id,
       COALESCE(m.medium, dt.medium) AS medium,
       m.account_id,
       a.customer_id,
       COALESCE(a.protected, false) AS protected,
       d.parameters,
       d.installed_at,
       d.activated_at,
       d.removed_at,
       d.updated_at
  FROM ledger.devices d
  JOIN ledger.device_types dt ON dt.device_type = d.device_type
  LEFT JOIN ledger.meters m ON m.meter_id = d.device_id
  LEFT JOIN ledger.accounts a ON a.account_id = m.account_id
  LEFT JOIN ledger.locations loc ON loc.location_id = COALESCE(d.location_id, a.location_id)
  LEFT JOIN LATERAL (
        SELECT x.link_id, x.device_id FROM ledger.devices x
         WHERE x.device_id = ANY (d.path) AND x.link_id IS NOT NULL
         ORDER BY cardinality(x.path) DESC LIMIT 1) lk ON true
  LEFT JOIN LATERAL (
        SELECT x.service_point_id FROM ledger.devices x
         WHERE x.device_id = ANY (d.path) AND x.service_point_id IS NOT NULL
         ORDER BY cardinality(x.path) DESC LIMIT 1) sp ON true
  LEFT JOIN LATERAL (
        SELECT g.org_unit_id FROM ledger.locations g
         WHERE g.location_id = ANY (loc.path) AND g.org_unit_id IS NOT NULL
         ORDER BY cardinality(g.path) DESC LIMIT 1) gov ON true;
COMMENT ON VIEW ledger.device_context IS
    'Every device with handler, effective link/service point, location, region, org unit, '
    'account and protection: what dispatch, safety and authorisation need in one row.';

-- A meter exactly as schemas.messages.LedgerMeter carries it (the dimensions of DESIGN.md §4).
CREATE VIEW ledger.meter_dimensions AS
SELECT m.meter_id,
       c.status,
       m.medium,
       GREATEST(c.updated_at, m.updated_at, a.updated_at, cu.updated_at) AS updated_at,
       c.address,
       c.device_type,
       c.protocol,
       c.manufacturer_id AS manufacturer,
       m.size,
       COALESCE(m.qmax, s.qmax) AS qmax,
       m.register_digits,
       m.register_decimals,
       m.unit,
       c.has_valve,
       c.link_id,
       c.service_point_id AS service_point,
       m.account_id,
       cu.customer_type,
       c.region_id AS region,
       c.org_unit_id AS org_unit,
       m.supply_node_id AS supply_node,
       COALESCE(m.tariff_id, a.tariff_id) AS tariff_id,
       COALESCE(m.vee_group_id, dt.default_vee_group_id) AS vee_group,
       c.installed_at,
       c.removed_at,
       c.location_id,
       c.path AS device_path
  FROM ledger.meters m
  JOIN ledger.device_context c ON c.device_id = m.meter_id
  JOIN ledger.device_types dt ON dt.device_type = c.device_type
  LEFT JOIN ledger.meter_sizes s ON s.size = m.size
  LEFT JOIN ledger.accounts a ON a.account_id = m.account_id
  LEFT JOIN ledger.customers cu ON cu.customer_id = a.customer_id;
COMMENT ON VIEW ledger.meter_dimensions IS
    'One row per meter with the fields of LedgerMeter (no personal data).';

-- An account as schemas.messages.LedgerAccount carries it (no personal data).
CREATE VIEW ledger.account_dimensions AS
SELECT a.account_id,
       cu.customer_type,
       a.billing_mode,
       GREATEST(a.updated_at, cu.updated_at) AS updated_at,
       a.customer_id,
       a.tariff_id,
       a.status,
       a.protected,
       a.alarm1,
       a.alarm2,
       a.overdraft_limit,
       a.max_balance,
       a.reconnect_limit,
       a.tier_override,
       COALESCE(loc.path[1], (
           SELECT c.region_id FROM ledger.meters m
             JOIN ledger.device_context c ON c.device_id = m.meter_id
            WHERE m.account_id = a.account_id AND c.region_id IS NOT NULL
            ORDER BY m.meter_id LIMIT 1)) AS region,
       a.location_id
  FROM ledger.accounts a
  JOIN ledger.customers cu ON cu.customer_id = a.customer_id
  LEFT JOIN ledger.locations loc ON loc.location_id = a.location_id;
COMMENT ON VIEW ledger.account_dimensions IS
    'One row per account with the fields of LedgerAccount (no personal data).';

-- The devices each collection plan reads now (installed or active ones only).
CREATE VIEW ledger.collection_plan_devices AS
SELECT p.plan_id,
       p.command,
       p.registers,
       p.params,
       p.interval_s,
       p.schedule,
       p.window_start,
       p.window_end,
       p.priority,
       p.retries,
       c.device_id,
       c.kind,
       c.device_type,
       c.protocol,
       c.address,
       c.point_no,
       c.link_id,
       c.link_device_id,
       c.service_point_id,
       c.wake_mode
  FROM ledger.collection_plans p
  JOIN ledger.device_context c ON c.status IN ('installed', 'active')
 WHERE p.enabled
   AND EXISTS (
        SELECT 1 FROM ledger.collection_plan_targets t
          LEFT JOIN ledger.locations tl
                 ON t.target_kind = 'location' AND tl.location_id = c.location_id
         WHERE t.plan_id = p.plan_id
           AND (t.target_kind = 'all'
                OR (t.target_kind = 'device' AND t.target_id = c.device_id)
                OR (t.target_kind = 'subtree' AND t.target_id = ANY (c.path))
                OR (t.target_kind = 'location' AND t.target_id = ANY (tl.path))
                OR (t.target_kind = 'device_type' AND t.target_id = c.device_type)
                OR (t.target_kind = 'service_point' AND t.target_id = c.service_point_id)
                OR (t.target_kind = 'account' AND t.target_id = c.account_id)));
COMMENT ON VIEW ledger.collection_plan_devices IS
    'Collection plans resolved to the installed/active devices they read, with protocol, '
    'address, link and service point: what an FEP needs to run them.';

-- ----------------------------------------------------------------- analyst views (no personal data)

CREATE VIEW analyst.meters AS
SELECT meter_id, status, medium, device_type, protocol, manufacturer, size, qmax,
       register_digits, register_decimals, unit, has_valve, account_id, customer_type, region,
       org_unit, supply_node, tariff_id, vee_group, installed_at, removed_at
  FROM ledger.meter_dimensions;

CREATE VIEW analyst.accounts AS
SELECT account_id, customer_type, billing_mode, tariff_id, status, region, updated_at
  FROM ledger.account_dimensions;

CREATE VIEW analyst.locations AS
SELECT location_id, kind, parent_id, name, latitude, longitude, org_unit_id, path
  FROM ledger.locations
 WHERE kind <> 'unit';

CREATE VIEW analyst.org_units AS
SELECT org_unit_id, parent_id, kind, name FROM ledger.org_units;

CREATE VIEW analyst.supply_nodes AS
SELECT supply_node_id, kind, parent_id, name, medium, pressure_level, latitude, longitude
  FROM ledger.supply_nodes;

CREATE VIEW analyst.devices AS
SELECT device_id, kind, device_type, manufacturer_id, protocol, status, parent_device_id, path,
       link_id, service_point_id, region_id, org_unit_id, installed_at, removed_at
  FROM ledger.device_context;

CREATE VIEW analyst.tariff_versions AS
SELECT tariff_id, version, kind, effective_from, effective_to, cycle, tiers, tou
  FROM ledger.tariff_versions;

-- ----------------------------------------------------------------- grants

GRANT SELECT, INSERT, UPDATE, DELETE ON
    ledger.org_units, ledger.locations, ledger.supply_nodes, ledger.service_points,
    ledger.fep_assignments, ledger.manufacturers, ledger.vee_groups, ledger.device_types,
    ledger.devices, ledger.customers, ledger.tariffs, ledger.tariff_versions, ledger.accounts,
    ledger.meters, ledger.collection_plans, ledger.collection_plan_targets,
    ledger.customer_types, ledger.meter_sizes
    TO {{role.api}};
GRANT SELECT ON ledger.device_transitions TO {{role.api}};
GRANT SELECT, INSERT ON ledger.history TO {{role.api}};
GRANT SELECT, INSERT, DELETE ON ledger.outbox TO {{role.api}};
GRANT USAGE, SELECT ON SEQUENCE ledger.publish_version TO {{role.api}};
GRANT SELECT ON ledger.device_context, ledger.meter_dimensions, ledger.account_dimensions,
    ledger.collection_plan_devices TO {{role.api}}, {{role.pipeline}}, {{role.billing}};

-- The billing system reads the whole ledger (it owns the customer data it sent us).
GRANT SELECT ON ALL TABLES IN SCHEMA ledger TO {{role.billing}};
REVOKE SELECT ON ledger.outbox FROM {{role.billing}};

-- The stream reads everything but personal data.
GRANT SELECT ON
    ledger.org_units, ledger.supply_nodes, ledger.service_points, ledger.fep_assignments,
    ledger.manufacturers, ledger.vee_groups, ledger.device_types, ledger.devices,
    ledger.tariffs, ledger.tariff_versions, ledger.accounts, ledger.meters,
    ledger.collection_plans, ledger.collection_plan_targets, ledger.customer_types,
    ledger.meter_sizes, ledger.device_transitions
    TO {{role.pipeline}};

GRANT SELECT ON analyst.meters, analyst.accounts, analyst.locations, analyst.org_units,
    analyst.supply_nodes, analyst.devices, analyst.tariff_versions
    TO {{role.analyst}}, {{role.api}};
