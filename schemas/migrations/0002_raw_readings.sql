-- Raw readings exactly as decoded: immutable (the ingest role may insert, never change).
-- Natural key (meter_id, register, ts): a re-sent reading is absorbed by ON CONFLICT; a
-- different value for an existing key is kept in raw_reading_conflicts, never overwritten.
CREATE TABLE data.raw_readings (
    meter_id     text        NOT NULL,
    register     text        NOT NULL,
    ts           timestamptz NOT NULL,
    value        numeric     NOT NULL,
    unit         text        NOT NULL,
    kind         text        NOT NULL DEFAULT 'cumulative',
    interval_s   integer,
    meter_clock  timestamptz,
    received_at  timestamptz NOT NULL,
    source       text        NOT NULL DEFAULT '',
    device_id    text        NOT NULL DEFAULT '',
    fep          text        NOT NULL DEFAULT '',
    protocol     text        NOT NULL DEFAULT '',
    status       text[]      NOT NULL DEFAULT '{}',
    frame_id     text,
    stored_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (meter_id, register, ts)
);
COMMENT ON TABLE data.raw_readings IS
    'Readings as decoded from devices, before VEE. Immutable; key (meter_id, register, ts).';

CREATE TABLE data.raw_reading_conflicts (
    meter_id     text        NOT NULL,
    register     text        NOT NULL,
    ts           timestamptz NOT NULL,
    value        numeric     NOT NULL,
    stored_value numeric     NOT NULL,
    unit         text        NOT NULL,
    received_at  timestamptz NOT NULL,
    source       text        NOT NULL DEFAULT '',
    frame_id     text,
    stored_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (meter_id, register, ts, value)
);
COMMENT ON TABLE data.raw_reading_conflicts IS
    'A second, different value for an existing raw reading key: kept, flagged, never applied.';

GRANT SELECT, INSERT ON data.raw_readings, data.raw_reading_conflicts TO {{role.ingest}};
GRANT SELECT ON data.raw_readings, data.raw_reading_conflicts
    TO {{role.pipeline}}, {{role.api}}, {{role.analyst}};
