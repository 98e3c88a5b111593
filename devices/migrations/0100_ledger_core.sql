-- The device ledger (devices/ledger/__init__.py describes every table).
--
-- Natural keys everywhere: every id is the utility's own identifier (text), never a surrogate.
-- Every entity table carries created_at, updated_at and row_version, kept by ledger.touch():
-- an UPDATE that changes nothing keeps them (and writes no history and no outbox row), so
-- re-importing the same file changes nothing.

-- ----------------------------------------------------------------- common trigger functions

CREATE FUNCTION ledger.touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF NEW IS NOT DISTINCT FROM OLD THEN
            RETURN NEW;
        END IF;
        NEW.created_at := OLD.created_at;
        NEW.row_version := OLD.row_version + 1;
    ELSE
        NEW.created_at := COALESCE(NEW.created_at, now());
        NEW.row_version := 1;
    END IF;
    NEW.updated_at := clock_timestamp();
    RETURN NEW;
END $$;
COMMENT ON FUNCTION ledger.touch() IS
    'BEFORE INSERT/UPDATE: bumps row_version and updated_at on a real change only.';

-- ----------------------------------------------------------------- reference data

CREATE TABLE ledger.customer_types (
    customer_type text PRIMARY KEY CHECK (customer_type ~ '^[a-z][a-z0-9_]*$'),
    description   text NOT NULL DEFAULT ''
);
INSERT INTO ledger.customer_types VALUES
    ('residential', 'households'),
    ('commercial', 'shops, offices, restaurants'),
    ('industrial', 'factories and process consumers'),
    ('public', 'schools, hospitals, public buildings'),
    ('heating', 'boiler houses and district heating'),
    ('low_income', 'households with a subsidised tariff');

-- Nominal sizes with their maximum flow (gas: EN 1359 / OIML R137 G sizes; water: ISO 4064
-- Q3 of the usual DN sizes). Qmax in m3/h.
CREATE TABLE ledger.meter_sizes (
    size    text PRIMARY KEY,
    medium  text NOT NULL CHECK (medium IN ('gas', 'water', 'heat', 'electricity')),
    qmax    numeric NOT NULL CHECK (qmax > 0),
    qnom    numeric,
    qmin    numeric
);
INSERT INTO ledger.meter_sizes (size, medium, qmax, qnom, qmin) VALUES
    ('G1.6', 'gas', 2.5, 1.6, 0.016),
    ('G2.5', 'gas', 4, 2.5, 0.025),
    ('G4', 'gas', 6, 4, 0.04),
    ('G6', 'gas', 10, 6, 0.06),
    ('G10', 'gas', 16, 10, 0.1),
    ('G16', 'gas', 25, 16, 0.16),
    ('G25', 'gas', 40, 25, 0.25),
    ('DN15', 'water', 3.125, 2.5, 0.025),
    ('DN20', 'water', 5, 4, 0.04),
    ('DN25', 'water', 7.875, 6.3, 0.063),
    ('DN32', 'water', 12.5, 10, 0.1),
    ('DN40', 'water', 20, 16, 0.16),
    ('DN50', 'water', 31.25, 25, 0.25),
    ('DN15-heat', 'heat', 3, 1.5, 0.015),
    ('DN20-heat', 'heat', 5, 2.5, 0.025);

-- ----------------------------------------------------------------- organisation and places

CREATE TABLE ledger.org_units (
    org_unit_id  text PRIMARY KEY,
    parent_id    text REFERENCES ledger.org_units (org_unit_id),
    kind         text NOT NULL DEFAULT 'branch'
                 CHECK (kind IN ('company', 'branch', 'station', 'team', 'department')),
    name         text NOT NULL,
    attributes   jsonb NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    row_version  bigint NOT NULL DEFAULT 1,
    CHECK (parent_id IS DISTINCT FROM org_unit_id)
);
CREATE INDEX ON ledger.org_units (parent_id);
COMMENT ON TABLE ledger.org_units IS
    'Governing relationships: company -> branch -> station -> team (who is responsible).';

CREATE TABLE ledger.locations (
    location_id  text PRIMARY KEY,
    kind         text NOT NULL CHECK (kind IN ('region', 'area', 'building', 'unit')),
    parent_id    text REFERENCES ledger.locations (location_id),
    name         text NOT NULL,
    address      text NOT NULL DEFAULT '',
    latitude     numeric(9, 6) CHECK (latitude BETWEEN -90 AND 90),
    longitude    numeric(9, 6) CHECK (longitude BETWEEN -180 AND 180),
    org_unit_id  text REFERENCES ledger.org_units (org_unit_id),
    -- Ancestors from the region down to this location (kept by ledger.locations_path()).
    path         text[] NOT NULL DEFAULT '{}',
    attributes   jsonb NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    row_version  bigint NOT NULL DEFAULT 1,
    CHECK ((kind = 'region') = (parent_id IS NULL))
);
CREATE INDEX ON ledger.locations (parent_id);
CREATE INDEX ON ledger.locations USING gin (path);
COMMENT ON TABLE ledger.locations IS
    'Places: region -> area -> building -> unit, with coordinates and the governing org unit '
    '(inherited downwards). Unit names and addresses are personal data (api only).';

CREATE FUNCTION ledger.location_rank(kind text) RETURNS int LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE kind WHEN 'region' THEN 0 WHEN 'area' THEN 1 WHEN 'building' THEN 2
                     WHEN 'unit' THEN 3 END
$$;

CREATE FUNCTION ledger.locations_path() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    parent record;
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.location_id <> OLD.location_id THEN
        RAISE EXCEPTION 'location % cannot be renamed to %', OLD.location_id, NEW.location_id
            USING ERRCODE = 'check_violation', HINT = 'natural keys never change';
    END IF;
    IF NEW.parent_id IS NULL THEN
        NEW.path := ARRAY[NEW.location_id];
        RETURN NEW;
    END IF;
    SELECT kind, path INTO parent FROM ledger.locations WHERE location_id = NEW.parent_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'location % has unknown parent %', NEW.location_id, NEW.parent_id
            USING ERRCODE = 'foreign_key_violation',
                  HINT = 'create the parent location first';
    END IF;
    IF ledger.location_rank(parent.kind) >= ledger.location_rank(NEW.kind) THEN
        RAISE EXCEPTION 'a % cannot lie inside a % (location %, parent %)',
            NEW.kind, parent.kind, NEW.location_id, NEW.parent_id
            USING ERRCODE = 'check_violation',
                  HINT = 'places nest region -> area -> building -> unit';
    END IF;
    IF NEW.location_id = ANY (parent.path) THEN
        RAISE EXCEPTION 'location % would contain itself', NEW.location_id
            USING ERRCODE = 'check_violation';
    END IF;
    NEW.path := parent.path || NEW.location_id;
    RETURN NEW;
END $$;

CREATE FUNCTION ledger.locations_cascade() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Children recompute their path from ours (their own BEFORE trigger does the work).
    UPDATE ledger.locations SET parent_id = parent_id WHERE parent_id = NEW.location_id;
    RETURN NULL;
END $$;

CREATE TRIGGER a_path BEFORE INSERT OR UPDATE ON ledger.locations
    FOR EACH ROW EXECUTE FUNCTION ledger.locations_path();
CREATE TRIGGER b_cascade AFTER UPDATE ON ledger.locations
    FOR EACH ROW WHEN (OLD.path IS DISTINCT FROM NEW.path)
    EXECUTE FUNCTION ledger.locations_cascade();

CREATE TABLE ledger.supply_nodes (
    supply_node_id text PRIMARY KEY,
    kind           text NOT NULL
                   CHECK (kind IN ('source', 'station', 'regulator', 'pressure_zone',
                                   'district', 'pipe')),
    parent_id      text REFERENCES ledger.supply_nodes (supply_node_id),
    name           text NOT NULL,
    medium         text NOT NULL DEFAULT 'gas'
                   CHECK (medium IN ('gas', 'water', 'heat', 'electricity')),
    pressure_level text NOT NULL DEFAULT '',
    latitude       numeric(9, 6) CHECK (latitude BETWEEN -90 AND 90),
    longitude      numeric(9, 6) CHECK (longitude BETWEEN -180 AND 180),
    geometry       jsonb,
    attributes     jsonb NOT NULL DEFAULT '{}',
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    row_version    bigint NOT NULL DEFAULT 1,
    CHECK (parent_id IS DISTINCT FROM supply_node_id)
);
CREATE INDEX ON ledger.supply_nodes (parent_id);
COMMENT ON TABLE ledger.supply_nodes IS
    'Supply network, upstream first: source/station -> regulator -> pressure zone/district '
    '-> pipe; meters hang on a node. geometry is a GeoJSON geometry (a pipe''s LineString).';

-- ----------------------------------------------------------------- service points and FEPs

CREATE TABLE ledger.service_points (
    service_point_id text PRIMARY KEY,
    protocol         text NOT NULL,
    transport        text NOT NULL DEFAULT 'tcp'
                     CHECK (transport IN ('tcp', 'udp', 'mqtt', 'modbus_tcp', 'http', 'file',
                                          'serial')),
    listen_host      text NOT NULL DEFAULT '0.0.0.0',
    listen_port      integer CHECK (listen_port BETWEEN 1 AND 65535),
    description      text NOT NULL DEFAULT '',
    enabled          boolean NOT NULL DEFAULT true,
    attributes       jsonb NOT NULL DEFAULT '{}',
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    row_version      bigint NOT NULL DEFAULT 1
);
COMMENT ON TABLE ledger.service_points IS
    'A protocol stack on a port (or an MQTT topic root) that devices connect to.';

CREATE TABLE ledger.fep_assignments (
    service_point_id text NOT NULL REFERENCES ledger.service_points ON DELETE CASCADE,
    fep_id           text NOT NULL,
    role             text NOT NULL DEFAULT 'primary' CHECK (role IN ('primary', 'standby')),
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    row_version      bigint NOT NULL DEFAULT 1,
    PRIMARY KEY (service_point_id, fep_id)
);
CREATE INDEX ON ledger.fep_assignments (fep_id);
COMMENT ON TABLE ledger.fep_assignments IS
    'Which front-end processes serve a service point (one or more; DESIGN.md §8).';

-- ----------------------------------------------------------------- device catalog

CREATE TABLE ledger.manufacturers (
    manufacturer_id text PRIMARY KEY,
    name            text NOT NULL,
    country         text NOT NULL DEFAULT '',
    contact         text NOT NULL DEFAULT '',
    attributes      jsonb NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    row_version     bigint NOT NULL DEFAULT 1
);

CREATE TABLE ledger.vee_groups (
    vee_group_id text PRIMARY KEY,
    description  text NOT NULL DEFAULT '',
    spec         text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    row_version  bigint NOT NULL DEFAULT 1
);
COMMENT ON TABLE ledger.vee_groups IS
    'VEE rule groups (spec = the YAML rule-group document); row_version is the group version.';

CREATE TABLE ledger.device_types (
    device_type          text PRIMARY KEY,
    kind                 text NOT NULL
                         CHECK (kind IN ('meter', 'dtu', 'rtu', 'concentrator', 'collector')),
    manufacturer_id      text NOT NULL REFERENCES ledger.manufacturers,
    model                text NOT NULL DEFAULT '',
    medium               text CHECK (medium IN ('gas', 'water', 'heat', 'electricity')),
    protocol             text NOT NULL,
    protocol_variant     text NOT NULL DEFAULT '',
    frame_template       text NOT NULL DEFAULT '',
    report_template      text NOT NULL DEFAULT '',
    command_handler      text NOT NULL DEFAULT '',
    command_variant      text NOT NULL DEFAULT '',
    transport            text NOT NULL DEFAULT 'tcp'
                         CHECK (transport IN ('tcp', 'nbiot', 'mqtt', 'modbus_tcp', 'lora',
                                              'rf', 'mbus', 'rs485', 'ic_card', 'file')),
    wake_mode            text NOT NULL DEFAULT 'online' CHECK (wake_mode IN ('online', 'on_wake')),
    has_valve            boolean NOT NULL DEFAULT false,
    valve_arm_supported  boolean NOT NULL DEFAULT false,
    read_back            boolean NOT NULL DEFAULT true,
    default_vee_group_id text REFERENCES ledger.vee_groups (vee_group_id),
    capabilities         jsonb NOT NULL DEFAULT '{}',
    attributes           jsonb NOT NULL DEFAULT '{}',
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    row_version          bigint NOT NULL DEFAULT 1,
    CHECK (kind <> 'meter' OR medium IS NOT NULL)
);
COMMENT ON TABLE ledger.device_types IS
    'A model of device: what it is, how it talks (protocol + frame/report templates of '
    'decoders/) and which command handler/variant controls it; valve and wake capabilities.';

-- ----------------------------------------------------------------- devices

CREATE TABLE ledger.devices (
    device_id         text PRIMARY KEY,
    device_type       text NOT NULL REFERENCES ledger.device_types,
    kind              text NOT NULL DEFAULT 'meter',   -- copied from the device type
    serial_no         text NOT NULL DEFAULT '',
    address           text NOT NULL DEFAULT '',        -- the protocol address
    status            text NOT NULL DEFAULT 'in_stock'
                      CHECK (status IN ('in_stock', 'installed', 'active', 'removed')),
    parent_device_id  text REFERENCES ledger.devices (device_id),
    parent_port       text NOT NULL DEFAULT '',
    point_no          integer CHECK (point_no >= 0),
    -- Collection-network ancestors, root first, ending with this device (kept by trigger).
    path              text[] NOT NULL DEFAULT '{}',
    link_id           text UNIQUE,
    service_point_id  text REFERENCES ledger.service_points,
    location_id       text REFERENCES ledger.locations,
    latitude          numeric(9, 6) CHECK (latitude BETWEEN -90 AND 90),
    longitude         numeric(9, 6) CHECK (longitude BETWEEN -180 AND 180),
    imei              text,
    iccid             text,
    firmware          text NOT NULL DEFAULT '',
    installed_at      timestamptz,
    activated_at      timestamptz,
    removed_at        timestamptz,
    status_changed_at timestamptz,
    parameters        jsonb NOT NULL DEFAULT '{}',
    attributes        jsonb NOT NULL DEFAULT '{}',
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    row_version       bigint NOT NULL DEFAULT 1,
    CHECK (parent_device_id IS DISTINCT FROM device_id)
);
CREATE INDEX ON ledger.devices (device_type);
CREATE INDEX ON ledger.devices (parent_device_id);
CREATE INDEX ON ledger.devices (location_id);
CREATE INDEX ON ledger.devices (service_point_id);
CREATE INDEX ON ledger.devices (address);
CREATE INDEX ON ledger.devices USING gin (path);
COMMENT ON TABLE ledger.devices IS
    'Every physical device (meters, DTUs, RTUs, concentrators, collectors) with its lifecycle '
    'in_stock -> installed -> active -> removed, its place in the collection network '
    '(parent_device_id/path), its link (link_id) and service point, and its location.';
COMMENT ON COLUMN ledger.devices.link_id IS
    'Id of the communication link this device holds (DTU registration id, concentrator '
    'address, NB-IoT IMEI); devices below it are reached through it.';
COMMENT ON COLUMN ledger.devices.point_no IS
    'Measurement point number of the device in its concentrator''s archive.';
COMMENT ON COLUMN ledger.devices.parameters IS
    'Desired device parameters (report interval, alarm thresholds ...) by name.';

CREATE FUNCTION ledger.device_rank(kind text) RETURNS int LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE kind WHEN 'meter' THEN 0 WHEN 'collector' THEN 1 WHEN 'concentrator' THEN 2
                     WHEN 'rtu' THEN 2 WHEN 'dtu' THEN 3 END
$$;

-- Lifecycle: which status may follow which.
CREATE TABLE ledger.device_transitions (
    status_from text NOT NULL,
    status_to   text NOT NULL,
    PRIMARY KEY (status_from, status_to)
);
INSERT INTO ledger.device_transitions VALUES
    ('in_stock', 'installed'), ('in_stock', 'removed'),
    ('installed', 'active'), ('installed', 'in_stock'), ('installed', 'removed'),
    ('active', 'installed'), ('active', 'removed'),
    ('removed', 'in_stock');

CREATE FUNCTION ledger.devices_before() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    parent record;
    at timestamptz := now();
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.device_id <> OLD.device_id THEN
        RAISE EXCEPTION 'device % cannot be renamed to %', OLD.device_id, NEW.device_id
            USING ERRCODE = 'check_violation', HINT = 'natural keys never change';
    END IF;
    SELECT kind INTO NEW.kind FROM ledger.device_types WHERE device_type = NEW.device_type;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'device % has unknown device type %', NEW.device_id, NEW.device_type
            USING ERRCODE = 'foreign_key_violation', HINT = 'create the device type first';
    END IF;

    -- Collection network: the parent must rank above (meter < collector < concentrator/RTU
    -- < DTU) and the tree must stay a tree.
    IF NEW.parent_device_id IS NULL THEN
        NEW.path := ARRAY[NEW.device_id];
    ELSE
        SELECT kind, path INTO parent FROM ledger.devices WHERE device_id = NEW.parent_device_id;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'device % has unknown parent device %', NEW.device_id,
                NEW.parent_device_id
                USING ERRCODE = 'foreign_key_violation', HINT = 'create the parent device first';
        END IF;
        IF ledger.device_rank(parent.kind) <= ledger.device_rank(NEW.kind) THEN
            RAISE EXCEPTION 'a % cannot be connected below a % (device %, parent %)',
                NEW.kind, parent.kind, NEW.device_id, NEW.parent_device_id
                USING ERRCODE = 'check_violation',
                      HINT = 'the network is DTU -> concentrator/RTU -> collector -> meter';
        END IF;
        IF NEW.device_id = ANY (parent.path) THEN
            RAISE EXCEPTION 'device % would be its own ancestor', NEW.device_id
                USING ERRCODE = 'check_violation';
        END IF;
        NEW.path := parent.path || NEW.device_id;
    END IF;

    -- Lifecycle: allowed transitions only; stamp the times a writer did not give.
    IF TG_OP = 'INSERT' THEN
        NEW.status_changed_at := COALESCE(NEW.status_changed_at, at);
        IF NEW.status IN ('installed', 'active') THEN
            NEW.installed_at := COALESCE(NEW.installed_at, at);
        END IF;
        IF NEW.status = 'active' THEN
            NEW.activated_at := COALESCE(NEW.activated_at, NEW.installed_at, at);
        END IF;
        IF NEW.status = 'removed' THEN
            NEW.removed_at := COALESCE(NEW.removed_at, at);
        END IF;
    ELSIF NEW.status IS DISTINCT FROM OLD.status THEN
        IF NOT EXISTS (SELECT 1 FROM ledger.device_transitions
                       WHERE status_from = OLD.status AND status_to = NEW.status) THEN
            RAISE EXCEPTION 'device % cannot go from % to %', NEW.device_id, OLD.status,
                NEW.status
                USING ERRCODE = 'check_violation',
                      HINT = 'allowed: see ledger.device_transitions';
        END IF;
        IF NEW.status_changed_at IS NOT DISTINCT FROM OLD.status_changed_at THEN
            NEW.status_changed_at := at;
        END IF;
        IF NEW.status = 'installed' AND OLD.status = 'in_stock' THEN
            IF NEW.installed_at IS NOT DISTINCT FROM OLD.installed_at THEN
                NEW.installed_at := NEW.status_changed_at;
            END IF;
            IF NEW.removed_at IS NOT DISTINCT FROM OLD.removed_at THEN
                NEW.removed_at := NULL;
            END IF;
            NEW.activated_at := NULL;
        ELSIF NEW.status = 'active' AND NEW.activated_at IS NOT DISTINCT FROM OLD.activated_at
        THEN
            NEW.activated_at := NEW.status_changed_at;
        ELSIF NEW.status = 'removed' AND NEW.removed_at IS NOT DISTINCT FROM OLD.removed_at THEN
            NEW.removed_at := NEW.status_changed_at;
        END IF;
    END IF;
    RETURN NEW;
END $$;

CREATE FUNCTION ledger.devices_cascade() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE ledger.devices SET parent_device_id = parent_device_id
     WHERE parent_device_id = NEW.device_id;
    RETURN NULL;
END $$;

CREATE TRIGGER a_network BEFORE INSERT OR UPDATE ON ledger.devices
    FOR EACH ROW EXECUTE FUNCTION ledger.devices_before();
CREATE TRIGGER b_cascade AFTER UPDATE ON ledger.devices
    FOR EACH ROW WHEN (OLD.path IS DISTINCT FROM NEW.path)
    EXECUTE FUNCTION ledger.devices_cascade();

-- ----------------------------------------------------------------- customers, tariffs, accounts

CREATE TABLE ledger.customers (
    customer_id    text PRIMARY KEY,
    customer_type  text NOT NULL REFERENCES ledger.customer_types,
    name           text NOT NULL,
    phone          text NOT NULL DEFAULT '',
    email          text NOT NULL DEFAULT '',
    id_number      text NOT NULL DEFAULT '',
    postal_address text NOT NULL DEFAULT '',
    attributes     jsonb NOT NULL DEFAULT '{}',
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    row_version    bigint NOT NULL DEFAULT 1
);
CREATE INDEX ON ledger.customers (customer_type);
COMMENT ON TABLE ledger.customers IS
    'Customers of the utility. PERSONAL DATA (name, phone, email, id_number, postal_address): '
    'readable by the api and billing roles only, never by analyst.';

CREATE TABLE ledger.tariffs (
    tariff_id   text PRIMARY KEY,
    name        text NOT NULL DEFAULT '',
    medium      text NOT NULL DEFAULT 'gas'
                CHECK (medium IN ('gas', 'water', 'heat', 'electricity')),
    currency    text NOT NULL DEFAULT 'CNY' CHECK (currency ~ '^[A-Z]{3}$'),
    unit        text NOT NULL DEFAULT 'm3',
    description text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    row_version bigint NOT NULL DEFAULT 1
);

CREATE TABLE ledger.tariff_versions (
    tariff_id         text NOT NULL REFERENCES ledger.tariffs,
    version           integer NOT NULL CHECK (version >= 1),
    kind              text NOT NULL CHECK (kind IN ('step', 'flat', 'tou', 'realtime')),
    effective_from    timestamptz NOT NULL,
    effective_to      timestamptz,
    cycle             text NOT NULL DEFAULT 'year' CHECK (cycle IN ('year', 'month')),
    cycle_start_month integer NOT NULL DEFAULT 1 CHECK (cycle_start_month BETWEEN 1 AND 12),
    cycle_start_day   integer NOT NULL DEFAULT 1 CHECK (cycle_start_day BETWEEN 1 AND 28),
    -- [{"upper": "240" | null, "price": "2.67", "components": {"gas": "2.67"}}, ...]
    tiers             jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(tiers) = 'array'),
    tou               jsonb NOT NULL DEFAULT '{}',
    source            text NOT NULL DEFAULT 'ledger',
    reason            text NOT NULL DEFAULT '',
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    row_version       bigint NOT NULL DEFAULT 1,
    PRIMARY KEY (tariff_id, version),
    CHECK (effective_to IS NULL OR effective_to > effective_from)
);
COMMENT ON TABLE ledger.tariff_versions IS
    'Effective-dated tariff versions (price adjustments add a version); published to '
    'ledger.tariffs keyed tariff_id:version.';

CREATE TABLE ledger.accounts (
    account_id       text PRIMARY KEY,
    customer_id      text NOT NULL REFERENCES ledger.customers,
    location_id      text REFERENCES ledger.locations,
    billing_mode     text NOT NULL DEFAULT 'prepaid_money'
                     CHECK (billing_mode IN ('prepaid_money', 'prepaid_volume', 'postpaid')),
    tariff_id        text REFERENCES ledger.tariffs,
    status           text NOT NULL DEFAULT 'active'
                     CHECK (status IN ('active', 'suspended', 'closed')),
    protected        boolean NOT NULL DEFAULT false,
    protected_reason text NOT NULL DEFAULT '',
    alarm1           numeric,
    alarm2           numeric,
    overdraft_limit  numeric NOT NULL DEFAULT 0 CHECK (overdraft_limit >= 0),
    max_balance      numeric CHECK (max_balance IS NULL OR max_balance > 0),
    reconnect_limit  numeric NOT NULL DEFAULT 0,
    tier_override    jsonb NOT NULL DEFAULT '{}',
    opened_at        timestamptz,
    closed_at        timestamptz,
    attributes       jsonb NOT NULL DEFAULT '{}',
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    row_version      bigint NOT NULL DEFAULT 1,
    CHECK (alarm2 IS NULL OR alarm1 IS NULL OR alarm2 <= alarm1)
);
CREATE INDEX ON ledger.accounts (customer_id);
CREATE INDEX ON ledger.accounts (location_id);
CREATE INDEX ON ledger.accounts (tariff_id);
COMMENT ON TABLE ledger.accounts IS
    'Billing accounts: mode, tariff, alarm levels (alarm1 >= alarm2), overdraft, maximum '
    'balance, reconnect limit; protected accounts block debt-related valve closes.';

-- ----------------------------------------------------------------- meters

CREATE TABLE ledger.meters (
    meter_id          text PRIMARY KEY REFERENCES ledger.devices (device_id) ON DELETE CASCADE,
    medium            text NOT NULL CHECK (medium IN ('gas', 'water', 'heat', 'electricity')),
    size              text REFERENCES ledger.meter_sizes,
    qmax              numeric CHECK (qmax > 0),
    register_digits   integer NOT NULL DEFAULT 5 CHECK (register_digits BETWEEN 1 AND 12),
    register_decimals integer NOT NULL DEFAULT 3 CHECK (register_decimals BETWEEN 0 AND 6),
    unit              text NOT NULL DEFAULT 'm3',
    multiplier        numeric NOT NULL DEFAULT 1 CHECK (multiplier > 0),
    has_valve         boolean,
    account_id        text REFERENCES ledger.accounts,
    tariff_id         text REFERENCES ledger.tariffs,
    supply_node_id    text REFERENCES ledger.supply_nodes,
    vee_group_id      text REFERENCES ledger.vee_groups,
    initial_reading   numeric NOT NULL DEFAULT 0,
    attributes        jsonb NOT NULL DEFAULT '{}',
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    row_version       bigint NOT NULL DEFAULT 1
);
CREATE INDEX ON ledger.meters (account_id);
CREATE INDEX ON ledger.meters (supply_node_id);
CREATE INDEX ON ledger.meters (tariff_id);
COMMENT ON TABLE ledger.meters IS
    'Meter attributes of a device of kind meter: medium, size (Qmax from ledger.meter_sizes '
    'unless given), register digits/decimals, unit, valve (NULL = as the device type), the '
    'account it bills, tariff override, supply node and VEE group (NULL = the type default).';

CREATE FUNCTION ledger.meters_check() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    device_kind text;
BEGIN
    SELECT kind INTO device_kind FROM ledger.devices WHERE device_id = NEW.meter_id;
    IF device_kind IS DISTINCT FROM 'meter' THEN
        RAISE EXCEPTION 'device % is a %, not a meter', NEW.meter_id,
            COALESCE(device_kind, 'missing device')
            USING ERRCODE = 'check_violation',
                  HINT = 'create the device with a device type of kind meter first';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER a_check BEFORE INSERT OR UPDATE ON ledger.meters
    FOR EACH ROW EXECUTE FUNCTION ledger.meters_check();

-- ----------------------------------------------------------------- collection plans

CREATE TABLE ledger.collection_plans (
    plan_id      text PRIMARY KEY,
    name         text NOT NULL DEFAULT '',
    command      text NOT NULL DEFAULT 'read_now',
    registers    text[] NOT NULL DEFAULT '{}',
    params       jsonb NOT NULL DEFAULT '{}',
    interval_s   integer CHECK (interval_s >= 60),
    schedule     text NOT NULL DEFAULT '',
    window_start time,
    window_end   time,
    priority     integer NOT NULL DEFAULT 5 CHECK (priority BETWEEN 0 AND 9),
    retries      integer NOT NULL DEFAULT 2 CHECK (retries >= 0),
    enabled      boolean NOT NULL DEFAULT true,
    source       text NOT NULL DEFAULT 'ledger',
    description  text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    row_version  bigint NOT NULL DEFAULT 1,
    CHECK (interval_s IS NOT NULL OR schedule <> '')
);
COMMENT ON TABLE ledger.collection_plans IS
    'What to read (command + registers/params), how often (interval_s or a cron schedule, '
    'within an optional local-time window) and from which devices (collection_plan_targets). '
    'The FEPs run them; ledger.collection_plan_devices resolves the targets.';

CREATE TABLE ledger.collection_plan_targets (
    plan_id     text NOT NULL REFERENCES ledger.collection_plans ON DELETE CASCADE,
    target_kind text NOT NULL
                CHECK (target_kind IN ('device', 'subtree', 'location', 'device_type',
                                       'service_point', 'account', 'all')),
    target_id   text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (plan_id, target_kind, target_id)
);

-- ----------------------------------------------------------------- history

CREATE TABLE ledger.history (
    history_id  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    entity      text NOT NULL,
    entity_id   text NOT NULL,
    op          text NOT NULL CHECK (op IN ('insert', 'update', 'delete')),
    row_version bigint,
    changed_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor       text NOT NULL,
    reason      text NOT NULL DEFAULT '',
    before      jsonb,
    after       jsonb
);
CREATE INDEX ON ledger.history (entity, entity_id, history_id);
COMMENT ON TABLE ledger.history IS
    'Append-only change history of every ledger entity (for an update only the changed '
    'columns). actor/reason come from SET LOCAL unimeter.actor / unimeter.reason.';

CREATE FUNCTION ledger.record_history() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    old_doc jsonb;
    new_doc jsonb;
    before_doc jsonb;
    after_doc jsonb;
    doc jsonb;
    key_part text;
    entity_key text := '';
    k text;
BEGIN
    IF TG_OP <> 'INSERT' THEN
        old_doc := to_jsonb(OLD) - 'updated_at' - 'row_version' - 'created_at';
    END IF;
    IF TG_OP <> 'DELETE' THEN
        new_doc := to_jsonb(NEW) - 'updated_at' - 'row_version' - 'created_at';
    END IF;
    doc := COALESCE(new_doc, old_doc);
    FOREACH key_part IN ARRAY TG_ARGV LOOP
        entity_key := entity_key || CASE WHEN entity_key = '' THEN '' ELSE ':' END
                      || (doc ->> key_part);
    END LOOP;
    IF TG_OP = 'UPDATE' THEN
        before_doc := '{}';
        after_doc := '{}';
        FOR k IN SELECT jsonb_object_keys(new_doc) LOOP
            IF new_doc -> k IS DISTINCT FROM old_doc -> k THEN
                before_doc := before_doc || jsonb_build_object(k, old_doc -> k);
                after_doc := after_doc || jsonb_build_object(k, new_doc -> k);
            END IF;
        END LOOP;
        IF after_doc = '{}' THEN
            RETURN NULL;
        END IF;
    ELSE
        before_doc := old_doc;
        after_doc := new_doc;
    END IF;
    INSERT INTO ledger.history (entity, entity_id, op, row_version, actor, reason, before,
                                after)
    VALUES (TG_TABLE_NAME, entity_key, lower(TG_OP),
            CASE WHEN TG_OP = 'DELETE' THEN OLD.row_version ELSE NEW.row_version END,
            COALESCE(NULLIF(current_setting('unimeter.actor', true), ''), session_user),
            COALESCE(current_setting('unimeter.reason', true), ''),
            before_doc, after_doc);
    RETURN NULL;
END $$;

-- ----------------------------------------------------------------- outbox

CREATE TABLE ledger.outbox (
    seq        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topic      text NOT NULL,
    entity     text NOT NULL,
    entity_id  text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    txid       xid8 NOT NULL DEFAULT pg_current_xact_id()
);
COMMENT ON TABLE ledger.outbox IS
    'Changes to publish, written by triggers in the writer''s transaction: (topic without '
    'prefix, entity kind, entity id). The publisher (devices/outbox.py) expands an entity to '
    'the messages it affects, builds them from the current state, produces them and deletes '
    'the rows; one publisher is active at a time (advisory lock).';

-- Published-message version: strictly increasing over everything the publisher produced.
CREATE SEQUENCE ledger.publish_version;

CREATE FUNCTION ledger.enqueue() RETURNS trigger LANGUAGE plpgsql AS $$
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
    RETURN NULL;
END $$;
COMMENT ON FUNCTION ledger.enqueue() IS
    'AFTER trigger enqueue(topic, entity, key column, ...): one outbox row for the change.';
