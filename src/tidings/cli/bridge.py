"""``tidings bridge KIND``: move messages between tidings and another broker until SIGTERM.

``*-in`` consumes the broker and publishes into the tidings queue (``--queue``); ``*-out``
runs a worker on the tidings queue whose handler publishes to the broker. Settings come
from ``TIDINGS_BRIDGE__*`` (see core/bridge_settings.py); options override them. On
SIGTERM or SIGINT an inbound bridge settles the batch in hand and leaves (RabbitMQ takes
back its unacked messages, Kafka reassigns the partitions, SQS shows the rest again after
the visibility timeout); an outbound one drains like ``tidings worker``. A broker that is
away is waited for (integrations/reconnect.py). Registered on the main command in
cli/main.py.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Annotated, Any

import typer
from pydantic import ValidationError as PydanticError

from ..core.errors import ConfigError, TidingsError
from .support import EXIT_UNAVAILABLE, AppOption, Cli, CommandFailed, load_app

bridge_cli = Cli(help="Bridges to RabbitMQ, NATS JetStream, Kafka, SQS/SNS (both ways).")

QueueOpt = Annotated[str | None, typer.Option(
    "--queue", help="The tidings queue (target of *-in, source of *-out).")]
Opt = Annotated[str | None, typer.Option()]


def _settings(app: Any, queue: str | None, section: str, overrides: dict[str, Any]) -> Any:
    """The app's bridge settings with the command's options laid over them."""
    from ..core.bridge_settings import BridgeSettings

    bridge = app.settings.bridge
    merged = bridge.model_dump()
    merged[section].update({k: v for k, v in overrides.items() if v is not None})
    if queue is not None:
        merged["queue"] = queue
    try:
        return BridgeSettings.model_validate(merged)
    except PydanticError as exc:
        first = exc.errors()[0]
        where = "__".join(str(part).upper() for part in first["loc"])
        raise ConfigError(f"TIDINGS_BRIDGE__{where}", str(first["msg"])) from None


def _run(kind: str, app_spec: str | None, tidings_queue: str | None, section: str,
         **overrides: Any) -> None:
    from ..integrations import bridges

    app = load_app(app_spec)
    settings = _settings(app, tidings_queue, section, overrides)
    target = app.queue(settings.queue)
    if kind in bridges.INBOUND:
        consumer = bridges.inbound(kind, settings, target)  # a bad config fails here
        body = _inbound(app, kind, consumer, settings)
    else:
        publisher, batch_size = bridges.outbound(kind, settings)
        body = _outbound(app, kind, publisher, batch_size, settings)
    try:
        asyncio.run(body)
    except TidingsError:
        raise
    except Exception as exc:  # not an outage (those are retried in the bridge): give up
        raise CommandFailed(f"the {kind} bridge stopped: {type(exc).__name__}: {exc}",
                            EXIT_UNAVAILABLE) from None


async def _inbound(app: Any, kind: str, consumer: Any, settings: Any) -> None:
    from ..integrations import bridges

    if kind == "rabbitmq-in" and settings.rabbitmq.declare:
        await bridges.declare_rabbitmq(settings)
    async with app:
        task = asyncio.ensure_future(consumer.run())
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping.set)
        stopped = asyncio.ensure_future(stopping.wait())
        await asyncio.wait([task, stopped], return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if not task.done():
            consumer.stop()  # settle the batch in hand, then leave
            done, _ = await asyncio.wait([task], timeout=settings.grace)
            if not done:
                task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass


async def _outbound(app: Any, kind: str, publisher: Any, batch_size: int | None,
                    settings: Any) -> None:
    from ..integrations import bridges

    if kind == "rabbitmq-out" and settings.rabbitmq.declare:
        await bridges.declare_rabbitmq(settings)
    queue = app.queue(settings.queue)
    if batch_size:
        queue.handler(publisher.handle_batch, batch_size=batch_size,
                      concurrency=settings.concurrency)
    else:
        queue.handler(publisher.handle, concurrency=settings.concurrency)
    worker = app.worker([queue.name], shutdown_grace=settings.grace,
                        install_signal_handlers=True)
    try:
        async with app:
            await worker.run()
    finally:
        await publisher.close()


@bridge_cli.command("rabbitmq-in")
def rabbitmq_in(app_spec: AppOption = None, queue: QueueOpt = None,
                amqp_queue: Opt = None, url: Opt = None,
                declare: Annotated[bool | None, typer.Option(
                    "--declare/--no-declare", help="Declare the topology first.")] = None,
                ) -> None:
    """RabbitMQ queue (--amqp-queue) -> tidings."""
    _run("rabbitmq-in", app_spec, queue, "rabbitmq", queue=amqp_queue, url=url,
         declare=declare)


@bridge_cli.command("rabbitmq-out")
def rabbitmq_out(app_spec: AppOption = None, queue: QueueOpt = None, routing_key: Opt = None,
                 exchange: Opt = None, url: Opt = None,
                 declare: Annotated[bool | None, typer.Option(
                     "--declare/--no-declare", help="Declare the topology first.")] = None,
                 ) -> None:
    """tidings -> RabbitMQ (publisher confirms)."""
    _run("rabbitmq-out", app_spec, queue, "rabbitmq", routing_key=routing_key,
         exchange=exchange, url=url, declare=declare)


@bridge_cli.command("nats-in")
def nats_in(app_spec: AppOption = None, queue: QueueOpt = None, stream: Opt = None,
            subject: Opt = None, durable: Opt = None, url: Opt = None) -> None:
    """JetStream stream -> tidings (durable pull consumer)."""
    _run("nats-in", app_spec, queue, "nats", stream=stream, subject=subject,
         durable=durable, url=url)


@bridge_cli.command("nats-out")
def nats_out(app_spec: AppOption = None, queue: QueueOpt = None, subject: Opt = None,
             stream: Opt = None, url: Opt = None) -> None:
    """tidings -> JetStream (PubAck)."""
    _run("nats-out", app_spec, queue, "nats", subject=subject, stream=stream, url=url)


@bridge_cli.command("kafka-in")
def kafka_in(app_spec: AppOption = None, queue: QueueOpt = None, topic: Opt = None,
             group: Opt = None, bootstrap_servers: Opt = None) -> None:
    """Kafka topic -> tidings (offsets committed after the publish)."""
    _run("kafka-in", app_spec, queue, "kafka", topic=topic, group=group,
         bootstrap_servers=bootstrap_servers)


@bridge_cli.command("kafka-out")
def kafka_out(app_spec: AppOption = None, queue: QueueOpt = None, topic: Opt = None,
              key_header: Opt = None, bootstrap_servers: Opt = None) -> None:
    """tidings -> Kafka (acks=all)."""
    _run("kafka-out", app_spec, queue, "kafka", topic=topic, key_header=key_header,
         bootstrap_servers=bootstrap_servers)


@bridge_cli.command("sqs-in")
def sqs_in(app_spec: AppOption = None, queue: QueueOpt = None, queue_url: Opt = None,
           endpoint_url: Opt = None, region: Opt = None) -> None:
    """SQS queue -> tidings (long polling, deleted after the publish)."""
    _run("sqs-in", app_spec, queue, "sqs", queue_url=queue_url, endpoint_url=endpoint_url,
         region=region)


@bridge_cli.command("sqs-out")
def sqs_out(app_spec: AppOption = None, queue: QueueOpt = None, queue_url: Opt = None,
            endpoint_url: Opt = None, region: Opt = None) -> None:
    """tidings -> SQS (SendMessageBatch)."""
    _run("sqs-out", app_spec, queue, "sqs", queue_url=queue_url, endpoint_url=endpoint_url,
         region=region)


@bridge_cli.command("sns-out")
def sns_out(app_spec: AppOption = None, queue: QueueOpt = None, topic_arn: Opt = None,
            endpoint_url: Opt = None, region: Opt = None) -> None:
    """tidings -> SNS topic (PublishBatch)."""
    _run("sns-out", app_spec, queue, "sqs", topic_arn=topic_arn, endpoint_url=endpoint_url,
         region=region)
