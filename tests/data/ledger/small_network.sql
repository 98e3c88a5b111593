-- A small ledger used by the schema tests: one region with a concentrator network.
INSERT INTO ledger.org_units (org_unit_id, parent_id, kind, name) VALUES
    ('ORG', NULL, 'company', 'City Gas'),
    ('ORG-N', 'ORG', 'branch', 'North branch');
INSERT INTO ledger.locations (location_id, kind, parent_id, name, org_unit_id, latitude, longitude) VALUES
    ('R1', 'region', NULL, 'North', 'ORG-N', 30.60, 114.30),
    ('R1-A1', 'area', 'R1', 'Garden estate', NULL, 30.61, 114.31),
    ('R1-A1-B1', 'building', 'R1-A1', 'Building 1', NULL, 30.611, 114.311),
    ('R1-A1-B1-U101', 'unit', 'R1-A1-B1', 'Room 101', NULL, NULL, NULL),
    ('R1-A1-B1-U102', 'unit', 'R1-A1-B1', 'Room 102', NULL, NULL, NULL);
INSERT INTO ledger.supply_nodes (supply_node_id, kind, parent_id, name) VALUES
    ('ST1', 'station', NULL, 'Gate station 1'),
    ('PZ1', 'pressure_zone', 'ST1', 'Zone 1'),
    ('P1', 'pipe', 'PZ1', 'Pipe 1');
INSERT INTO ledger.service_points (service_point_id, protocol, transport, listen_port) VALUES
    ('SP-CJT188', 'cjt188', 'tcp', 9001);
INSERT INTO ledger.manufacturers (manufacturer_id, name) VALUES ('goldcard', 'Goldcard');
INSERT INTO ledger.device_types (device_type, kind, manufacturer_id, protocol, medium, has_valve,
                                 valve_arm_supported) VALUES
    ('gc-conc', 'concentrator', 'goldcard', 'cjt188', NULL, false, false),
    ('gc-col', 'collector', 'goldcard', 'cjt188', NULL, false, false),
    ('gc-g4', 'meter', 'goldcard', 'cjt188', 'gas', true, true);
INSERT INTO ledger.devices (device_id, device_type, status, link_id, service_point_id, location_id) VALUES
    ('C1', 'gc-conc', 'active', 'LINK-C1', 'SP-CJT188', 'R1-A1-B1');
INSERT INTO ledger.devices (device_id, device_type, status, parent_device_id) VALUES
    ('COL1', 'gc-col', 'active', 'C1');
INSERT INTO ledger.devices (device_id, device_type, status, parent_device_id, location_id, address, point_no) VALUES
    ('M1', 'gc-g4', 'installed', 'COL1', 'R1-A1-B1-U101', '00000001', 1),
    ('M2', 'gc-g4', 'installed', 'COL1', 'R1-A1-B1-U102', '00000002', 2);
INSERT INTO ledger.customers (customer_id, customer_type, name, phone) VALUES
    ('CU1', 'residential', 'Zhang San', '13800000001'),
    ('CU2', 'commercial', 'Li Si Noodles', '13800000002');
INSERT INTO ledger.tariffs (tariff_id, name) VALUES ('RES', 'Residential step tariff');
INSERT INTO ledger.accounts (account_id, customer_id, location_id, tariff_id, alarm1, alarm2) VALUES
    ('A1', 'CU1', 'R1-A1-B1-U101', 'RES', 20, 5),
    ('A2', 'CU2', 'R1-A1-B1-U102', 'RES', 50, 10);
INSERT INTO ledger.meters (meter_id, medium, size, account_id, supply_node_id) VALUES
    ('M1', 'gas', 'G4', 'A1', 'P1'),
    ('M2', 'gas', 'G6', 'A2', 'P1');
