"""Property-based: inspect and the DLQ tools fed stored entries mutated field by field.

Envelopes with fields removed or replaced by values of any type, raw bytes instead of an
envelope, stream fields missing or holding garbage, index values of any text. The
contract: inspect, list, get, replay and purge return (reporting what they could not
read) and never raise. Bounded: the whole file runs in a few seconds.
"""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import drop_keys
from stored_entries import add_dead_letter, add_to_lane, dead_fields, envelope
from tidings import Queue, Tidings
from tidings.core.message import new_message_id

BOUNDED = settings(max_examples=120, deadline=None,
                   suppress_health_check=[HealthCheck.function_scoped_fixture])

ENVELOPE_FIELDS = ("v", "id", "q", "p", "pr", "a", "c", "h", "k", "nb", "x", "ma")
DEAD_LETTER_FIELDS = ("i", "reason", "error", "lane", "dead_at")

# Anything msgpack can carry: the types a decoded envelope field may hold.
packable = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                max_size=3),
    max_leaves=6)
# A field change: ... removes the field, anything else replaces its value.
change = st.just(...) | packable
stream_value = st.binary(max_size=30) | st.text(max_size=30) | st.integers()


@st.composite
def stored_envelopes(draw: st.DrawFn, queue: Queue) -> bytes:
    """A valid envelope with some fields removed or retyped, or raw bytes."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=40))
    changes = draw(st.dictionaries(st.sampled_from(ENVELOPE_FIELDS), change, max_size=4))
    try:
        return envelope(queue, **changes)
    except (TypeError, ValueError, OverflowError):  # not packable as a map: raw bytes then
        return bytes(msgpack.packb([str(changes)]))


@pytest.fixture
async def fuzz(app: Tidings) -> Queue:
    q = app.queue("fuzz")
    await app.connect()
    return q


async def clear(q: Queue) -> None:
    await drop_keys(q.app.broker.client, f"{q.app.settings.key_prefix}:{{{q.name}}}")


@BOUNDED
@given(data=st.data())
async def test_dead_letter_tools_return_or_report_never_raise(fuzz: Queue,
                                                              data: st.DataObject) -> None:
    entries = data.draw(st.integers(1, 3))
    written = []
    try:
        for _ in range(entries):
            msg_id = new_message_id()
            m = data.draw(st.none() | st.just(b"") | stored_envelopes(fuzz), label="m")
            extra = data.draw(st.dictionaries(st.sampled_from(DEAD_LETTER_FIELDS),
                                              st.just(...) | stream_value, max_size=3))
            fields = dead_fields(msg_id, m, **extra)
            written.append((msg_id, await add_dead_letter(fuzz, fields)))
        listed = await fuzz.dlq.list()
        assert len(listed) == entries
        for item in listed:
            assert item.message is not None or item.decode_error
            assert item.as_dict()["entry_id"] == item.entry_id
        for msg_id, _ in written:
            await fuzz.inspect(msg_id)
            await fuzz.dlq.get(msg_id)
        replayed = await fuzz.dlq.replay()
        assert replayed + len(replayed.skipped) == entries
        purged = await fuzz.dlq.purge()
        assert purged == len(replayed.skipped) and await fuzz.dlq.count() == 0
    finally:
        await clear(fuzz)


@BOUNDED
@given(data=st.data())
async def test_inspect_of_any_queued_entry_returns_or_reports(fuzz: Queue,
                                                              data: st.DataObject) -> None:
    msg_id = new_message_id()
    fields: dict[str, Any] = {"i": msg_id}
    m = data.draw(st.none() | stored_envelopes(fuzz))
    if m is not None:
        fields["m"] = m
    if data.draw(st.booleans()):
        fields["x"] = data.draw(stream_value)
    await add_to_lane(fuzz, fields, lane=data.draw(st.integers(0, 2)))
    try:
        info = await fuzz.inspect(msg_id)
        assert info is not None and info.state == "queued"
        assert info.message is not None or info.decode_error
    finally:
        await clear(fuzz)


@BOUNDED
@given(index=st.text(max_size=40), body=st.binary(max_size=60))
async def test_inspect_of_any_index_value_or_delayed_body_returns_or_reports(
        fuzz: Queue, index: str, body: bytes) -> None:
    msg_id = new_message_id()
    client = fuzz.app.broker.client
    await client.hset(fuzz.keys[7], msg_id, index)
    await client.hset(fuzz.keys[4], msg_id, body)
    try:
        info = await fuzz.inspect(msg_id)
        if info is not None and info.message is None:
            assert info.decode_error
        await client.hset(fuzz.keys[7], msg_id, "d")
        delayed = await fuzz.inspect(msg_id)
        assert delayed is not None and delayed.state == "delayed"
        assert delayed.message is not None or delayed.decode_error
    finally:
        await clear(fuzz)
