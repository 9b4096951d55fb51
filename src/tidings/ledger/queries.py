"""Every SQL statement of the ledger, outbox, audit trail and retention, in one place.

Tables are named bare: the pool's ``search_path`` is the tidings schema (:mod:`.db`).
"""

from __future__ import annotations

from datetime import date, timedelta


def partition_name(table: str, day: date) -> str:
    return f"{table}_{day:%Y%m%d}"


def create_partition(table: str, day: date) -> str:
    """The day partition of ``table`` (``messages`` or ``events``) for ``day``."""
    return (f"CREATE TABLE IF NOT EXISTS {partition_name(table, day)} PARTITION OF {table} "
            f"FOR VALUES FROM ('{day.isoformat()}') TO ('{(day + timedelta(days=1)).isoformat()}')")


LIST_PARTITIONS = """
SELECT c.relname FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent
JOIN pg_namespace n ON n.oid = p.relnamespace
WHERE p.relname = $1 AND n.nspname = current_schema()
"""

# The current state of each message of a batch; a fact already known is kept, a later
# state replaces an earlier one (events of one message come from several processes).
UPSERT_MESSAGES = """
INSERT INTO messages (day, message_id, queue, state, priority, attempts, correlation_id,
    idempotency_key, subject, publisher, consumer, payload, payload_hash, reason, error,
    published_at, updated_at)
SELECT * FROM unnest($1::date[], $2::text[], $3::text[], $4::text[], $5::text[],
    $6::int[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::jsonb[],
    $13::text[], $14::text[], $15::text[], $16::timestamptz[], $17::timestamptz[])
ON CONFLICT (day, message_id) DO UPDATE SET
    state = CASE WHEN EXCLUDED.updated_at >= messages.updated_at AND (
                 EXCLUDED.state <> 'published' OR messages.state = 'published')
            THEN EXCLUDED.state ELSE messages.state END,
    reason = CASE WHEN EXCLUDED.updated_at >= messages.updated_at
             THEN EXCLUDED.reason ELSE messages.reason END,
    error = CASE WHEN EXCLUDED.updated_at >= messages.updated_at
            THEN EXCLUDED.error ELSE messages.error END,
    attempts = GREATEST(messages.attempts, EXCLUDED.attempts),
    priority = COALESCE(messages.priority, EXCLUDED.priority),
    correlation_id = COALESCE(messages.correlation_id, EXCLUDED.correlation_id),
    idempotency_key = COALESCE(messages.idempotency_key, EXCLUDED.idempotency_key),
    subject = COALESCE(messages.subject, EXCLUDED.subject),
    publisher = COALESCE(messages.publisher, EXCLUDED.publisher),
    consumer = COALESCE(EXCLUDED.consumer, messages.consumer),
    payload = COALESCE(messages.payload, EXCLUDED.payload),
    payload_hash = COALESCE(messages.payload_hash, EXCLUDED.payload_hash),
    published_at = COALESCE(messages.published_at, EXCLUDED.published_at),
    updated_at = GREATEST(messages.updated_at, EXCLUDED.updated_at)
"""

INSERT_EVENTS_ONCE = """
INSERT INTO events (day, message_id, event_id, kind, queue, at, attempt, actor, duration,
    delay, reason, error)
SELECT * FROM unnest($1::date[], $2::text[], $3::bigint[], $4::text[], $5::text[],
    $6::timestamptz[], $7::int[], $8::text[], $9::float8[], $10::float8[], $11::text[],
    $12::text[])
ON CONFLICT DO NOTHING
"""

MESSAGE_FIELDS = """day, message_id, queue, state, priority, attempts, correlation_id,
    idempotency_key, subject, publisher, consumer, payload, payload_hash, reason, error,
    published_at, updated_at"""

MESSAGE_BY_ID = f"SELECT {MESSAGE_FIELDS} FROM messages WHERE day = $1 AND message_id = $2"
MESSAGES_BY = {
    "correlation_id": f"SELECT {MESSAGE_FIELDS} FROM messages WHERE correlation_id = $1 "
                      "ORDER BY message_id LIMIT $2",
    "idempotency_key": f"SELECT {MESSAGE_FIELDS} FROM messages WHERE idempotency_key = $1 "
                       "ORDER BY message_id LIMIT $2",
    "subject": f"SELECT {MESSAGE_FIELDS} FROM messages WHERE subject = $1 "
               "ORDER BY message_id LIMIT $2",
}
EVENTS_OF = """
SELECT e.message_id, e.kind, e.queue, e.at, e.attempt, e.actor, e.duration, e.delay, e.reason,
    e.error
FROM events e JOIN unnest($1::date[], $2::text[]) AS m(day, message_id)
    ON e.day = m.day AND e.message_id = m.message_id
ORDER BY e.message_id, e.at, e.event_id
"""
