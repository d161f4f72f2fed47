-- 001: the initial schema. The store applies this file once, inside a transaction,
-- and records it in schema_migrations.
--
-- Mode codes are smallints with the device protocol's values:
--   tmode 0 off, 1 heat, 2 cool, 3 auto; fmode 0 auto, 1 circulate, 2 on;
--   tstate 0 idle, 1 heating, 2 cooling.
-- Temperatures are degrees Fahrenheit. Every timestamp is timestamptz (UTC inside).

CREATE TABLE thermostats (
    thermostat_id    text PRIMARY KEY,              -- device uuid from GET /sys, lower case
    ip_address       text NOT NULL,                 -- IP, or IP:port when the port is not 80
    name             text NOT NULL DEFAULT '',
    model            text NOT NULL DEFAULT '',
    api_version      integer,
    fw_version       text,
    capabilities     jsonb NOT NULL DEFAULT '[]',   -- array of capability names
    discovery_method text NOT NULL DEFAULT 'static',
    active           boolean NOT NULL DEFAULT true,
    away_temp        double precision,              -- kept when a device registers again
    last_seen        timestamptz,
    first_seen       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
) WITH (fillfactor = 70);                           -- room for HOT updates of last_seen

-- The newest reading of each thermostat, rewritten on every flush. Only the primary
-- key is indexed, and fillfactor leaves room on the page, so updates stay HOT.
CREATE TABLE current_state (
    thermostat_id text PRIMARY KEY REFERENCES thermostats ON DELETE CASCADE,
    ts            timestamptz NOT NULL,
    temp          double precision,
    t_heat        double precision,
    t_cool        double precision,
    local_temp    double precision,                 -- outside temperature from the weather service
    tmode         smallint,
    fmode         smallint,
    tstate        smallint,
    fstate        boolean,
    hold          boolean,
    override      boolean
) WITH (fillfactor = 50);

-- One row per successful poll, the largest table. Columns are ordered widest first to
-- avoid alignment padding. The primary key is the only B-tree, and it also serves
-- per-thermostat history. The BRIN index on ts costs a few pages in total, and it lets
-- the rollup and retention scan a time range without a second B-tree.
CREATE TABLE raw_readings (
    ts            timestamptz NOT NULL,
    thermostat_id text NOT NULL REFERENCES thermostats ON DELETE CASCADE,
    temp          double precision,
    t_heat        double precision,
    t_cool        double precision,
    local_temp    double precision,
    tmode         smallint,
    fmode         smallint,
    tstate        smallint,
    fstate        boolean,
    hold          boolean,
    override      boolean,
    PRIMARY KEY (thermostat_id, ts)
);
CREATE INDEX raw_readings_ts_brin ON raw_readings USING brin (ts);

-- One row per failed poll (timeout, refused connection, unreadable body), so that
-- minute_readings.poll_failures counts real failures.
CREATE TABLE poll_failures (
    ts            timestamptz NOT NULL,
    thermostat_id text NOT NULL REFERENCES thermostats ON DELETE CASCADE,
    kind          text NOT NULL,
    PRIMARY KEY (thermostat_id, ts)
);
CREATE INDEX poll_failures_ts_brin ON poll_failures USING brin (ts);

-- One row per thermostat and closed minute, written by the rollup.
CREATE TABLE minute_readings (
    thermostat_id        text NOT NULL REFERENCES thermostats ON DELETE CASCADE,
    minute_ts            timestamptz NOT NULL,      -- start of the minute
    temp_avg             double precision,          -- mean of non-null temps
    t_heat_last          double precision,          -- latest non-null value in the minute
    t_cool_last          double precision,
    local_temp_avg       double precision,
    hvac_runtime_percent double precision,          -- share of polls heating or cooling, 0.1 steps
    tmode_last           smallint,
    poll_count           integer NOT NULL,          -- successful polls
    poll_failures        integer NOT NULL,          -- failed polls
    PRIMARY KEY (thermostat_id, minute_ts)
);

-- What was last applied to each thermostat, and when. Written by the command feature.
CREATE TABLE device_config (
    thermostat_id     text PRIMARY KEY REFERENCES thermostats ON DELETE CASCADE,
    tmode             smallint,
    tmode_applied_at  timestamptz,
    t_heat            double precision,
    t_heat_applied_at timestamptz,
    t_cool            double precision,
    t_cool_applied_at timestamptz,
    fmode             smallint,
    fmode_applied_at  timestamptz,
    hold              boolean,
    hold_applied_at   timestamptz,
    source            text,                         -- who applied it: local API, public server
    updated_at        timestamptz NOT NULL DEFAULT now()
);

-- Progress markers of the cloud sync, by name.
CREATE TABLE sync_checkpoints (
    name       text PRIMARY KEY,
    ts         timestamptz NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- The store's own progress markers: 'rollup' is the start of the last rolled-up minute,
-- 'retention' the time of the last completed retention run.
CREATE TABLE maintenance_state (
    name       text PRIMARY KEY,
    ts         timestamptz NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
