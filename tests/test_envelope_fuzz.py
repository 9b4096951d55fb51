"""Envelopes mutated field by field, through the whole worker path, against a real server.

The contract: an entry is delivered intact, or dead-lettered as ``undecodable`` (or
``unsupported_version``) with the offending field named; never another exception, never a
stuck slot, and the operator views still read every entry afterwards.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import Recorder
from tidings import EventKind, Message, Tidings
from tidings.core.message import decode

FIELDS = ["v", "id", "q", "p", "h", "pr", "k", "a", "c", "nb", "x", "ma"]
SCALARS = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
           | st.floats() | st.text(max_size=6) | st.binary(max_size=6)
           | st.sampled_from([0, 1, 2, 3, -1, "", "1", math.nan, math.inf]))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.text(max_size=4) | st.integers(0, 9), inner, max_size=3), max_leaves=6)
# One mutation: set a field to any value, delete it, or add a field nobody knows.
MUTATIONS = st.lists(st.one_of(
    st.tuples(st.just("set"), st.sampled_from(FIELDS), VALUES),
    st.tuples(st.just("delete"), st.sampled_from(FIELDS), st.none()),
    st.tuples(st.just("add"), st.text(min_size=3, max_size=6), VALUES),
), min_size=0, max_size=3)


def base_envelope(msg_id: str) -> dict[Any, Any]:
    return {"v": 1, "id": msg_id, "q": "email", "p": {"n": msg_id}, "pr": 1, "a": 0,
            "c": int(time.time() * 1000), "h": {"correlation_id": msg_id}}


def same(a: Any, b: Any) -> bool:
    return bool(msgpack.packb(a, use_bin_type=True) == msgpack.packb(b, use_bin_type=True))


def expected_outcome(doc: dict[Any, Any], raw: bytes, msg_id: str) -> str:
    """What the worker must do with the entry: 'handled' or the field it must name."""
    try:
        msg = decode(raw)
    except ValueError as exc:
        return str(getattr(exc, "field", "envelope"))
    return "handled" if msg.id == msg_id else "id"


@pytest.mark.slow
async def test_mutated_envelopes_are_delivered_intact_or_dead_lettered_naming_the_field(
        make_app: Callable[..., Tidings]) -> None:
    recorder = Recorder()  # an event middleware is installed, as in every CLI worker
    app = make_app(middleware=[recorder])
    q = app.queue("email", max_attempts=1)
    handled: dict[str, Any] = {}

    @q.handler(concurrency=1)  # one slot: any leaked slot would stop the run
    async def handle(msg: Message) -> None:
        handled[msg.id] = msg.payload

    entries: list[tuple[str, bytes, str, Any]] = []

    @settings(max_examples=400, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(mutations=MUTATIONS)
    def build(mutations: list[tuple[str, Any, Any]]) -> None:
        msg_id = f"fz-{len(entries)}"
        doc = base_envelope(msg_id)
        for action, field, value in mutations:
            if action == "delete":
                doc.pop(field, None)
            else:
                doc[field] = value
        raw = msgpack.packb(doc, use_bin_type=True)
        entries.append((msg_id, raw, expected_outcome(doc, raw, msg_id), doc.get("p")))

    build()
    await app.connect()
    client = app.broker.client
    pipe = client.pipeline(transaction=False)
    for msg_id, raw, _, _ in entries:
        pipe.xadd(q.keys[1], {"i": msg_id, "m": raw})
    await pipe.execute()
    valid = [e for e in entries if e[2] == "handled"]
    assert valid and len(valid) < len(entries), "the mutations must make both kinds"

    async with app.worker() as worker:
        await recorder.wait_for(
            lambda: recorder.counts[EventKind.ACKED] + recorder.counts[
                EventKind.DEAD_LETTERED] >= len(entries), timeout=60)
        await recorder.wait_for(lambda: worker.running == 0 and not worker.runners[0].in_flight)
    stats = await q.stats()
    assert (stats.depth, stats.in_flight, stats.delayed) == (0, 0, 0)
    dead = {d.message_id: d for d in await q.dlq.list(len(entries) + 10)}
    for msg_id, _, outcome, payload in entries:
        if outcome == "handled":
            # Compared as msgpack bytes: a foreign producer's NaN is delivered intact too.
            assert same(handled[msg_id], payload) and msg_id not in dead
        else:
            assert msg_id not in handled
            assert dead[msg_id].reason in ("undecodable", "unsupported_version")
            assert dead[msg_id].error["field"] == outcome
    for msg_id in dead:
        await q.inspect(msg_id)  # the operator view reads every parked entry
