-- The per-meter hourly level is as large as its source (one row per meter and hour); looking
-- it up by account is rare (billing reads days and months), so its account index is not
-- worth maintaining on every refresh. Days and months keep theirs.
DROP INDEX agg.meter_consumption_hourly_account_id;
