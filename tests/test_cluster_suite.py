"""The suite's core scenarios, run again against a real 3-primary Redis Cluster.

The tests below are the suite's own (imported from their modules); this module only points
them at a cluster: ``redis_url`` is a ``redis+cluster://`` URL of three local primaries
(tests/cluster.py), ``client`` a RedisCluster. Every script call is checked as it goes
(``one_slot_per_script``): the keys it is called with must hash to one slot. The last
test checks that the scenarios reached the scripts of every feature.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio.cluster import RedisCluster

import tidings.engine.cluster as engine_cluster
from cluster import running_cluster
from test_campaign import (  # noqa: F401 - fixtures and tests collected here again
    campaigns,
    test_cancel_removes_every_waiting_message,
    test_each_recipient_is_due_at_nine_in_their_own_zone,
    test_two_runs_of_one_campaign_at_once_publish_each_recipient_once,
)
from test_campaign_control import (  # noqa: F401
    campaign_clock,
    test_delete_is_refused_while_running_and_removes_a_cancelled_one,
    test_pause_stops_release_and_resume_continues,
    test_update_throttle_respaces_the_waiting_messages,
)
from test_dlq import (  # noqa: F401
    test_purge_by_filter_and_all,
    test_replay_filtered_gives_fresh_attempts,
)
from test_flow_breaker_guard import (  # noqa: F401
    test_open_breaker_holds_messages_without_spending_attempts,
    test_same_name_is_one_breaker_over_several_queues,
)
from test_flow_fair import (  # noqa: F401
    test_quiet_tenant_is_not_stuck_behind_a_flood,
    test_round_robin_between_busy_tenants,
)
from test_flow_limits import (  # noqa: F401
    test_over_the_key_limit_waits_without_failing,
    test_slot_is_held_only_while_the_handler_runs,
)
from test_flow_pause import (  # noqa: F401
    test_pause_lets_running_handlers_finish,
    test_paused_key_is_parked_and_resumes_at_once,
)
from test_flow_ratelimit import test_burst_then_limited  # noqa: F401
from test_ordering import (  # noqa: F401
    test_dead_letters_replay_to_the_end_of_their_key_and_purge,
    test_each_key_runs_in_order_one_at_a_time,
    test_retry_in_place_holds_the_key_not_the_others,
)
from test_publish import (  # noqa: F401
    test_batch_publish_returns_ids_in_order_across_chunks,
    test_delayed_message_waits_in_the_delayed_set_and_can_be_cancelled,
    test_duplicate_idempotency_key_enqueues_nothing_and_returns_first_id,
    test_publish_puts_each_message_in_its_priority_lane,
)
from test_scheduler import (  # noqa: F401
    clock,
    test_three_tickers_racing_fire_exactly_one_message_per_occurrence,
    test_tick_fires_each_due_occurrence_once_with_rendered_payload,
)
from test_worker import (  # noqa: F401
    test_delayed_message_is_not_delivered_before_it_is_due,
    test_failures_retry_with_backoff_then_dead_letter_with_details,
    test_handled_message_is_acked_and_removed_from_the_stream,
    test_late_ack_after_reclaim_is_refused_and_reported,
)
from tidings import Tidings
from tidings.engine.scripts import LIBRARY, Script

# Starts its own servers: the CI pass against another Redis would repeat it as is.
pytestmark = pytest.mark.own_servers

SLOTS_BY_SCRIPT: dict[str, set[frozenset[int]]] = defaultdict(set)
_BY_SHA = {s.sha: s.name for s in LIBRARY}


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_cluster(Path(tmp_path_factory.mktemp("cluster"))) as cluster:
        yield cluster.url


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[RedisCluster]:
    host, _, port = redis_url.split("://")[1].split(",")[0].partition(":")
    redis = RedisCluster(host=host, port=int(port))
    yield redis
    await redis.aclose()


client2 = client


@pytest.fixture
def make_app(make_app: Callable[..., Tidings]) -> Callable[..., Tidings]:
    """The queues the scheduler and campaign tests target, declared on every app."""
    def factory(**kwargs: Any) -> Tidings:
        app = make_app(**kwargs)
        for name in ("email", "sms", "push"):
            app.queue(name)
        return app

    return factory


def _record(keys: Sequence[Any], name: str) -> None:
    slots = frozenset(engine_cluster.slot_of(k) for k in keys)
    SLOTS_BY_SCRIPT[name].add(slots)
    assert len(slots) <= 1, f"script {name} called with keys in {len(slots)} slots: {keys}"


@pytest.fixture(autouse=True)
def one_slot_per_script(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every script call, through the channel or the RedisCluster client: one slot."""
    routed = engine_cluster.command_slot
    called = Script.__call__

    def command_slot(args: Sequence[Any]) -> int | None:
        if args and args[0] == "EVALSHA" and args[1] in _BY_SHA:
            _record(args[3:3 + int(args[2])], _BY_SHA[args[1]])
        return routed(args)

    async def call(self: Script, client: Any, keys: Sequence[str], args: Sequence[Any]) -> Any:
        _record(keys, self.name)
        return await called(self, client, keys, args)

    monkeypatch.setattr(engine_cluster, "command_slot", command_slot)
    monkeypatch.setattr(Script, "__call__", call)


# The features whose scripts the scenarios above must have reached (a script left out here
# is one the scenarios do not call: erasure, re-encryption, routing ...).
REACHED = {"publish", "fetch", "ack", "retry", "dead_letter", "dlq_replay", "dlq_purge",
           "reclaim", "cancel_delayed", "ordered_publish", "ordered_take", "ordered_ack",
           "ordered_fail", "ordered_replay", "fair_publish", "fair_feed", "breaker_allow",
           "breaker_record", "rate_limit_acquire", "concurrency_acquire",
           "concurrency_release", "key_park", "schedule_claim", "schedule_commit",
           "schedule_save", "campaign_create", "campaign_publish", "campaign_cancel",
           "campaign_pause", "campaign_resume", "campaign_retime", "campaign_delete"}


def test_zz_every_script_called_on_the_cluster_touched_one_slot(
        request: pytest.FixtureRequest) -> None:
    """Runs last (collection order): every call above was checked as it went, and when the
    whole module ran, the scenarios reached the scripts of every feature in REACHED."""
    for name, calls in SLOTS_BY_SCRIPT.items():
        assert all(len(slots) <= 1 for slots in calls), name
    ran = [i for i in request.session.items if i.module is request.module]
    if len(ran) == len([n for n in globals() if n.startswith("test_")]):
        assert REACHED - set(SLOTS_BY_SCRIPT) == set()


