"""The webhook service: the ``webhooks`` queue, each message to its subscriber's endpoint
(from the registry the orchestrator fills), signed per Standard Webhooks."""

from __future__ import annotations

from tidings import Tidings
from tidings.integrations.webhook_endpoints import (
    EndpointRegistry,
    SubscriberWebhooks,
    SubscriberWebhooksConfig,
)

from .common import RETRY, serve


def build() -> tuple[Tidings, SubscriberWebhooks]:
    app = Tidings()
    # allow_http: the local receivers are plain http; real endpoints must be https.
    hooks = SubscriberWebhooks(EndpointRegistry(app), SubscriberWebhooksConfig(
        allow_http=True, subscriber_field="subscriber", disable_after=10))
    hooks.install(app.queue("webhooks", max_attempts=8, **RETRY))
    return app, hooks


if __name__ == "__main__":
    serve(*build())
