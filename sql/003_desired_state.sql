-- 003: device_config holds the desired state of each thermostat: the commanded settings
-- (columns of 001), who commanded them and when, what the unit last reported back, the
-- drift policy, and whether the unit keeps its settings. Drift and re-apply events get their
-- own table; they also reach the public server as state changes with their change_type.

ALTER TABLE device_config
    ADD COLUMN commanded_at      timestamptz,       -- when source last commanded a setting
    ADD COLUMN reported          jsonb,             -- the unit's settings at the last event
    ADD COLUMN reported_at       timestamptz,
    ADD COLUMN policy            text CHECK (policy IN ('enforce', 'report', 'off')),
    ADD COLUMN holding_settings  boolean NOT NULL DEFAULT true,
    ADD COLUMN reapply_failures  integer NOT NULL DEFAULT 0;

-- source now also takes 'wall': a change at the wall is kept as the desired state.
COMMENT ON COLUMN device_config.source IS
    'who commanded the desired state: public_server, local_api, cli, defaults or wall';
COMMENT ON COLUMN device_config.policy IS
    'drift policy from [thermostats]; NULL until the daemon starts with the thermostat known';

-- kind: wall_change, device_reset, write_dropped, clock_jump, reapplied, not_holding.
CREATE TABLE desired_events (
    id            bigserial PRIMARY KEY,
    thermostat_id text NOT NULL REFERENCES thermostats ON DELETE CASCADE,
    ts            timestamptz NOT NULL,
    kind          text NOT NULL,
    fields        text[] NOT NULL,                  -- the commanded fields concerned
    reported      jsonb NOT NULL,                   -- the unit's settings at ts
    UNIQUE (thermostat_id, ts, kind)
);
CREATE INDEX desired_events_by_thermostat ON desired_events (thermostat_id, ts);
