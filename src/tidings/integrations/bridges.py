"""Every bridge by name, built from :class:`~tidings.core.bridge_settings.BridgeSettings`:
what ``tidings bridge KIND`` runs, and the same as a library call::

    consumer = inbound("kafka-in", app.settings.bridge, app.queue("inbox"))
    await consumer.run()                     # until consumer.stop()

    publisher, batch_size = outbound("sqs-out", app.settings.bridge)
    app.queue("outbox").handler(publisher.handle_batch if batch_size else publisher.handle,
                                batch_size=batch_size)

Each client library is imported only when its bridge is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from ..core.bridge_settings import BridgeSettings
from ..core.errors import ConfigError

if TYPE_CHECKING:
    from ..core.message import Message
    from ..queues.queue import Queue

INBOUND = ("rabbitmq-in", "nats-in", "kafka-in", "sqs-in")
OUTBOUND = ("rabbitmq-out", "nats-out", "kafka-out", "sqs-out", "sns-out")


class Inbound(Protocol):
    moved: int

    async def run(self) -> None: ...

    def stop(self) -> None: ...


class Outbound(Protocol):
    async def handle(self, message: Message) -> None: ...

    async def close(self) -> None: ...


def _need(value: str | None, section: str, name: str, kind: str) -> str:
    if not value:
        raise ConfigError(f"TIDINGS_BRIDGE__{section.upper()}__{name.upper()}",
                          f"is required for {kind}")
    return value


def _aws(settings: BridgeSettings) -> Any:
    from .aws import AwsConnection

    sqs = settings.sqs
    secret = sqs.secret_access_key.get_secret_value() if sqs.secret_access_key else None
    return AwsConnection(region=sqs.region, endpoint_url=sqs.endpoint_url,
                         access_key_id=sqs.access_key_id, secret_access_key=secret)


def inbound(kind: str, settings: BridgeSettings, target: Queue) -> Inbound:
    """The consumer that moves messages of broker ``kind`` into ``target``."""
    if kind == "rabbitmq-in":
        from .rabbitmq import RabbitConsumeConfig, RabbitConsumer

        rmq = settings.rabbitmq
        return RabbitConsumer(RabbitConsumeConfig(
            queue=_need(rmq.queue, "rabbitmq", "queue", kind),
            url=rmq.url.get_secret_value(), prefetch=rmq.prefetch), target)
    if kind == "nats-in":
        from .jetstream import NatsConsumeConfig, NatsConsumer

        nts = settings.nats
        return NatsConsumer(NatsConsumeConfig(
            stream=_need(nts.stream, "nats", "stream", kind),
            subject=_need(nts.subject, "nats", "subject", kind), durable=nts.durable,
            url=nts.url.get_secret_value(), batch=nts.batch, ack_wait=nts.ack_wait,
            fetch_timeout=0.5), target)
    if kind == "kafka-in":
        from .kafka import KafkaConsumeConfig, KafkaConsumer

        kfk = settings.kafka
        return KafkaConsumer(KafkaConsumeConfig(
            topic=_need(kfk.topic, "kafka", "topic", kind), group=kfk.group,
            bootstrap_servers=kfk.bootstrap_servers, batch=kfk.batch, poll_timeout=0.5,
            session_timeout=kfk.session_timeout), target)
    if kind == "sqs-in":
        from .sqs import SqsConsumeConfig, SqsConsumer

        sqs = settings.sqs
        return SqsConsumer(SqsConsumeConfig(
            queue_url=_need(sqs.queue_url, "sqs", "queue_url", kind), connection=_aws(settings),
            wait=sqs.wait, visibility_timeout=sqs.visibility_timeout, pollers=sqs.pollers,
            sns_envelope=sqs.sns_envelope),
            target)
    raise ConfigError("kind", f"no inbound bridge {kind!r}; they are {', '.join(INBOUND)}")


def outbound(kind: str, settings: BridgeSettings) -> tuple[Outbound, int | None]:
    """The publisher to broker ``kind``, and the batch size its ``handle_batch`` takes
    (None: register ``handle``)."""
    if kind == "rabbitmq-out":
        from .rabbitmq import RabbitPublishConfig, RabbitPublisher

        rmq = settings.rabbitmq
        return RabbitPublisher(RabbitPublishConfig(
            routing_key=_need(rmq.routing_key, "rabbitmq", "routing_key", kind),
            exchange=rmq.exchange, url=rmq.url.get_secret_value(),
            confirm_timeout=rmq.confirm_timeout)), None
    if kind == "nats-out":
        from .jetstream import NatsPublishConfig, NatsPublisher

        nts = settings.nats
        return NatsPublisher(NatsPublishConfig(
            subject=_need(nts.subject, "nats", "subject", kind), stream=nts.stream,
            url=nts.url.get_secret_value())), None
    if kind == "kafka-out":
        from .kafka import KafkaPublishConfig, KafkaPublisher

        kfk = settings.kafka
        return KafkaPublisher(KafkaPublishConfig(
            topic=_need(kfk.topic, "kafka", "topic", kind),
            bootstrap_servers=kfk.bootstrap_servers, key_header=kfk.key_header)), None
    if kind == "sqs-out":
        from .sqs import SqsPublishConfig, SqsPublisher

        return SqsPublisher(SqsPublishConfig(
            queue_url=_need(settings.sqs.queue_url, "sqs", "queue_url", kind),
            connection=_aws(settings))), 10
    if kind == "sns-out":
        from .aws import SnsPublishConfig, SnsPublisher

        return SnsPublisher(SnsPublishConfig(
            topic_arn=_need(settings.sqs.topic_arn, "sqs", "topic_arn", kind),
            connection=_aws(settings))), 10
    raise ConfigError("kind", f"no outbound bridge {kind!r}; they are {', '.join(OUTBOUND)}")


async def declare_rabbitmq(settings: BridgeSettings) -> None:
    """Declare the RabbitMQ topology the settings describe (``declare = true``)."""
    from .rabbitmq_topology import RabbitTopology, declare

    rmq = settings.rabbitmq
    queue = rmq.queue or rmq.routing_key
    await declare(RabbitTopology(
        queue=_need(queue, "rabbitmq", "queue", "declare"), exchange=rmq.exchange,
        exchange_type=rmq.exchange_type,
        routing_keys=(rmq.routing_key,) if rmq.exchange and rmq.routing_key else (),
        queue_type=rmq.queue_type, dead_letter_exchange=rmq.dead_letter_exchange,
        max_priority=rmq.max_priority, delivery_limit=rmq.delivery_limit,
        url=rmq.url.get_secret_value()))
