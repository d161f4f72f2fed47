-- 004: raw_readings drops its foreign key to thermostats. The key made every flush lock
-- the row of each thermostat it wrote for, about 54 WAL bytes per reading on an SD card.
-- The store inserts only readings of known thermostats (WHERE EXISTS), and the daemon
-- never deletes a thermostat. Raw rows of a thermostat removed by hand stay until
-- retention.raw_days removes them.
ALTER TABLE raw_readings DROP CONSTRAINT IF EXISTS raw_readings_thermostat_id_fkey;
