-- On TimescaleDB raw readings are a hypertable with one-day chunks: a day of 100,000 meters
-- at hourly resolution is 2.4 M rows (~300 MB with indexes), which fits memory comfortably.
SELECT create_hypertable('data.raw_readings', by_range('ts', INTERVAL '1 day'),
                         migrate_data => true);
SELECT create_hypertable('data.raw_reading_conflicts', by_range('ts', INTERVAL '7 days'),
                         migrate_data => true);
