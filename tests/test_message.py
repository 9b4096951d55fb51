"""Envelope encoding, validation and the unit-level pieces of retry and allocation."""

from __future__ import annotations

import math
import random
from datetime import datetime

import msgpack
import pytest

from tidings import ConfigError, Priority, RetryPolicy, ValidationError
from tidings.core.config import build_queue_config
from tidings.core.errors import EnvelopeError, PayloadError, UnsupportedEnvelopeError
from tidings.core.message import MAX_PAYLOAD_DEPTH, Message, check_payload, decode, encode
from tidings.worker.allocation import LaneAllocator, parse_weights


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
    # Adding a field is backward compatible and keeps the version; only an incompatible
    # change bumps it.
    raw = msgpack.packb({"v": 1, "id": "x", "q": "email", "p": 1, "new_field": {"a": 1}})
    msg = decode(raw)
    assert (msg.id, msg.payload, msg.priority, msg.attempts) == ("x", 1, Priority.NORMAL, 0)


@pytest.mark.parametrize("version", [2, 99])
def test_a_newer_envelope_version_is_refused_not_read_as_v1(version: int) -> None:
    raw = msgpack.packb({"v": version, "id": "x", "q": "email", "p": 1})
    with pytest.raises(UnsupportedEnvelopeError) as info:
        decode(raw)
    assert info.value.field == "v" and "upgrade the workers" in info.value.reason


@pytest.mark.parametrize("raw", [b"\xc1garbage", msgpack.packb([1, 2]), msgpack.packb({"id": 1}),
                                 msgpack.packb({"v": "x", "id": "a", "q": "q"}),
                                 msgpack.packb({"id": "a", "q": "q"})])
def test_decoder_rejects_what_is_not_an_envelope(raw: bytes) -> None:
    with pytest.raises(EnvelopeError):
        decode(raw)


GOOD = {"v": 1, "id": "01J", "q": "email", "p": {"to": "a"}, "pr": 1, "a": 0,
        "c": 1_700_000_000_000}


@pytest.mark.parametrize(("field", "value"), [
    ("id", None), ("id", {}), ("id", [1]), ("id", ""), ("id", 5),
    ("q", None), ("q", 3),
    ("h", 1), ("h", "abc"), ("h", [["a", "b"]]), ("h", {"a": 1}), ("h", {1: "a"}),
    ("pr", 3), ("pr", -1), ("pr", "high"), ("pr", 1.0), ("pr", True),
    ("k", 5), ("k", ""),
    ("a", ""), ("a", -1), ("a", 1.5), ("a", "0"), ("a", True),
    ("c", ""), ("c", math.nan), ("c", math.inf), ("c", -5), ("c", 2**60),
    ("nb", "soon"), ("nb", math.inf), ("x", ""), ("x", -1), ("ma", 0), ("ma", "3"),
    ("v", True), ("v", 1.0),
])
def test_every_envelope_field_is_checked_for_type_and_range(field: str, value: object) -> None:
    with pytest.raises(EnvelopeError) as info:
        decode(msgpack.packb({**GOOD, field: value}))
    assert info.value.field == field


def test_a_valid_envelope_with_optional_fields_decodes() -> None:
    msg = decode(msgpack.packb({**GOOD, "h": {"a": "b"}, "k": "key", "nb": 1, "x": 2,
                                "ma": 3}))
    assert (msg.headers, msg.idempotency_key, msg.not_before_ms, msg.expires_at_ms,
            msg.max_attempts) == ({"a": "b"}, "key", 1, 2, 3)


@pytest.mark.parametrize(("payload", "path"), [
    ({"x": math.nan}, "payload.x"), (math.inf, "payload"), ([1, -math.inf], "payload[1]"),
    ({(1, 2): "x"}, "payload"), ({1: "x"}, "payload"), ({"a": {"b c": [b"raw"]}},
                                                          "payload.a['b c'][0]"),
    ({"when": {1, 2}}, "payload.when"), (2**64, "payload"), ({"n": -(2**63) - 1}, "payload.n"),
])
def test_payloads_that_are_not_json_compatible_are_refused_naming_the_path(
        payload: object, path: str) -> None:
    with pytest.raises(PayloadError) as info:
        check_payload(payload)
    assert info.value.field == path


def test_payload_nesting_is_bounded() -> None:
    deep: object = "leaf"
    for _ in range(MAX_PAYLOAD_DEPTH + 1):
        deep = [deep]
    with pytest.raises(PayloadError, match="deeper"):
        check_payload(deep)


@pytest.mark.parametrize("payload", [
    None, True, 0, -(2**63), 2**64 - 1, 1.5, "text", b"raw bytes", [1, "a", None],
    (1, 2), {"a": {"b": [1.0, {"c": None}]}},
])
def test_json_compatible_payloads_and_bytes_are_accepted(payload: object) -> None:
    check_payload(payload)


def test_unserializable_payload_names_the_field() -> None:
    with pytest.raises(ValidationError) as info:
        encode(Message("1", "q", {"when": datetime(2026, 1, 1)}))
    assert info.value.field == "payload.when"


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

    from tidings.core.message import new_message_id

    ids = [new_message_id() for _ in range(20_000)]  # many share a millisecond
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(len(i) == 26 for i in ids)
    assert abs(ULID.from_str(ids[0]).timestamp - __import__("time").time()) < 5
