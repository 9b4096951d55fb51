"""Every bad publish argument raises a ValidationError naming it; what is accepted arrives.

The contract (issue 7, defects 10 and 14): a publish either raises a
:class:`tidings.ValidationError` subclass whose ``field`` names the argument (or, for the
payload, the path inside it), or it returns an id and the message reaches a handler
intact. Never another exception type, never a message the worker then refuses.
"""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import Recorder
from tidings import Message, Outgoing, PayloadError, Tidings, ValidationError

BAD_ARGUMENTS: list[tuple[dict[str, Any], str]] = [
    ({"max_attempts": math.nan}, "max_attempts"),
    ({"max_attempts": math.inf}, "max_attempts"),
    ({"max_attempts": "3"}, "max_attempts"),
    ({"max_attempts": 2**64}, "max_attempts"),
    ({"max_attempts": 0}, "max_attempts"),
    ({"max_attempts": True}, "max_attempts"),
    ({"headers": [("a", "b")]}, "headers"),
    ({"headers": "abc"}, "headers"),
    ({"headers": {"a": 1}}, "headers"),
    ({"send_at": 0}, "send_at"),
    ({"send_at": datetime(2030, 1, 1)}, "send_at"),  # naive
    ({"expires_at": "tomorrow"}, "expires_at"),
    ({"delay": [1]}, "delay"),
    ({"delay": "abc"}, "delay"),
    ({"delay": math.nan}, "delay"),
    ({"delay": math.inf}, "delay"),
    ({"delay": 2**1100}, "delay"),
    ({"delay": 1e300}, "delay"),
    ({"delay": -1}, "delay"),
    ({"delay": True}, "delay"),
    ({"expires_in": 2**80}, "expires_in"),
    ({"expires_in": timedelta(days=-1)}, "expires_in"),
    ({"correlation_id": 5}, "correlation_id"),
    ({"correlation_id": ""}, "correlation_id"),
    ({"idempotency_key": 5}, "idempotency_key"),
    ({"idempotency_key": "k" * 513}, "idempotency_key"),
    ({"priority": "urgent"}, "priority"),
    ({"priority": [0]}, "priority"),
    ({"delay": 1, "send_at": datetime(2030, 1, 1, tzinfo=UTC)}, "delay"),
]


@pytest.mark.parametrize(("options", "field"), BAD_ARGUMENTS)
async def test_a_bad_publish_argument_raises_a_validation_error_naming_it(
        app: Tidings, options: dict[str, Any], field: str) -> None:
    q = app.queue("email")
    await app.connect()
    with pytest.raises(ValidationError) as info:
        await q.publish({"to": "a@b.c"}, **options)
    assert info.value.field == field
    if "correlation_id" not in options:  # not an Outgoing field: it travels in headers
        with pytest.raises(ValidationError) as batch_info:
            await q.publish_many([Outgoing({"to": "a@b.c"}, **options)])
        assert batch_info.value.field == field
    assert (await q.stats()).depth == 0


@pytest.mark.parametrize(("payload", "path"), [
    ({"x": math.nan}, "payload.x"),
    ({"x": [1, math.inf]}, "payload.x[1]"),
    (-math.inf, "payload"),
    ({(1, 2): "x"}, "payload"),
    ({"when": datetime(2026, 1, 1)}, "payload.when"),
    ({"raw": b"inside"}, "payload.raw"),
    ({"n": 2**64}, "payload.n"),
])
async def test_a_payload_that_is_not_json_compatible_is_refused_naming_the_path(
        app: Tidings, payload: Any, path: str) -> None:
    q = app.queue("email")
    with pytest.raises(PayloadError) as info:
        await q.publish(payload)
    assert info.value.field == path
    assert (await q.stats()).depth == 0


def test_the_sync_facade_refuses_the_same_arguments(app: Tidings) -> None:
    app.queue("email")
    with app.sync() as client:
        with pytest.raises(PayloadError) as info:
            client.publish("email", {"x": math.nan})
        assert info.value.field == "payload.x"
        with pytest.raises(ValidationError) as delay_info:
            client.publish("email", {}, delay=math.inf)
        assert delay_info.value.field == "delay"


async def test_publish_many_refuses_a_bad_chunk_size(app: Tidings) -> None:
    q = app.queue("email")
    for size in (0, -1, 1.5, 10_001):
        with pytest.raises(ValidationError) as info:
            await q.publish_many([1], chunk_size=size)  # type: ignore[arg-type]
        assert info.value.field == "chunk_size"


# -- property: typed error naming the argument, or delivered intact ------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=12)
ANYTHING = st.one_of(
    JSON, st.binary(max_size=8), st.floats(), st.integers(), st.tuples(st.integers()),
    st.sets(st.integers(), max_size=2), st.datetimes(), st.timedeltas(),
    st.dictionaries(st.integers(), st.text(max_size=3), max_size=2), st.just(object()),
)
ARGUMENTS = {
    "priority": st.sampled_from(["high", "normal", "low", 0, 1, 2]) | ANYTHING,
    "idempotency_key": st.text(min_size=1, max_size=20) | ANYTHING,
    "headers": st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3) | ANYTHING,
    "correlation_id": st.text(min_size=1, max_size=10) | ANYTHING,
    "delay": st.floats(0, 0.05) | ANYTHING,
    "expires_in": st.floats(10, 100) | ANYTHING,
    "max_attempts": st.integers(1, 1000) | ANYTHING,
    "send_at": st.datetimes(timezones=st.just(UTC)) | ANYTHING,
}


def normalised(value: Any) -> Any:
    """What msgpack gives back for a JSON-compatible value (tuples become lists)."""
    if isinstance(value, (list, tuple)):
        return [normalised(v) for v in value]
    if isinstance(value, dict):
        return {k: normalised(v) for k, v in value.items()}
    return value


@pytest.mark.slow
async def test_publish_arguments_of_every_type_are_refused_by_name_or_delivered_intact(
        make_app: Any) -> None:
    recorder = Recorder()
    app = make_app(middleware=[recorder])
    q = app.queue("fuzz")
    producer = make_app()  # the sync facade runs on its own loop: an app of its own
    producer.queue("fuzz")
    accepted: dict[str, Any] = {}

    @settings(max_examples=300, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(payload=JSON | ANYTHING, data=st.data())
    def one_publish(payload: Any, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(sorted(ARGUMENTS)), label="argument")
        value = data.draw(ARGUMENTS[name], label=name)
        try:
            msg_id = client.publish("fuzz", payload, **{name: value})
        except PayloadError as exc:
            assert exc.field.startswith("payload"), exc
        except ValidationError as exc:
            assert exc.field == name, exc
        else:
            accepted.setdefault(msg_id, normalised(payload))  # a repeated key: the first wins

    handled: dict[str, Any] = {}

    @q.handler(concurrency=64)
    async def handle(msg: Message) -> None:
        handled[msg.id] = msg.payload

    with producer.sync() as client:
        one_publish()
    assert accepted, "the strategies produced no valid publish: the test proves nothing"
    async with app.worker():
        deadline = asyncio.get_running_loop().time() + 60
        while (s := await q.stats()).depth or s.in_flight:
            assert asyncio.get_running_loop().time() < deadline, "the queue never drained"
            await asyncio.sleep(0.05)
    # Intact wherever it is: handled, still waiting for its time, or parked as expired.
    for msg_id, payload in accepted.items():
        if msg_id in handled:
            assert handled[msg_id] == payload
            continue
        info = await q.inspect(msg_id)
        assert info is not None and info.state in ("delayed", "dead"), (msg_id, info)
        assert info.message is not None and info.message.payload == payload
