"""Integrations: bridges to other brokers and channel consumers that deliver notifications.

Each lives in its own module and imports its client library there, so ``import tidings``
never needs them: ``tidings.integrations.rabbitmq`` (``tidings[rabbitmq]``, aio-pika),
``tidings.integrations.nats`` (``tidings[nats]``, nats-py); the channel consumers
``tidings.integrations.email`` (``tidings[email]``, aiosmtplib), ``.sms`` (Twilio-shaped)
and ``.push`` (FCM-shaped) over httpx, ``.webhook`` and ``.webhook_endpoints``
(``tidings[webhooks]``, standardwebhooks); ``.channel`` and ``.http`` are what they share.
"""
