"""Prometheus metrics: per-process counts from a real worker, fleet-wide figures from Redis,
the reporter election, and names that promtool accepts."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from conftest import Recorder
from obs_helpers import promtool, samples, scrape_text, value
from tidings import DeadLetter, EventKind, Message, Outgoing, Retry, Tidings, Worker
from tidings.observability.endpoints import WorkerEndpoints


def failing_app(make_app: Callable[..., Tidings], recorder: Recorder) -> Tidings:
    """An app whose email handler acks, retries once, or dead-letters, by payload."""
    app = make_app(middleware=[recorder])
    email = app.queue("email", backoff_base=0.01, backoff_cap=0.01, jitter=0)

    @email.handler
    async def handle(msg: Message) -> None:
        if msg.payload == "retry" and msg.attempts == 0:
            raise Retry(timedelta(milliseconds=10))
        if msg.payload == "dead":
            raise DeadLetter("unsubscribed")
        if msg.payload == "boom":
            raise TimeoutError("smtp timed out")

    return app


async def test_worker_metrics_count_what_happened(make_app: Callable[..., Tidings],
                                                  recorder: Recorder) -> None:
    app = failing_app(make_app, recorder)
    endpoints = app.observability.serve(port=0, host="127.0.0.1")
    email = app.get_queue("email")
    async with app:
        await email.publish("ok", priority="high")
        await email.publish_many(["ok", "retry", "dead"])
        async with app.worker() as worker:
            await recorder.wait_count(EventKind.ACKED, 3)
            await recorder.wait_count(EventKind.DEAD_LETTERED, 1)
            found = samples(await scrape_text(endpoints.port_of(worker)))
    assert value(found, "tidings_messages_published_total", queue="email") == 4
    assert value(found, "tidings_messages_published_total", priority="high") == 1
    assert value(found, "tidings_messages_acked_total", queue="email") == 3
    assert value(found, "tidings_messages_retried_total", queue="email") == 1
    assert value(found, "tidings_messages_dead_lettered_total", queue="email") == 1
    assert value(found, "tidings_messages_delivered_total", queue="email") == 5
    assert value(found, "tidings_handler_errors_total", error_type="Retry") == 1
    assert value(found, "tidings_handler_errors_total", error_type="DeadLetter") == 1
    assert value(found, "tidings_handler_duration_seconds_count", outcome="acked") == 3
    assert value(found, "tidings_end_to_end_latency_seconds_count", queue="email") == 3
    # Time in queue counts first deliveries only: four messages, not the retry's second.
    assert value(found, "tidings_time_in_queue_seconds_count", queue="email") == 4
    assert value(found, "tidings_worker_up") == 1
    assert value(found, "tidings_worker_in_flight_messages") == 0
    assert value(found, "tidings_worker_heartbeat_age_seconds", queue="email") is not None
    assert value(found, "process_resident_memory_bytes") is not None


async def test_handler_errors_are_categorised_by_exception_type(
        make_app: Callable[..., Tidings], recorder: Recorder) -> None:
    app = failing_app(make_app, recorder)
    metrics = app.observability.metrics
    async with app:
        await app.get_queue("email").publish_many(
            [Outgoing("boom", max_attempts=1), Outgoing("boom", max_attempts=1)])
        async with app.worker():
            await recorder.wait_count(EventKind.DEAD_LETTERED, 2)
    assert dict(metrics.errors) == {("email", "TimeoutError"): 2}


async def test_fleet_metrics_read_depth_oldest_age_dlq_and_consumers_from_redis(
        make_app: Callable[..., Tidings], recorder: Recorder) -> None:
    app = failing_app(make_app, recorder)
    app.queue("sms")  # no handler here: its messages wait
    producer = make_app()  # another process publishes; the reporter sees it all the same
    producer.queue("sms")
    endpoints = app.observability.serve(port=0, host="127.0.0.1")
    async with app, producer:
        await producer.get_queue("sms").publish_many(["a", "b"])
        await producer.get_queue("sms").publish("c", priority="high")
        await producer.get_queue("sms").publish("later", delay=3600)
        await app.get_queue("email").publish("dead")
        async with app.worker(["email"]) as worker:
            await recorder.wait_count(EventKind.DEAD_LETTERED, 1)
            collector = endpoints.collectors[worker.consumer]
            await collector.decided.wait()
            assert collector.active  # the only candidate
            found = samples(await scrape_text(endpoints.port_of(worker)))
    assert value(found, "tidings_fleet_up") == 1
    assert value(found, "tidings_queue_depth_messages", queue="sms", lane="normal") == 2
    assert value(found, "tidings_queue_depth_messages", queue="sms", lane="high") == 1
    assert value(found, "tidings_queue_group_lag_messages", queue="sms", lane="normal") == 2
    assert value(found, "tidings_queue_delayed_messages", queue="sms") == 1
    assert value(found, "tidings_queue_dead_letters", queue="email") == 1
    assert value(found, "tidings_queue_consumers", queue="email") == 1
    assert value(found, "tidings_queue_consumers", queue="sms") == 0
    age = value(found, "tidings_queue_oldest_message_age_seconds", queue="sms", lane="normal")
    assert age is not None and age >= 0
    assert value(found, "tidings_queue_messages_total", queue="sms", outcome="published") == 4
    assert value(found, "tidings_queue_messages_total", queue="email",
                 outcome="dead_lettered") == 1
    assert (value(found, "tidings_redis_used_memory_bytes") or 0) > 0
    assert (value(found, "tidings_redis_connected_clients") or 0) >= 1


async def test_only_the_elected_worker_reports_the_fleet(make_app: Callable[..., Tidings],
                                                        recorder: Recorder) -> None:
    one, two = failing_app(make_app, recorder), failing_app(make_app, Recorder())
    ends = [app.observability.serve(port=0, host="127.0.0.1") for app in (one, two)]
    async with one, two:
        async with one.worker() as w1, two.worker() as w2:
            c1, c2 = ends[0].collectors[w1.consumer], ends[1].collectors[w2.consumer]
            await c1.decided.wait()
            await c2.decided.wait()
            texts = [await scrape_text(e.port_of(w)) for e, w in ((ends[0], w1), (ends[1], w2))]
            holder = w1 if c1.active else w2
        # The holder gives the lease up when it stops: the other can take it at once.
        assert not await one.broker.client.exists(one.key_space.fleet_reporter)
    reporting = ["tidings_fleet_up" in text for text in texts]
    assert sorted(reporting) == [False, True]
    assert holder.consumer in (w1.consumer, w2.consumer)


async def reporter_exposition(make_app: Callable[..., Tidings], recorder: Recorder) -> str:
    """What a worker that acked, retried and dead-lettered, and reports the fleet, serves."""
    app = failing_app(make_app, recorder)
    endpoints = app.observability.serve(port=0, host="127.0.0.1")
    async with app:
        await app.get_queue("email").publish_many(["ok", "retry", "dead"])
        async with app.worker() as worker:
            await recorder.wait_count(EventKind.DEAD_LETTERED, 1)
            await reporting(endpoints, worker)
            return await scrape_text(endpoints.port_of(worker))


async def test_promtool_accepts_every_metric_name(make_app: Callable[..., Tidings],
                                                  recorder: Recorder) -> None:
    text = await reporter_exposition(make_app, recorder)
    assert "tidings_queue_depth_messages" in text
    result = promtool("check", "metrics", stdin=text)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


async def reporting(endpoints: WorkerEndpoints, worker: Worker) -> None:
    """Wait for the worker's first election round; it must have won (the only candidate)."""
    collector = endpoints.collectors[worker.consumer]
    await collector.decided.wait()
    assert collector.active
