-- Plain-PostgreSQL layout of the sink's tables: ordinary tables with BRIN indexes on their
-- time columns (time-range scans stay cheap on large append-mostly tables without the
-- insert cost of another B-tree), and the same secondary indexes as on TimescaleDB.
-- Retention is applied by `unimeter storage policies` with batched deletes.

CREATE INDEX validated_readings_ts_brin ON data.validated_readings USING brin (ts);
CREATE INDEX consumption_intervals_start_brin ON data.consumption_intervals
    USING brin (interval_start) WITH (pages_per_range = 32);
CREATE INDEX reading_edits_ts_brin ON data.reading_edits USING brin (ts);
CREATE INDEX raw_frames_received_brin ON data.raw_frames USING brin (received_at);
CREATE INDEX charges_period_brin ON billing.charges USING brin (period_start);
CREATE INDEX charge_segments_accounted_brin ON billing.charge_segments USING brin (accounted_at);
CREATE INDEX settlements_period_brin ON billing.settlements USING brin (period_start);
CREATE INDEX settlement_segments_period_brin ON billing.settlement_segments
    USING brin (period_start);
CREATE INDEX balance_changes_ts_brin ON billing.balance_changes USING brin (ts);
CREATE INDEX topups_ts_brin ON billing.topups USING brin (ts);
CREATE INDEX alerts_ts_brin ON ops.alerts USING brin (ts);
CREATE INDEX command_results_ts_brin ON ops.command_results USING brin (ts);

CREATE INDEX device_events_device ON data.device_events (device_id, ts DESC);
CREATE INDEX charges_account ON billing.charges (account_id, period_start DESC);
CREATE INDEX balance_changes_account ON billing.balance_changes (account_id, ts DESC);
CREATE INDEX alerts_object ON ops.alerts (object_id, ts DESC);
CREATE INDEX command_results_command ON ops.command_results (command_id, ts DESC);
