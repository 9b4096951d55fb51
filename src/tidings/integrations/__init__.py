"""Integrations: bridges to other brokers and channel consumers that deliver notifications.

Each lives in its own module and imports its client library there, so ``import tidings``
never needs them. Bridges: ``tidings.integrations.rabbitmq`` (``tidings[rabbitmq]``,
aio-pika; its topology in ``.rabbitmq_topology``), ``.jetstream`` (``tidings[nats]``,
nats-py), ``.kafka`` (``tidings[kafka]``, aiokafka), ``.sqs`` and ``.aws``
(``tidings[sqs]``, aiobotocore: SQS and SNS), ``.bridges`` (every bridge by name, as
``tidings bridge`` runs them). Channel consumers: ``.email`` (``tidings[email]``,
aiosmtplib), ``.sms`` (Twilio-shaped) and ``.push`` (FCM-shaped) over httpx, ``.webhook``
and ``.webhook_endpoints`` (``tidings[webhooks]``, standardwebhooks); ``.channel`` and
``.http`` are what they share.
"""
