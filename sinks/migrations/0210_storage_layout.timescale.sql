-- TimescaleDB layout of the sink's tables: hypertables, chunk intervals, compression.
--
-- Chunk intervals aim at a chunk (with its indexes) that fits comfortably in memory while it
-- is being written, at the reference scale of 100,000 meters read hourly:
--   1 day   readings, intervals, frames, charges and their segments: ~2.4 M rows a day each
--           (~300-500 MB with indexes); a day is also the unit a late-data refresh touches.
--   7 days  device events and balance movements: a few per device or account a day.
--   30 days edits, settlements (~100,000 a day with their revisions), top-ups, alerts,
--           command results: small, mostly queried by month.
-- Compression (columnstore) starts only past the late-data window plus a margin, because
-- late readings, new versions and INSERT ... ON CONFLICT should never meet a compressed
-- chunk (its DML paths have a long bug history). Retention is set at run time from the
-- storage settings (`unimeter storage policies`), not here.

SELECT create_hypertable('data.validated_readings', by_range('ts', INTERVAL '1 day'));
SELECT create_hypertable('data.consumption_intervals',
                         by_range('interval_start', INTERVAL '1 day'));
SELECT create_hypertable('data.reading_edits', by_range('ts', INTERVAL '30 days'));
SELECT create_hypertable('data.device_events', by_range('ts', INTERVAL '7 days'));
SELECT create_hypertable('data.raw_frames', by_range('received_at', INTERVAL '1 day'));
SELECT create_hypertable('billing.charges', by_range('period_start', INTERVAL '1 day'));
SELECT create_hypertable('billing.charge_segments', by_range('accounted_at', INTERVAL '1 day'));
SELECT create_hypertable('billing.settlements', by_range('period_start', INTERVAL '30 days'));
SELECT create_hypertable('billing.settlement_segments',
                         by_range('period_start', INTERVAL '30 days'));
SELECT create_hypertable('billing.balance_changes', by_range('ts', INTERVAL '7 days'));
SELECT create_hypertable('billing.topups', by_range('ts', INTERVAL '30 days'));
SELECT create_hypertable('ops.alerts', by_range('ts', INTERVAL '30 days'));
SELECT create_hypertable('ops.command_results', by_range('ts', INTERVAL '30 days'));

CREATE INDEX device_events_device ON data.device_events (device_id, ts DESC);
CREATE INDEX charges_account ON billing.charges (account_id, period_start DESC);
CREATE INDEX balance_changes_account ON billing.balance_changes (account_id, ts DESC);
CREATE INDEX alerts_object ON ops.alerts (object_id, ts DESC);
CREATE INDEX command_results_command ON ops.command_results (command_id, ts DESC);

ALTER TABLE data.raw_readings SET (timescaledb.compress,
    timescaledb.compress_segmentby = 'meter_id', timescaledb.compress_orderby = 'register, ts');
ALTER TABLE data.validated_readings SET (timescaledb.compress,
    timescaledb.compress_segmentby = 'meter_id',
    timescaledb.compress_orderby = 'register, ts, version');
ALTER TABLE data.consumption_intervals SET (timescaledb.compress,
    timescaledb.compress_segmentby = 'meter_id',
    timescaledb.compress_orderby = 'register, reading_ts, interval_start');
ALTER TABLE data.raw_frames SET (timescaledb.compress,
    timescaledb.compress_segmentby = 'device_id', timescaledb.compress_orderby = 'received_at');
ALTER TABLE data.device_events SET (timescaledb.compress,
    timescaledb.compress_segmentby = 'device_id', timescaledb.compress_orderby = 'ts');
ALTER TABLE billing.charges SET (timescaledb.compress,
    timescaledb.compress_segmentby = 'account_id', timescaledb.compress_orderby = 'period_start');
ALTER TABLE billing.charge_segments SET (timescaledb.compress,
    timescaledb.compress_segmentby = 'account_id', timescaledb.compress_orderby = 'accounted_at');

SELECT add_compression_policy('data.raw_readings',
                              compress_after => INTERVAL '{{late_data_days}} days' + INTERVAL '3 days');
SELECT add_compression_policy('data.validated_readings',
                              compress_after => INTERVAL '{{late_data_days}} days' + INTERVAL '3 days');
SELECT add_compression_policy('data.consumption_intervals',
                              compress_after => INTERVAL '{{late_data_days}} days' + INTERVAL '3 days');
SELECT add_compression_policy('data.raw_frames',
                              compress_after => INTERVAL '{{late_data_days}} days' + INTERVAL '3 days');
SELECT add_compression_policy('data.device_events',
                              compress_after => INTERVAL '{{late_data_days}} days' + INTERVAL '14 days');
SELECT add_compression_policy('billing.charges',
                              compress_after => INTERVAL '{{late_data_days}} days' + INTERVAL '3 days');
SELECT add_compression_policy('billing.charge_segments',
                              compress_after => INTERVAL '{{late_data_days}} days' + INTERVAL '3 days');
