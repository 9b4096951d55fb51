"""Topic routing against the real server: patterns, filters, transforms, unrouted messages,
idempotent fan-out, rule versions (tidings.routing)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings import Tidings
from tidings.core.message import decode
from tidings.errors import RouteError, RouteNotFoundError, ValidationError
from tidings.routing.rules import RuleSet, compile_pattern


async def queued(app: Tidings, name: str) -> list[Any]:
    """The messages waiting in queue ``name``'s lanes, high to low, oldest first."""
    keys = app.key_space.queue(name)
    out = []
    for lane in keys.lanes:
        for _, fields in await app.broker.client.xrange(lane):
            out.append(decode(fields[b"m"]))
    return out


@pytest.mark.parametrize(("pattern", "topic", "matches"), [
    ("order.*", "order.shipped", True),
    ("order.*", "order", False),
    ("order.*", "order.shipped.late", False),
    ("order.#", "order", True),
    ("order.#", "order.shipped.late", True),
    ("#", "anything.at.all", True),
    ("#.late", "order.shipped.late", True),
    ("*.shipped", "order.shipped", True),
    ("*.shipped", "shipped", False),
    ("order.shipped", "order.shippedx", False),
    ("order.#.#", "order", True),
    ("#.*", "order", True),
])
def test_patterns_follow_amqp_topic_rules(pattern: str, topic: str, matches: bool) -> None:
    assert compile_pattern(pattern, "topic").matches(topic) is matches


def _reference_match(pattern: list[str], topic: list[str]) -> bool:
    """AMQP topic matching, word by word (the regex translation is checked against it)."""
    if not pattern:
        return not topic
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(_reference_match(rest, topic[i:]) for i in range(len(topic) + 1))
    return bool(topic) and head in ("*", topic[0]) and _reference_match(rest, topic[1:])


@given(st.lists(st.sampled_from(["a", "b", "*", "#"]), min_size=1, max_size=5),
       st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=6))
def test_pattern_matching_agrees_with_the_word_by_word_definition(
        pattern: list[str], topic: list[str]) -> None:
    compiled = compile_pattern(".".join(pattern), "topic")
    assert compiled.matches(".".join(topic)) == _reference_match(pattern, topic)


def test_many_hashes_on_a_long_topic_match_in_linear_steps() -> None:
    """A regex translation backtracks exponentially here; the word matcher does not."""
    pattern = compile_pattern(".".join(["#", "a"] * 20 + ["z"]), "topic")
    assert pattern.matches(".".join(["a"] * 120)) is False
    assert pattern.matches(".".join(["a"] * 120 + ["z"])) is True


def test_transforms_are_pure() -> None:
    from tidings.routing.rules import CompiledBinding
    from tidings.routing.transform import apply_transform

    rules = RuleSet.from_dict({"bindings": [{
        "name": "b", "topic": "t", "queue": "q",
        "transform": {"rename": {"user.phone": "to"}, "defaults": {"meta.lang": "en"},
                      "templates": {"text": "hi {{ payload.user.name }}"}}}]})
    compiled: CompiledBinding = rules.compiled[0]
    payload = {"user": {"phone": "+1", "name": "Ann"}}
    variables = {"payload": payload, "headers": {}, "topic": "t", "routing_key": "",
                 "priority": "normal"}
    first = apply_transform(compiled, variables, {})
    assert first == apply_transform(compiled, variables, {})
    assert first == {"user": {"name": "Ann"}, "to": "+1", "meta": {"lang": "en"},
                     "text": "hi Ann"}
    assert payload == {"user": {"phone": "+1", "name": "Ann"}}  # the input is untouched


def test_an_invalid_filter_is_refused_with_its_position() -> None:
    with pytest.raises(RouteError) as caught:
        RuleSet.from_dict({"bindings": [{"name": "sms", "topic": "order.*", "queue": "sms",
                                         "filter": "payload.x =="}]})
    assert caught.value.field == "bindings[sms].filter"
    assert (caught.value.line, caught.value.column) == (1, 13)


@pytest.mark.parametrize(("binding", "field"), [
    ({"filter": "nope.x == 1"}, "bindings[b].filter"),
    ({"topic": "order.**"}, "bindings[b].topic"),
    ({"queue": "no spaces"}, "bindings[b].queue"),
    ({"priority": "urgent"}, "bindings[b].priority"),
    ({"delay": -1}, "bindings[b].delay"),
    ({"transform": {"select": "foo.[bar"}}, "bindings[b].transform.select"),
    ({"transform": {"templates": {"text": "{{ payload.x }"}}},
     "bindings[b].transform.templates.text"),
    ({"transform": {"shout": True}}, "bindings[b].transform.shout"),
    ({"schema": {"type": "nope"}}, "bindings[b].schema"),
    ({"colour": "red"}, "bindings[b].colour"),
])
def test_every_bad_field_is_named(binding: dict[str, Any], field: str) -> None:
    with pytest.raises(RouteError) as caught:
        RuleSet.from_dict({"bindings": [{"name": "b", "topic": "order.*", "queue": "q",
                                         **binding}]})
    assert caught.value.field == field


async def test_a_topic_fans_out_to_every_matching_binding(make_app: Callable[..., Tidings]
                                                          ) -> None:
    app = make_app()
    async with app:
        await app.topics.bind("push", "order.*", "push")
        await app.topics.bind("audit", "#", "audit")
        await app.topics.bind("marketing", "marketing.#", "promo")
        result = await app.topics.publish("order.shipped", {"order": 7},
                                          headers={"tenant": "acme"}, routing_key="eu")
        assert sorted(result.queues) == ["audit", "push"]
        (copy,) = await queued(app, "push")
        assert copy.payload == {"order": 7}
        assert copy.headers["tidings-topic"] == "order.shipped"
        assert copy.headers["tidings-origin"] == result.message_id
        assert copy.headers["tidings-binding"] == "push"
        assert copy.headers["tidings-routing-key"] == "eu"
        assert copy.headers["tenant"] == "acme"
        assert copy.headers["correlation_id"] == result.message_id
        assert copy.id != result.message_id
        assert await queued(app, "promo") == []


async def test_filters_on_payload_headers_routing_key_and_priority(
        make_app: Callable[..., Tidings]) -> None:
    app = make_app()
    async with app:
        await app.topics.bind("sms", "order.*", "sms", filter="payload.user.sms_opt_in")
        await app.topics.bind("eu", "order.*", "eu", filter="routing_key in ['eu', 'uk']")
        await app.topics.bind("vip", "order.*", "vip",
                              filter="priority == 'high' || headers.tenant == 'acme'")
        a = await app.topics.publish("order.shipped", {"user": {"sms_opt_in": True}},
                                     routing_key="uk")
        b = await app.topics.publish("order.shipped", {"user": {"sms_opt_in": False}},
                                     priority="high", routing_key="us")
        c = await app.topics.publish("order.shipped", {"user": {}}, headers={"tenant": "acme"})
        assert sorted(a.queues) == ["eu", "sms"]
        assert b.queues == ["vip"] and b.filtered_out == ("sms", "eu")
        # A field missing at run time is a non-match, counted, never a crash.
        assert c.queues == ["vip"] and "sms" in c.filter_errors
        assert (await app.topics.routing_stats())["filter_errors:sms"] == 1


async def test_transforms_reshape_and_validate_each_copy(make_app: Callable[..., Tidings]
                                                         ) -> None:
    app = make_app()

    @app.topics.transform("shout")
    def shout(payload: Any, message: Any) -> Any:
        return {**payload, "text": payload["text"].upper(), "topic": message["topic"]}

    schema = {"type": "object", "required": ["to", "text"],
              "properties": {"to": {"type": "string"}}}
    async with app:
        await app.topics.bind("sms", "order.shipped", "sms", transform={
            "select": "{to: user.phone, order: order_id, lang: user.lang}",
            "rename": {"order": "ref.order"}, "defaults": {"lang": "en"},
            "templates": {"text": "Order {{ payload.order_id }} is on its way"},
            "function": "shout"}, schema=schema)
        await app.topics.bind("raw", "order.shipped", "raw")
        payload = {"order_id": 7, "user": {"phone": "+4411", "lang": None}}
        result = await app.topics.publish("order.shipped", payload)
        assert sorted(result.queues) == ["raw", "sms"]
        (sms,) = await queued(app, "sms")
        assert sms.payload == {"to": "+4411", "ref": {"order": 7}, "lang": None,
                               "text": "ORDER 7 IS ON ITS WAY", "topic": "order.shipped"}
        (raw,) = await queued(app, "raw")
        assert raw.payload == payload  # the other binding's copy is untouched

        # No phone: the sms copy fails its schema and is dead-lettered with the reason,
        # never sent in the wrong shape; the raw copy still goes.
        bad = await app.topics.publish("order.shipped", {"order_id": 8, "user": {}})
        assert bad.queues == ["raw"]
        (dead,) = bad.dead_lettered
        assert (dead.binding, dead.queue, dead.reason) == ("sms", "unrouted", "transform_failed")
        assert "schema" in (dead.error or "")
        unrouted = app.queue("unrouted")
        (entry,) = await unrouted.dlq.list()
        assert entry.reason == "transform_failed" and entry.message is not None
        assert entry.message.payload == {"order_id": 8, "user": {}}
        assert entry.message.headers["tidings-binding"] == "sms"
        assert "to" in entry.error["message"]


async def test_binding_options_shape_the_copy(make_app: Callable[..., Tidings]) -> None:
    app = make_app()
    async with app:
        await app.topics.bind("low", "marketing.#", "promo", priority="low", ttl=3600)
        await app.topics.bind("later", "marketing.#", "digest", delay=600)
        await app.topics.publish("marketing.weekly", {"n": 1}, priority="high")
        (copy,) = await queued(app, "promo")
        assert copy.priority.name == "LOW" and copy.expires_at_ms is not None
        assert (await app.queue("digest").stats()).delayed == 1


async def test_unrouted_messages_are_dead_lettered_or_counted(
        make_app: Callable[..., Tidings]) -> None:
    app = make_app()
    async with app:
        await app.topics.bind("sms", "order.*", "sms", filter="payload.ok")
        nothing = await app.topics.publish("user.signed_up", {"id": 1})
        filtered = await app.topics.publish("order.placed", {"ok": False})
        assert nothing.dead_lettered[0].error == "no binding matches the topic"
        assert filtered.dead_lettered[0].error == "filtered out by sms"
        entries = await app.queue("unrouted").dlq.list()
        assert [e.reason for e in entries] == ["unrouted", "unrouted"]
        assert entries[0].message is not None
        assert entries[0].message.headers["tidings-topic"] == "user.signed_up"

        await app.topics.set_unrouted("drop")
        dropped = await app.topics.publish("user.signed_up", {"id": 2})
        assert dropped.dropped and not dropped.dead_lettered
        stats = await app.topics.routing_stats()
        assert (stats["unrouted"], stats["dropped"], stats["published"]) == (2, 1, 3)


async def test_publishing_again_with_the_same_key_adds_no_copies(
        make_app: Callable[..., Tidings]) -> None:
    app = make_app()
    async with app:
        await app.topics.bind("push", "order.*", "push")
        await app.topics.bind("email", "order.*", "email")
        first = await app.topics.publish("order.shipped", {"n": 1}, idempotency_key="o-1")
        again = await app.topics.publish("order.shipped", {"n": 1}, idempotency_key="o-1")
        assert all(d.new for d in first.deliveries)
        assert not any(d.new for d in again.deliveries)
        assert [d.message_id for d in again.deliveries] == [
            d.message_id for d in first.deliveries]
        assert len(await queued(app, "push")) == len(await queued(app, "email")) == 1
        stats = await app.topics.routing_stats()
        assert (stats["published"], stats["routed"]) == (1, 2)  # the repeat counts nothing


async def test_a_full_queue_refuses_the_whole_fan_out(make_app: Callable[..., Tidings]) -> None:
    from tidings.errors import QueueFullError

    app = make_app()
    app.queue("small", max_depth=1)
    async with app:
        await app.topics.bind("big", "order.*", "big")
        await app.topics.bind("small", "order.*", "small")
        await app.topics.publish("order.a", 1)
        with pytest.raises(QueueFullError):
            await app.topics.publish("order.b", 2)
        assert len(await queued(app, "big")) == 1  # nothing of the refused message


async def test_a_publisher_with_old_rules_routes_by_the_new_ones(
        make_app: Callable[..., Tidings]) -> None:
    """The route script checks the version: a stale producer is told, reloads, routes
    again; its message is routed whole by the new version."""
    producer = make_app(routing={"listen": False})  # learns only from the server's check
    editor = make_app()
    async with producer, editor:
        await editor.topics.bind("a", "order.*", "a")
        assert (await producer.topics.publish("order.x", 1)).queues == ["a"]
        await editor.topics.bind("b", "order.*", "b")
        await editor.topics.unbind("a")
        result = await producer.topics.publish("order.x", 2)
        assert result.queues == ["b"] and result.version == 3
        assert [m.payload for m in await queued(producer, "a")] == [1]


async def test_history_rollback_and_test(make_app: Callable[..., Tidings]) -> None:
    app = make_app()
    async with app:
        await app.topics.bind("a", "order.*", "a")
        await app.topics.bind("b", "order.*", "b", filter="payload.n > 1")
        await app.topics.unbind("a")
        with pytest.raises(RouteNotFoundError):
            await app.topics.unbind("a")
        with pytest.raises(RouteError):
            await app.topics.bind("b", "x", "y")
        rolled = await app.topics.rollback(2)
        assert rolled.version == 4 and [b.name for b in rolled.bindings] == ["a", "b"]
        history = await app.topics.history()
        assert [(h.version, h.action) for h in history] == [
            (4, "rollback"), (3, "remove"), (2, "add"), (1, "add")]
        preview = await app.topics.test("order.placed", {"n": 1})
        assert preview["matched"] == ["a", "b"] and preview["filtered_out"] == ["b"]
        assert [c["queue"] for c in preview["copies"]] == ["a"]
        assert await queued(app, "a") == []  # a test writes nothing


async def test_bad_publish_input_is_a_validation_error(make_app: Callable[..., Tidings]) -> None:
    app = make_app()
    async with app:
        for kwargs, field in [({"topic": "order.*"}, "topic"),
                              ({"routing_key": 5}, "routing_key"),
                              ({"headers": {"a": 1}}, "headers"),
                              ({"priority": "urgent"}, "priority")]:
            args = {"topic": "order.x", **kwargs}
            with pytest.raises(ValidationError) as caught:
                await app.topics.publish(args.pop("topic"), {}, **args)
            assert caught.value.field == field


async def test_a_schedule_can_target_a_topic(make_app: Callable[..., Tidings]) -> None:
    """Each occurrence goes through the rules in force when it fires; ticking again
    (another worker, a retry) adds no second copy."""
    from datetime import UTC, datetime, timedelta

    t0 = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)
    app = make_app()
    app.schedules.clock = lambda: t0
    async with app:
        await app.topics.bind("digest", "digest.daily", "email")
        schedule = await app.schedules.add("daily", topic="digest.daily", every=3600,
                                           start=t0, payload={"run": "{occurrence}"})
        assert schedule.queue == "topic:digest.daily"
        [fired] = await app.schedules.tick(t0 + timedelta(seconds=1))
        assert await app.schedules.tick(t0 + timedelta(seconds=2)) == []
        keys = app.key_space.queue("email")
        bodies = list((await app.broker.client.hgetall(keys.delayed_bodies)).values())
        entries = [fields for lane in keys.lanes for _, fields in
                   await app.broker.client.xrange(lane)]
        copies = [decode(raw.split(b"|", 2)[2]) for raw in bodies] + [
            decode(f[b"m"]) for f in entries]
        assert len(copies) == 1
        (copy,) = copies
        assert copy.headers["tidings-origin"] == fired.message_id
        assert copy.headers["schedule_id"] == "daily"
        with pytest.raises(ValidationError):
            await app.schedules.add("both", queue="email", topic="x", every=60)


async def test_fleet_metrics_carry_the_routing_counters(make_app: Callable[..., Tidings]
                                                        ) -> None:
    from tidings.observability.fleet import _families, read_fleet

    app = make_app()
    async with app:
        await app.topics.bind("push", "order.*", "push")
        await app.topics.publish("order.shipped", {})
        await app.topics.publish("user.new", {})
        snapshot = await read_fleet(app)
        samples = {(s.labels["outcome"], s.labels["binding"]): s.value
                   for family in _families(snapshot) if family.name == "tidings_routing_messages"
                   for s in family.samples}
        assert samples == {("published", ""): 2, ("routed", ""): 1, ("routed", "push"): 1,
                           ("unrouted", ""): 1}


def _publish_topic_from_thread(redis_url: str, prefix: str) -> list[str]:
    app = Tidings(redis_url, key_prefix=prefix)
    with app.sync() as client:
        client._run(app.topics.bind("push", "order.*", "push"))
        return client.publish_topic("order.shipped", {"n": 1}, routing_key="eu").queues


async def test_the_blocking_facade_publishes_to_topics(make_app: Callable[..., Tidings]) -> None:
    import asyncio

    app = make_app()
    async with app:  # its prefix is dropped after the test
        queues = await asyncio.to_thread(_publish_topic_from_thread, app.broker.url or "",
                                         app.settings.key_prefix)
        assert queues == ["push"]
        assert len(await queued(app, "push")) == 1


async def test_unrouted_dead_letters_route_again_after_the_rules_are_fixed(
        make_app: Callable[..., Tidings]) -> None:
    app = make_app()
    async with app:
        await app.topics.bind("sms", "order.*", "sms", transform={"select": "phone"},
                              schema={"type": "string"})
        first = await app.topics.publish("order.shipped", {"phone": None},
                                         headers={"tenant": "acme"}, routing_key="eu")
        await app.topics.publish("user.new", {"id": 1})
        assert first.dead_lettered[0].reason == "transform_failed"
        await app.topics.bind("sms", "order.*", "sms", replace_existing=True)  # fixed
        done = await app.topics.reroute_unrouted()
        assert (done.routed, done.unrouted, done.skipped) == (1, 1, 0)
        (copy,) = await queued(app, "sms")
        assert copy.payload == {"phone": None}
        assert copy.headers["tenant"] == "acme" and copy.headers["tidings-routing-key"] == "eu"
        assert copy.headers["correlation_id"] == first.message_id
        entries = await app.queue("unrouted").dlq.list()
        assert [e.message.headers["tidings-topic"] for e in entries if e.message] == [
            "user.new"]  # still no binding: dead-lettered again, the old entry gone
        again = await app.topics.reroute_unrouted()  # the user.new one, once more
        assert again.unrouted == 1 and len(await app.queue("unrouted").dlq.list()) == 1
