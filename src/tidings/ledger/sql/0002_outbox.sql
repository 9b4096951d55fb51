-- The transactional outbox: rows written in the caller's transaction, moved to Redis by a
-- relay (FOR UPDATE SKIP LOCKED), the row id as the idempotency key of the publish.
CREATE TABLE IF NOT EXISTS outbox (
    id bigserial PRIMARY KEY,
    queue text NOT NULL,
    payload jsonb NOT NULL,
    priority text NOT NULL DEFAULT 'normal',
    headers jsonb,
    idempotency_key text,
    delay_ms bigint,
    subject text,
    created_at timestamptz NOT NULL DEFAULT now(),
    sent_at timestamptz,
    message_id text,
    error text
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (id) WHERE sent_at IS NULL AND error IS NULL;
CREATE INDEX IF NOT EXISTS outbox_subject ON outbox (subject) WHERE subject IS NOT NULL;

CREATE OR REPLACE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(TG_TABLE_SCHEMA || '_outbox', '');
    RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS outbox_notify ON outbox;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();
