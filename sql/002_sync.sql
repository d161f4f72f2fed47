-- 002: the public server sync: the state-change outbox, parked payloads, the command
-- log and the command result outbox. Every table here commits durably, except the
-- state-change rows, which share the transaction (and its synchronous_commit = off)
-- of the readings they belong to.

-- One row per reading that carried a state change (not the first reading after
-- start-up: the 30 s snapshot reports that state). acked_at is set after a 2xx response.
-- Retention deletes rows older than the raw readings' limit, sent or not.
CREATE TABLE sync_outbox (
    id            bigserial PRIMARY KEY,
    thermostat_id text NOT NULL,
    ts            timestamptz NOT NULL,
    payload       jsonb NOT NULL,                   -- one reading of POST /status
    acked_at      timestamptz,
    UNIQUE (thermostat_id, ts)
);
-- Pending rows are read oldest reading first, or newest first while a backlog drains.
CREATE INDEX sync_outbox_pending ON sync_outbox (ts, id) WHERE acked_at IS NULL;

-- Keyset position of the minute upload: minute rows up to (ts, last_key) were
-- acknowledged. Rows of sync_checkpoints written before this migration keep ''.
ALTER TABLE sync_checkpoints ADD COLUMN last_key text NOT NULL DEFAULT '';

-- Payloads that the public server rejected with a 4xx other than 401, 403 and 429.
-- They are kept for an operator and never sent again.
CREATE TABLE sync_parked (
    id        bigserial PRIMARY KEY,
    endpoint  text NOT NULL,                        -- path under the site, e.g. /minute
    payload   jsonb NOT NULL,
    status    integer NOT NULL,                     -- HTTP status of the rejection
    reason    text NOT NULL,                        -- the response body, cut to 1000 chars
    parked_at timestamptz NOT NULL DEFAULT now()
);

-- Every command received from the public server, keyed by its id, so that a command
-- delivered twice runs once. status is 'running' until the final result is stored.
CREATE TABLE sync_commands (
    command_id    text PRIMARY KEY,
    command       text NOT NULL,
    thermostat_id text,
    params        jsonb NOT NULL DEFAULT '{}',
    issued_at     text,
    received_at   timestamptz NOT NULL DEFAULT now(),
    status        text NOT NULL,                    -- running, completed, failed, rejected
    result        jsonb,                            -- the final result entry as sent
    finished_at   timestamptz
);

-- Results waiting for POST /commands/results, oldest first; deleted after a 2xx response.
CREATE TABLE sync_result_outbox (
    id         bigserial PRIMARY KEY,
    command_id text NOT NULL,
    entry      jsonb NOT NULL,                      -- one element of "results"
    created_at timestamptz NOT NULL DEFAULT now()
);
