-- LedgerMeter.point_no: the measuring point number of a meter in its concentrator's archive
-- (376.1 pN), so an FEP attributes a concentrator's class 1/2 data to the right meter. Same
-- rows and columns as 0105, point_no appended.
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
       c.path AS device_path,
       c.point_no
  FROM ledger.meters m
  JOIN ledger.device_context c ON c.device_id = m.meter_id
  JOIN ledger.device_types dt ON dt.device_type = c.device_type
  LEFT JOIN ledger.meter_sizes s ON s.size = m.size
  LEFT JOIN ledger.accounts a ON a.account_id = m.account_id
  LEFT JOIN ledger.customers cu ON cu.customer_id = a.customer_id;
