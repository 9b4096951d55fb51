"""Integrations: bridges to other brokers and channel consumers that deliver notifications.

Each lives in its own module and imports its client library there, so ``import tidings``
never needs them: ``tidings.integrations.rabbitmq`` (``tidings[rabbitmq]``, aio-pika),
``tidings.integrations.nats`` (``tidings[nats]``, nats-py), ``tidings.integrations.webhook``
(httpx, always installed).
"""
