-- The ledger: one row per message (its current state) and the history of its events.
-- Both are partitioned by the message's day (from its ULID), so retention drops a day's
-- partitions instead of deleting rows, and a trace by message id reads one partition.
-- Day partitions are created by the writer as days appear; older rows that reach a dropped
-- day land in the default partition, which retention empties by date.
CREATE TABLE IF NOT EXISTS messages (
    day date NOT NULL,
    message_id text NOT NULL,
    queue text NOT NULL,
    state text NOT NULL,
    priority text,
    attempts integer NOT NULL DEFAULT 0,
    correlation_id text,
    idempotency_key text,
    subject text,
    publisher text,
    consumer text,
    payload jsonb,
    payload_hash text,
    reason text,
    error text,
    published_at timestamptz,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (day, message_id)
) PARTITION BY RANGE (day);
CREATE TABLE IF NOT EXISTS messages_default PARTITION OF messages DEFAULT;
CREATE INDEX IF NOT EXISTS messages_message_id ON messages (message_id);
CREATE INDEX IF NOT EXISTS messages_correlation ON messages (correlation_id)
    WHERE correlation_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS messages_idempotency ON messages (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS messages_subject ON messages (subject) WHERE subject IS NOT NULL;

CREATE TABLE IF NOT EXISTS events (
    day date NOT NULL,
    message_id text NOT NULL,
    event_id bigint NOT NULL,
    kind text NOT NULL,
    queue text NOT NULL,
    at timestamptz NOT NULL,
    attempt integer NOT NULL DEFAULT 0,
    actor text,
    duration double precision,
    delay double precision,
    reason text,
    error text
) PARTITION BY RANGE (day);
CREATE TABLE IF NOT EXISTS events_default PARTITION OF events DEFAULT;
CREATE INDEX IF NOT EXISTS events_message ON events (message_id, at);
-- A batch replayed from the Redis spill stream after a crash is written once.
CREATE UNIQUE INDEX IF NOT EXISTS events_unique ON events (day, event_id);
