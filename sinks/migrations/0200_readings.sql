-- Validated readings (every version), their edits, the current hourly consumption projection,
-- device events and the raw frame archive. Written by the sink (role sink = ingest + pipeline).
--
-- Natural keys everywhere, so the sink is idempotent: an identical re-delivered row is
-- absorbed; a different value for an existing key lands in ops.sink_corrections (0202), never
-- over the stored row. Hypertables and indexes per backend follow in 0210.

-- Every version of every validated reading, as the pipeline emitted it: history is kept, a
-- new version never replaces an older row. Dimensions are the ledger attribution at
-- validation time, so history keeps the account, tariff and network node it had.
CREATE TABLE data.validated_readings (
    meter_id          text        NOT NULL,
    register          text        NOT NULL,
    ts                timestamptz NOT NULL,
    version           integer     NOT NULL CHECK (version >= 1),
    value             numeric,
    unit              text        NOT NULL,
    quality           text        NOT NULL,
    method            text        NOT NULL DEFAULT 'none',
    flags             text[]      NOT NULL DEFAULT '{}',
    kind              text        NOT NULL DEFAULT 'cumulative',
    consumption       numeric,
    interval_start    timestamptz,
    original_value    numeric,
    received_at       timestamptz,
    validated_at      timestamptz,
    account_id        text,
    customer_type     text,
    region            text,
    org_unit          text,
    supply_node       text,
    tariff_id         text,
    vee_group         text,
    medium            text,
    source            text        NOT NULL DEFAULT '',
    frame_id          text,
    stored_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (meter_id, register, ts, version)
);
COMMENT ON TABLE data.validated_readings IS
    'Every version of every validated reading (key meter_id, register, ts, version); '
    'the highest version of a key is the current one (data.validated_readings_current).';

-- Who changed a validated value, when, why and how: one row per edited version.
CREATE TABLE data.reading_edits (
    meter_id          text        NOT NULL,
    register          text        NOT NULL,
    ts                timestamptz NOT NULL,
    version           integer     NOT NULL,
    edited_by         text        NOT NULL,
    edited_at         timestamptz NOT NULL,
    reason_code       text        NOT NULL,
    method            text        NOT NULL,
    quality           text        NOT NULL,
    new_value         numeric,
    previous_value    numeric,
    previous_version  integer,
    note              text,
    stored_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (meter_id, register, ts, version)
);
COMMENT ON TABLE data.reading_edits IS
    'The audit of validated-reading edits: old value, who, when, why (reason_code) and how '
    '(method); one row per edited version.';

-- The consumption of the current version of each reading, prorated into UTC hours: what the
-- aggregates sum. A reading spanning several hours has one row per hour part; the row of
-- the hour in which the reading was taken has closes_reading = true (so reading_count counts
-- each reading once). When a higher version of a reading arrives, the rows of the older
-- version are replaced in the same transaction (history stays in data.validated_readings).
CREATE TABLE data.consumption_intervals (
    meter_id          text        NOT NULL,
    register          text        NOT NULL,
    interval_start    timestamptz NOT NULL,
    interval_end      timestamptz NOT NULL,
    reading_ts        timestamptz NOT NULL,
    version           integer     NOT NULL,
    volume            numeric     NOT NULL,
    estimated         boolean     NOT NULL DEFAULT false,
    closes_reading    boolean     NOT NULL DEFAULT false,
    unit              text        NOT NULL,
    medium            text,
    account_id        text,
    customer_type     text,
    region            text,
    org_unit          text,
    supply_node       text,
    tariff_id         text,
    PRIMARY KEY (meter_id, register, reading_ts, interval_start),
    CHECK (interval_end > interval_start)
);
COMMENT ON TABLE data.consumption_intervals IS
    'Current-version consumption per reading and UTC hour part; the source of agg.meter_* '
    'and agg.dimension_*.';

-- Online/offline, login, alarms, status bits: append-only.
CREATE TABLE data.device_events (
    event_id          text        NOT NULL,
    device_id         text        NOT NULL,
    kind              text        NOT NULL,
    ts                timestamptz NOT NULL,
    meter_id          text,
    fep               text        NOT NULL DEFAULT '',
    severity          text        NOT NULL DEFAULT 'info',
    attributes        jsonb       NOT NULL DEFAULT '{}',
    stored_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id, ts)
);
COMMENT ON TABLE data.device_events IS
    'Device and link events as the FEPs reported them (key event_id). Append-only.';

-- Every frame in and out, for audit and replay through a newer decoder (optional topic).
CREATE TABLE data.raw_frames (
    frame_id          text        NOT NULL,
    device_id         text        NOT NULL,
    fep               text        NOT NULL,
    service_point     text        NOT NULL,
    peer              text        NOT NULL,
    protocol          text        NOT NULL,
    direction         text        NOT NULL CHECK (direction IN ('in', 'out')),
    received_at       timestamptz NOT NULL,
    data              bytea       NOT NULL,
    valid             boolean     NOT NULL DEFAULT true,
    error             text,
    stored_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (frame_id, received_at)
);
COMMENT ON TABLE data.raw_frames IS
    'The frame archive (key frame_id): bytes as they crossed the wire. Append-only.';

-- The current version of every reading (what billing and analysts normally want).
CREATE VIEW data.validated_readings_current AS
SELECT DISTINCT ON (meter_id, register, ts) *
FROM data.validated_readings
ORDER BY meter_id, register, ts, version DESC;
COMMENT ON VIEW data.validated_readings_current IS
    'The highest version of each validated reading key.';

-- Raw data: the ingest role appends, never changes.
GRANT SELECT, INSERT ON data.device_events, data.raw_frames TO {{role.ingest}};
-- Derived data: the pipeline appends versions and edits; it replaces the interval rows of a
-- superseded version (a projection: the versions themselves are kept).
GRANT SELECT, INSERT ON data.validated_readings, data.reading_edits TO {{role.pipeline}};
GRANT SELECT, INSERT, UPDATE, DELETE ON data.consumption_intervals TO {{role.pipeline}};
GRANT SELECT ON data.validated_readings_current TO {{role.pipeline}};
GRANT SELECT ON data.validated_readings, data.validated_readings_current, data.reading_edits,
    data.consumption_intervals, data.device_events, data.raw_frames TO {{role.api}};
