-- The audit trail: append-only, hash-chained (each row holds the hash of the one before);
-- audit_head holds the last row's id and hash (a deleted last row is then seen too) and
-- the anchor retention leaves when it removes the oldest rows.
CREATE TABLE IF NOT EXISTS audit (
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL,
    actor text NOT NULL,
    action text NOT NULL,
    target text,
    params jsonb NOT NULL DEFAULT '{}',
    origin text,
    prev_hash text NOT NULL,
    hash text NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_at ON audit (at);
CREATE INDEX IF NOT EXISTS audit_actor ON audit (actor, at);
CREATE INDEX IF NOT EXISTS audit_target ON audit (target, at);
CREATE TABLE IF NOT EXISTS audit_head (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    last_id bigint NOT NULL DEFAULT 0,
    last_hash text NOT NULL DEFAULT '',
    anchor_id bigint NOT NULL DEFAULT 0,
    anchor_hash text NOT NULL DEFAULT ''
);
INSERT INTO audit_head (one) VALUES (true) ON CONFLICT DO NOTHING;
-- Appending is the only write: edits and deletes are refused (retention lifts this for
-- its own transaction by setting tidings.audit_retention).
CREATE OR REPLACE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('tidings.audit_retention', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'the audit trail is append-only (% refused)', TG_OP;
END $$;
DROP TRIGGER IF EXISTS audit_append_only ON audit;
CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();

-- Which day partitions have been archived (retention archives before it drops).
CREATE TABLE IF NOT EXISTS archived_days (
    day date NOT NULL,
    queue text NOT NULL,
    object_key text NOT NULL,
    rows integer NOT NULL,
    archived_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (day, queue)
);
