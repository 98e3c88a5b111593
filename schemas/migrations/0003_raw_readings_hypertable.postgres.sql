-- Plain PostgreSQL: raw readings stay an ordinary table; a BRIN index on ts keeps time-range
-- scans cheap without the cost of a B-tree on a large append-only table.
CREATE INDEX raw_readings_ts_brin ON data.raw_readings USING brin (ts);
