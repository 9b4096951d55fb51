"""The key space: every Redis key tidings writes, by name, under one prefix.

Every key of one queue shares the hash tag ``{name}`` (one cluster slot per queue), every
key of one ordered partition ``{name#i}``, every key of one named limiter ``{name}``, so
each script touches one slot. The Lua scripts receive a queue's keys (and a partition's)
in a fixed order and name them in ``lua/includes/common.lua`` (``ordered.lua``); the field
order of :class:`QueueKeys` and :class:`PartitionKeys` is that order, and a test holds the
Python and the Lua names together.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from .errors import ValidationError

GROUP = "tidings"  # the consumer group of every lane stream
LANE_NAMES = ("high", "normal", "low")


@dataclass(frozen=True, slots=True)
class QueueKeys:
    """The keys of one queue, in the order every queue script receives them."""

    high: str  # lane streams, consumer group GROUP
    normal: str
    low: str
    delayed: str  # zset msg id -> due ms (server clock)
    delayed_bodies: str  # hash msg id -> lane|expires|envelope
    dlq: str  # dead-letter stream
    deliveries: str  # hash lane+entry id -> delivery count (the lease token)
    index: str  # hash msg id -> where the message is now
    stats: str  # hash of counters
    wake: str  # stream that wakes blocked workers when an earlier delayed message arrives
    consumers: str  # zset consumer -> last heartbeat ms
    config: str  # hash of run-time settings (weights, pause)
    tag: str = field(compare=False)  # "<prefix>:{<name>}", the prefix of the queue's other keys
    script_keys: tuple[str, ...] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "script_keys", tuple(getattr(self, n) for n in QUEUE_KEY_ORDER))

    @classmethod
    def of(cls, prefix: str, name: str) -> QueueKeys:
        tag = f"{prefix}:{{{name}}}"
        names = {n: f"{tag}:{n.replace('_', '-')}" for n in QUEUE_KEY_ORDER}
        return cls(**names, tag=tag)

    @property
    def lanes(self) -> tuple[str, str, str]:
        return self.high, self.normal, self.low

    def lane(self, index: int) -> str:
        return self.lanes[index]

    def idempotency(self, key: str) -> str:
        return f"{self.tag}:idem:{key}"

    @property
    def idempotency_prefix(self) -> str:
        return f"{self.tag}:idem:"

    # Keys of flow control and campaigns that live in the queue's slot.
    @property
    def paused_keys(self) -> str:
        return f"{self.tag}:paused-keys"

    def parked(self, key: str) -> str:
        return f"{self.tag}:parked:{key}"

    def fair_ready(self, lane: int) -> str:
        return f"{self.tag}:fair:ready:{lane}"

    def fair_line_prefix(self, lane: int) -> str:
        return f"{self.tag}:fair:line:{lane}:"

    def campaign(self, campaign_id: str) -> CampaignKeys:
        base = f"{self.tag}:campaign:{campaign_id}"
        return CampaignKeys(base, f"{base}:pending", f"{base}:slots", f"{base}:held")


QUEUE_KEY_ORDER = tuple(f.name for f in fields(QueueKeys) if f.name not in ("tag", "script_keys"))


@dataclass(frozen=True, slots=True)
class CampaignKeys:
    """One campaign's keys, in its queue's slot (its scripts run with the queue's keys)."""

    record: str  # hash: spec, counters, cursor
    pending: str  # zset of the campaign's messages still in the delayed set
    slots: str  # hash of the release throttle's per-minute counts
    held: str  # zset msg id -> due ms of the messages a pause took out of the delayed set


@dataclass(frozen=True, slots=True)
class PartitionKeys:
    """The keys of one ordered-queue partition, in the order its scripts receive them."""

    owner: str  # hash: worker, epoch, lease expiry
    ready: str  # list of keys whose head may run now
    active: str  # hash key -> "epoch|msg id" of its head in flight
    waiting: str  # zset key -> due ms (a head waiting out a retry)
    blocked: str  # hash key -> JSON (a failed head)
    deliveries: str  # hash msg id -> unsettled deliveries (poison detection)
    dlq: str  # dead-letter stream
    stats: str  # hash of counters
    list_prefix: str = field(compare=False)  # a key's message list is list_prefix + key
    script_keys: tuple[str, ...] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "script_keys",
                           tuple(getattr(self, n) for n in PARTITION_KEY_ORDER))

    def list_key(self, key: str) -> str:
        return self.list_prefix + key


PARTITION_KEY_ORDER = tuple(f.name for f in fields(PartitionKeys)
                            if f.name not in ("list_prefix", "script_keys"))


@dataclass(frozen=True, slots=True)
class OrderedKeys:
    """The queue-wide keys of an ordered queue (its own slot ``{name#o}``)."""

    members: str  # zset worker -> heartbeat
    wake: str  # stream that wakes idle owners
    meta: str  # hash: partition count


@dataclass(frozen=True, slots=True)
class ScheduleKeys:
    """The schedule store, in one slot ``{schedules}``."""

    due: str  # zset schedule id -> next fire ms
    ids: str  # set of schedule ids
    record_prefix: str  # hash per schedule: record_prefix + id

    def record(self, schedule_id: str) -> str:
        return self.record_prefix + schedule_id


@dataclass(frozen=True, slots=True)
class RouteKeys:
    """The routing rule store, in one slot ``{routes}`` (tidings.routing)."""

    version: str  # string: the current rule set's version (absent: 0, no rules)
    rules: str  # string: the current rule set, JSON
    history: str  # hash version -> rule set JSON (for history and rollback)
    audit: str  # stream: who changed what, when
    stats: str  # hash of routing counters (routed, unrouted, filter errors, by binding)
    channel: str  # pub/sub channel told of every saved version


class KeySpace:
    """Every key family under one prefix (``TIDINGS_KEY_PREFIX``)."""

    __slots__ = ("prefix",)

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def queue(self, name: str) -> QueueKeys:
        return QueueKeys.of(self.prefix, name)

    @property
    def queue_registry(self) -> str:
        """Set of the names of every queue declared against this prefix."""
        return f"{self.prefix}:queues"

    def limiter(self, kind: str, name: str) -> str:
        """The key of one named limiter (``ratelimit``, ``concurrency``, ``breaker``).

        The name is the Cluster hash tag, so one slot per name; an empty tag would make
        Redis hash the whole key, hence the check.
        """
        if not name:
            raise ValidationError("name", "must not be empty")
        return f"{self.prefix}:{kind}:{{{name}}}"

    @property
    def breaker_registry(self) -> str:
        """Hash of breaker name -> configuration JSON, written by workers for the CLI."""
        return f"{self.prefix}:flow:breakers"

    @property
    def fleet_reporter(self) -> str:
        """The lease of the one worker that reports fleet-wide metrics (observability)."""
        return f"{self.prefix}:observability:fleet-reporter"

    def analytics(self, name: str) -> str:
        """The stream the analytics hook writes lifecycle events to."""
        if not name:
            raise ValidationError("analytics_stream", "must not be empty")
        return f"{self.prefix}:analytics:{name}"

    @property
    def ledger_spill(self) -> str:
        """The stream holding ledger events while PostgreSQL is down (tidings.ledger)."""
        return f"{self.prefix}:ledger:spill"

    @property
    def tokens(self) -> str:
        """Hash of API token id -> its record (name, scopes, expiry, the secret's hash)."""
        return f"{self.prefix}:security:tokens"

    @property
    def audit(self) -> str:
        """The audit stream of management operations (until the ledger's audit trail)."""
        return f"{self.prefix}:security:audit"

    @property
    def schedules(self) -> ScheduleKeys:
        tag = f"{self.prefix}:{{schedules}}"
        return ScheduleKeys(f"{tag}:due", f"{tag}:ids", f"{tag}:s:")

    @property
    def routes(self) -> RouteKeys:
        tag = f"{self.prefix}:{{routes}}"
        return RouteKeys(f"{tag}:version", f"{tag}:rules", f"{tag}:history", f"{tag}:audit",
                         f"{tag}:stats", f"{self.prefix}:routes:changed")

    def webhook_endpoint(self, subscriber: str) -> str:
        """Hash of one subscriber's webhook endpoint: url, secrets, failures, disabled
        (tidings.integrations.webhook_endpoints); its own slot ``{subscriber}``."""
        if not subscriber:
            raise ValidationError("subscriber", "must not be empty")
        return f"{self.prefix}:webhooks:{{{subscriber}}}"

    @property
    def webhook_subscribers(self) -> str:
        """Set of the subscribers with a registered webhook endpoint."""
        return f"{self.prefix}:webhooks"

    @property
    def campaign_registry(self) -> str:
        return f"{self.prefix}:campaigns"

    def ordered(self, name: str) -> OrderedKeys:
        tag = f"{self.prefix}:{{{name}#o}}"
        return OrderedKeys(f"{tag}:members", f"{tag}:wake", f"{tag}:meta")

    def partition(self, name: str, index: int) -> PartitionKeys:
        tag = f"{self.prefix}:{{{name}#{index}}}"
        return PartitionKeys(**{n: f"{tag}:{n}" for n in PARTITION_KEY_ORDER},
                             list_prefix=f"{tag}:k:")
