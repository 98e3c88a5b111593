-- ledger.meter_dimensions filtered by meter id must not compute ledger.device_context for
-- every device (the view has more joins than from_collapse_limit, so the planner plans
-- device_context on its own): exposing the id from device_context lets a filter on meter_id
-- be pushed down into it. Same columns, same rows.
CREATE OR REPLACE VIEW ledger.meter_dimensions AS
SELECT c.device_id AS meter_id,
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
