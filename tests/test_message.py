"""Envelope encoding, validation and the unit-level pieces of retry and allocation."""

from __future__ import annotations

import random
from datetime import datetime

import msgpack
import pytest

from tidings import ConfigError, Priority, RetryPolicy, ValidationError
from tidings.allocation import LaneAllocator, parse_weights
from tidings.config import build_queue_config
from tidings.message import Message, decode, encode


def test_envelope_round_trip_keeps_every_field() -> None:
    msg = Message("01J", "email", {"to": "a@b.c", "n": [1, 2.5, None]}, {"correlation_id": "c1"},
                  Priority.HIGH, "order-42", 2, 1700000000000, 1700000001000, 1700000002000, 7)
    back = decode(encode(msg))
    assert (back.id, back.queue, back.payload, back.headers, back.priority) == (
        "01J", "email", {"to": "a@b.c", "n": [1, 2.5, None]}, {"correlation_id": "c1"},
        Priority.HIGH)
    assert (back.idempotency_key, back.attempts, back.created_at_ms, back.not_before_ms,
            back.expires_at_ms, back.max_attempts) == ("order-42", 2, 1700000000000,
                                                      1700000001000, 1700000002000, 7)


def test_bytes_payload_survives() -> None:
    assert decode(encode(Message("1", "q", b"\x00\xffraw"))).payload == b"\x00\xffraw"


def test_decoder_ignores_fields_added_by_a_newer_producer() -> None:
    raw = msgpack.packb({"v": 2, "id": "x", "q": "email", "p": 1, "new_field": {"a": 1}})
    msg = decode(raw)
    assert (msg.id, msg.payload, msg.priority, msg.attempts) == ("x", 1, Priority.NORMAL, 0)


@pytest.mark.parametrize("raw", [b"\xc1garbage", msgpack.packb([1, 2]), msgpack.packb({"id": 1})])
def test_decoder_rejects_what_is_not_an_envelope(raw: bytes) -> None:
    with pytest.raises(ValueError, match="undecodable"):
        decode(raw)


def test_unserializable_payload_names_the_field() -> None:
    with pytest.raises(ValidationError) as info:
        encode(Message("1", "q", {"when": datetime(2026, 1, 1)}))
    assert info.value.field == "payload"


@pytest.mark.parametrize("value", ["urgent", 5, -1, None, True])
def test_bad_priority_names_the_field(value: object) -> None:
    with pytest.raises(ValidationError) as info:
        Priority.parse(value)  # type: ignore[arg-type]
    assert info.value.field == "priority"


def test_priority_accepts_names_and_lane_numbers() -> None:
    assert Priority.parse("HIGH") is Priority.HIGH
    assert Priority.parse(2) is Priority.LOW


def test_backoff_grows_exponentially_to_the_cap_with_bounded_jitter() -> None:
    policy = RetryPolicy(base=1, factor=2, cap=10, jitter=0.2)
    rng = random.Random(1)
    for attempt, expected in [(1, 1), (2, 2), (3, 4), (4, 8), (5, 10), (9, 10)]:
        delays = [policy.delay(attempt, rng) for _ in range(200)]
        assert min(delays) >= expected * 0.8 - 1e-9
        assert max(delays) <= expected + 1e-9
        assert max(delays) - min(delays) > expected * 0.1  # jitter is really applied


@pytest.mark.parametrize(("options", "field"), [
    ({"visibility_timeout": 0}, "visibility_timeout"),
    ({"weights": (0, 0, 0)}, "weights"),
    ({"max_attempts": 0}, "max_attempts"),
    ({"durability": "tape"}, "durability"),
    ({"nonsense": 1}, "nonsense"),
])
def test_queue_config_errors_name_the_field(options: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_queue_config("q", **options)
    assert info.value.field == field


def test_bad_queue_name_is_rejected() -> None:
    with pytest.raises(ConfigError) as info:
        build_queue_config("no spaces")
    assert info.value.field == "name"


@pytest.mark.parametrize("slots", [1, 3, 7, 64])
def test_lane_allocation_matches_weights_at_any_fetch_size(slots: int) -> None:
    allocator = LaneAllocator((6, 3, 1))
    totals = [0, 0, 0]
    for _ in range(1000):
        quotas = allocator.split(slots)
        assert sum(quotas) == slots
        totals = [a + b for a, b in zip(totals, quotas, strict=True)]
    shares = [t / sum(totals) for t in totals]
    assert shares == pytest.approx([0.6, 0.3, 0.1], abs=0.01)


def test_weights_parse_from_the_config_hash() -> None:
    assert parse_weights(b"8,1,1") == (8, 1, 1)
    assert parse_weights("x") is None
    assert parse_weights(b"0,0,0") is None
    assert parse_weights(None) is None


def test_message_ids_are_ulids_that_sort_by_creation() -> None:
    from ulid import ULID

    from tidings.message import new_message_id

    ids = [new_message_id() for _ in range(20_000)]  # many share a millisecond
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(len(i) == 26 for i in ids)
    assert abs(ULID.from_str(ids[0]).timestamp - __import__("time").time()) < 5
