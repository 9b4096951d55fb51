"""Least-privilege Redis ACL users for the roles of a tidings deployment.

Redis checks every command a script runs against the ACL of the user running it, so a
script grants nothing its caller could not do by hand: what a role may do is exactly the
set of ``(command, key)`` pairs below. Each role is an ``ACL SETUSER`` line of

* a root selector: the script commands (EVALSHA, SCRIPT LOAD/EXISTS) and the commands
  without keys every connection sends (INFO, TIME, HELLO, PING, CLIENT SETINFO), on the
  key patterns the role's scripts are *passed* (Redis checks a script's KEYS against the
  selector that allows EVALSHA), and
* one selector ``(~keys +commands)`` per key family: the commands the role's scripts and
  direct reads run on that family, and nothing else.

So a producer of ``email`` may add to the lanes of ``email`` but not read or acknowledge
them, not touch its dead-letter stream, nor any key of another queue; no role but admin
may run a server-wide command (FLUSHALL, FLUSHDB, CONFIG SET, KEYS, DEBUG, SHUTDOWN).
The key families follow :mod:`tidings.core.keys`; tests/test_security_acl.py applies every
role on a real server and checks a matrix of allowed and forbidden operations.
"""

from __future__ import annotations

import enum
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ..core.config import QUEUE_NAME_PATTERN
from ..core.errors import ValidationError

# Every connection: the handshake redis-py sends, the start-up check, the scripts' clock.
CONNECTION = ("+hello", "+ping", "+info", "+time", "+client|setinfo", "+client|setname",
              "+client|id", "+select", "+echo")
SCRIPTS = ("+evalsha", "+script|load", "+script|exists")


class Role(enum.StrEnum):
    """What a user of tidings does (``tidings acl generate --role``)."""

    PRODUCER = "producer"  # publish into its queues
    CONSUMER = "consumer"  # fetch, ack, retry, dead-letter its queues (a worker)
    SCHEDULER = "scheduler"  # schedules and campaigns, publishing into its queues
    OPERATOR = "operator"  # inspect, DLQ list/replay/purge, pause, weights, breakers
    ADMIN = "admin"  # every command on the prefix's keys; still no server-wide command


# Command sets by what is done to a kind of key.
_STREAM_READ = ("xrange", "xrevrange", "xlen", "xpending", "xinfo|groups", "xinfo|stream",
                "xinfo|consumers")
_HASH_READ = ("hget", "hmget", "hgetall", "hexists", "hlen", "hkeys")
_ZSET_READ = ("zrange", "zrangebyscore", "zscore", "zmscore", "zcard", "zcount")
_LANE_GROUP = ("xgroup|create",)

# role -> key family (a suffix of ``<prefix>:{<queue>}:``) -> commands.
_PRODUCER = {
    "high normal low": ("xadd", "xlen", *_LANE_GROUP),
    "wake": ("xadd",),
    "delayed": ("zadd", "zrange"),
    "delayed-bodies": ("hset",),
    "index": ("hset",),
    "stats": ("hincrby", "hget"),
    "config": ("hget", "hexists"),
    "idem:*": ("set", "exists", "get"),
    "fair:*": ("rpush", "llen", "hincrby"),
}
_CONSUMER = {
    # A blocked wait is one XREAD of the lanes and the wake stream: one selector for all.
    "high normal low wake": ("xread",),
    "high normal low": ("xreadgroup", "xack", "xdel", "xclaim", "xautoclaim", "xadd",
                        "xgroup|createconsumer", "xgroup|delconsumer", *_LANE_GROUP,
                        *_STREAM_READ),
    "wake": ("xadd", "xrevrange", "xlen"),
    "delayed": ("zadd", "zrem", *_ZSET_READ),
    "delayed-bodies": ("hset", "hdel", *_HASH_READ),
    "deliveries": ("hset", "hdel", "hincrby", *_HASH_READ),
    "index": ("hset", "hdel", "hget", "hmget"),
    "stats": ("hincrby", "hget", "hgetall"),
    "consumers": ("zadd", "zrem", "zremrangebyscore", *_ZSET_READ),
    "config": ("hget", "hgetall", "hexists"),
    "dlq": ("xadd",),  # dead-letters into it; never reads, replays or purges it
    "paused-keys": ("smembers", "sismember"),
    "parked:*": ("zadd", "zincrby", "zrem", "del", *_ZSET_READ),
    "fair:*": ("lpop", "rpush", "llen", "hincrby", "hget", "del"),
}
_OPERATOR = {
    "high normal low": ("xadd", "xdel", *_LANE_GROUP, *_STREAM_READ),  # replay into lanes
    "wake": ("xadd", "xlen"),
    "delayed": ("zadd", "zrem", *_ZSET_READ),  # cancel and reschedule delayed messages
    "delayed-bodies": ("hdel", *_HASH_READ),
    "deliveries": _HASH_READ,
    "index": ("hset", "hdel", *_HASH_READ),
    "stats": ("hincrby", *_HASH_READ),
    "consumers": _ZSET_READ,
    "config": ("hset", "hdel", *_HASH_READ),  # weights, pause
    "dlq": ("xdel", "xadd", *_STREAM_READ),  # list, replay, purge, re-encrypt
    "paused-keys": ("sadd", "srem", "smembers", "sismember", "scard"),
    "parked:*": ("zadd", "zrem", "del", *_ZSET_READ),
    "fair:*": ("llen", "hget", "hgetall"),
    "idem:*": ("get", "exists"),
}
_CAMPAIGN = {
    "campaign:*": ("hset", "hget", "hgetall", "hincrby", "exists", "del", "hdel", "set",
                   "zadd", "zrem", *_ZSET_READ),
}
# Keys outside a queue's slot, relative to the prefix.
_PREFIX_KEYS: dict[Role, dict[str, tuple[str, ...]]] = {
    Role.PRODUCER: {"queues": ("sadd", "sismember"),
                    "security:subject-keys": ("hsetnx", "hmget")},  # wrapped data keys
    Role.CONSUMER: {
        "queues": ("sadd", "sismember", "smembers"),
        "security:subject-keys": ("hmget",),
        "ratelimit:* concurrency:* breaker:*": (
            "hget", "hmget", "hset", "hdel", "hgetall", "hincrby", "del", "pexpire",
            "pexpireat", "persist", "zadd", "zrem", "zcard", "zrange", "zscore",
            "zremrangebyscore"),
        "flow:breakers": ("hset", "hget", "hgetall"),
        "observability:*": ("get", "set", "del", "pexpire"),
    },
    Role.SCHEDULER: {
        "queues": ("sadd", "sismember", "smembers"),
        "security:subject-keys": ("hsetnx", "hmget"),
        "{schedules}:*": ("exists", "hset", "hdel", "hincrby", "sadd", "srem", "smembers",
                          "zadd", "zrem", "del", *_HASH_READ, *_ZSET_READ),
        "campaigns": ("sadd", "srem", "smembers", "sismember"),
    },
    Role.OPERATOR: {
        "queues": ("sadd", "smembers", "sismember", "scard"),
        "breaker:*": ("del", *_HASH_READ),
        "flow:breakers": _HASH_READ,
        "campaigns": ("smembers",),
        "{schedules}:*": (*_HASH_READ, *_ZSET_READ, "smembers"),
        "security:audit": ("xadd",),  # the record of what it did (tidings.security.audit)
    },
}
_QUEUE_FAMILIES: dict[Role, dict[str, tuple[str, ...]]] = {
    Role.PRODUCER: _PRODUCER,
    Role.CONSUMER: _CONSUMER,
    Role.SCHEDULER: {**_PRODUCER, **_CAMPAIGN},
    Role.OPERATOR: _OPERATOR,
}
# Ordered queues' partitions ({<queue>#<i>}) and queue-wide keys ({<queue>#o}).
_ORDERED: dict[Role, tuple[str, ...]] = {
    Role.PRODUCER: ("rpush", "hincrby", "hget", "exists", "xadd", "hset", "llen"),
    Role.CONSUMER: ("hdel", "hget", "hmget", "hset", "hincrby", "hexists", "hgetall",
                    "lindex", "lpop", "lset", "rpush", "llen", "zadd", "zrem", "zrange",
                    "zrangebyscore", "zremrangebyscore", "zscore", "xadd", "xread", "xlen",
                    "xrevrange", "del"),
    Role.OPERATOR: ("hget", "hgetall", "hkeys", "hlen", "hdel", "hset", "hincrby", "lindex",
                    "lrange", "llen", "lset", "rpush", "zrange", "zcard", "zscore", "zrem",
                    "xrange", "xlen", "xdel", "xadd"),
}
_ORDERED[Role.SCHEDULER] = _ORDERED[Role.PRODUCER]
# Admin: every command on the prefix's keys, no server-wide one; INFO back for start-up.
_ADMIN = ("+@all", "-@dangerous", "+info", "+config|get", "+client|setinfo", "+client|id")


@dataclass(frozen=True, slots=True)
class AclUser:
    """One generated user: its name and its ``ACL SETUSER`` rules (after the name)."""

    name: str
    rules: tuple[str, ...]

    def setuser(self) -> list[str]:
        """The command, as arguments: ``["ACL", "SETUSER", name, *rules]``."""
        return ["ACL", "SETUSER", self.name, *self.rules]

    def line(self) -> str:
        """The command as one line for redis-cli (rules with a space are quoted)."""
        return " ".join(_quoted(word) for word in self.setuser())


def _quoted(word: str) -> str:
    return f'"{word}"' if any(c in word for c in ' "()') else word


def _check(prefix: str, queues: Sequence[str]) -> None:
    if not re.fullmatch(r"[A-Za-z0-9_.:\-]{1,64}", prefix):
        raise ValidationError("prefix", f"{prefix!r} is not a key prefix (letters, digits, "
                              "_ . : -)")
    for queue in queues:
        if queue != "*" and not re.fullmatch(QUEUE_NAME_PATTERN, queue):
            raise ValidationError("queue", f"{queue!r} is not a queue name "
                                  f"(pattern {QUEUE_NAME_PATTERN}) nor '*'")


def _selector(patterns: Iterable[str], commands: Iterable[str]) -> str:
    keys = " ".join(f"~{p}" for p in patterns)
    return f"({keys} -@all {' '.join('+' + c for c in commands)})"


def role_rules(role: Role | str, prefix: str, queues: Sequence[str] = ()) -> tuple[str, ...]:
    """The ACL rules (after ``ACL SETUSER name on >password``) of ``role``.

    ``queues``: the queues a producer, consumer or scheduler may use (``*``: all of them);
    an operator of no queue listed operates on every queue. Admin ignores them.
    """
    role = Role(role)
    _check(prefix, queues)
    if role is Role.ADMIN:
        return (f"~{prefix}:*", "resetchannels", *_ADMIN)
    if not queues:
        if role is not Role.OPERATOR:
            raise ValidationError("queue", f"role {role} needs at least one --queue")
        queues = ["*"]
    tags = [f"{prefix}:{{{q}}}" for q in queues]
    ordered = [f"{prefix}:{{{q}#*}}" for q in queues] if "*" not in queues else []
    root = [*(f"~{t}:*" for t in tags), *(f"~{p}:*" for p in ordered),
            "resetchannels", "-@all", *CONNECTION, *SCRIPTS]
    selectors = []
    for families, commands in _QUEUE_FAMILIES[role].items():
        patterns = [f"{t}:{family}" for t in tags for family in families.split()]
        selectors.append(_selector(patterns, commands))
    if ordered:
        selectors.append(_selector([f"{p}:*" for p in ordered], _ORDERED[role]))
    for families, commands in _PREFIX_KEYS.get(role, {}).items():
        patterns = [f"{prefix}:{family}" for family in families.split()]
        root.extend(f"~{p}" for p in patterns)  # scripts are passed them (limiters ...)
        selectors.append(_selector(patterns, commands))
    return (*root, *selectors)


def generate(role: Role | str, prefix: str, queues: Sequence[str] = (), *,
             user: str | None = None, password: str | None = None) -> tuple[AclUser, str]:
    """The user of ``role`` (named ``user``, default ``tidings-<role>``) with ``password``
    (default: a new random one); returns it and the password."""
    role = Role(role)
    password = password or secrets.token_urlsafe(24)
    name = user or f"tidings-{role}"
    rules = ("reset", "on", f">{password}", *role_rules(role, prefix, queues))
    return AclUser(name, rules), password


_UNKNOWN = re.compile(r"modifier '\+([a-z|]+)': Unknown command")


async def apply(client: Any, users: Sequence[AclUser]) -> list[str]:
    """Run each user's ``ACL SETUSER`` on ``client`` (a connection allowed to).

    A command the server does not have (CLIENT SETINFO before Redis 7.2) is left out: a
    client does without it. Returns the commands left out.
    """
    from redis.exceptions import ResponseError

    dropped: list[str] = []
    for user in users:
        rules = list(user.rules)
        while True:
            try:
                await client.execute_command("ACL", "SETUSER", user.name, *rules)
                break
            except ResponseError as exc:
                unknown = _UNKNOWN.search(str(exc))
                if unknown is None or f"+{unknown[1]}" not in rules:
                    raise
                rules.remove(f"+{unknown[1]}")
                dropped.append(unknown[1])
    return dropped
