"""Bridge settings (``TIDINGS_BRIDGE__*``): what ``tidings bridge ...`` connects to.

One nested model in the one settings object (``Settings.bridge``), one section per broker,
e.g. ``TIDINGS_BRIDGE__KAFKA__TOPIC=notifications`` or ``TIDINGS_BRIDGE__QUEUE=inbox``.
A command's options override its section. URLs that may hold a password are secrets:
never in a repr or a log line.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

_FROZEN = ConfigDict(frozen=True, extra="forbid")


class RabbitBridgeSettings(BaseModel):
    """RabbitMQ: ``queue`` is read by rabbitmq-in; rabbitmq-out sends to ``exchange`` with
    ``routing_key``. With ``declare`` the bridge declares its topology at start."""

    model_config = _FROZEN
    url: SecretStr = SecretStr("amqp://guest:guest@127.0.0.1:5672/")
    queue: str | None = None
    exchange: str = ""
    routing_key: str | None = None
    prefetch: int = Field(64, ge=1, le=65535)
    confirm_timeout: float = Field(10.0, gt=0)
    declare: bool = False
    exchange_type: Literal["direct", "topic", "fanout", "headers"] = "direct"
    queue_type: Literal["quorum", "classic"] = "quorum"
    dead_letter_exchange: str | None = None
    max_priority: int | None = Field(None, ge=1, le=255)
    delivery_limit: int | None = Field(None, ge=1)


class NatsBridgeSettings(BaseModel):
    """NATS JetStream: nats-in pulls ``subject`` of ``stream`` through ``durable``;
    nats-out publishes to ``subject``."""

    model_config = _FROZEN
    url: SecretStr = SecretStr("nats://127.0.0.1:4222")
    stream: str | None = None
    subject: str | None = None
    durable: str = "tidings-bridge"
    batch: int = Field(64, ge=1)
    ack_wait: float = Field(30.0, gt=0)


class KafkaBridgeSettings(BaseModel):
    """Kafka: kafka-in reads ``topic`` in consumer group ``group``; kafka-out writes to
    ``topic``, keyed by ``key_header`` (default: ordering key, else correlation id)."""

    model_config = _FROZEN
    bootstrap_servers: str = "127.0.0.1:9092"
    topic: str | None = None
    group: str = "tidings-bridge"
    key_header: str | None = None
    batch: int = Field(500, ge=1)
    session_timeout: float = Field(10.0, gt=0)


class SqsBridgeSettings(BaseModel):
    """SQS and SNS: sqs-in long-polls ``queue_url``; sqs-out sends to ``queue_url``;
    sns-out publishes to ``topic_arn``. ``endpoint_url`` points at a local server (moto);
    keys unset use the usual AWS credential chain."""

    model_config = _FROZEN
    queue_url: str | None = None
    topic_arn: str | None = None
    region: str = "us-east-1"
    endpoint_url: str | None = None
    access_key_id: str | None = None
    secret_access_key: SecretStr | None = None
    wait: int = Field(10, ge=1, le=20)
    visibility_timeout: int = Field(30, ge=1)
    pollers: int = Field(2, ge=1)
    sns_envelope: Literal["auto", "raw"] = "auto"  # unwrap SNS's JSON envelope (no raw delivery)


class BridgeSettings(BaseModel):
    """The tidings side of a bridge: ``queue`` is the target (``*-in``) or the source
    (``*-out``); ``concurrency`` messages in flight outbound; ``grace`` seconds to settle
    what is in hand after SIGTERM."""

    model_config = _FROZEN
    queue: str = "bridged"
    concurrency: int = Field(64, ge=1, le=100_000)
    grace: float = Field(10.0, ge=0)
    rabbitmq: RabbitBridgeSettings = Field(default_factory=RabbitBridgeSettings)
    nats: NatsBridgeSettings = Field(default_factory=NatsBridgeSettings)
    kafka: KafkaBridgeSettings = Field(default_factory=KafkaBridgeSettings)
    sqs: SqsBridgeSettings = Field(default_factory=SqsBridgeSettings)
