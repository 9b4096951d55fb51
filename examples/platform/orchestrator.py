"""The orchestrator: says what happened (a user signed up, an order was paid or shipped) on
topics; routing rules decide which channels hear of it, in which shape."""

from __future__ import annotations

from typing import Any

from tidings import Tidings
from tidings.integrations.webhook_endpoints import Endpoint, EndpointRegistry

from .common import SUBSCRIBERS

CHANNELS = ("email", "sms", "push", "webhooks")
USERS = [
    {"name": "Ada", "email": "ada@example.org", "phone": "+4915100000001", "device": "dev-ada",
     "sms_opt_in": True},
    {"name": "Grace", "email": "grace@example.org", "phone": "+4915100000002",
     "device": "dev-grace", "sms_opt_in": False},
    {"name": "Linus", "email": "linus@example.org", "phone": "+4915100000003",
     "device": "dev-linus", "sms_opt_in": True},
]
ORDERS = [(41, 0, "acme"), (42, 1, "globex"), (43, 2, "acme")]  # (order, user, merchant)


def build() -> Tidings:
    app = Tidings()
    for name in CHANNELS:
        app.queue(name)
    return app


async def bind(app: Tidings) -> None:
    """The routing rules: who hears of what, in which shape."""
    topics = app.topics
    await topics.bind("welcome-email", "user.signed_up", "email", replace_existing=True,
                      transform={"select": "{to: user.email}", "templates": {
                          "subject": "Welcome, {{ payload.user.name }}",
                          "text": "Hello {{ payload.user.name }}, thanks for joining."}})
    await topics.bind("shipped-sms", "order.shipped", "sms", replace_existing=True,
                      filter="payload.user.sms_opt_in",
                      transform={"select": "{to: user.phone}", "templates": {
                          "body": "Order {{ payload.order_id }} has shipped"}})
    await topics.bind("order-push", "order.*", "push", replace_existing=True,
                      transform={"select": "{token: user.device}", "templates": {
                          "title": "Order {{ payload.order_id }}",
                          "body": "Your order is {{ payload.status }}"}})
    await topics.bind("merchant-webhook", "order.#", "webhooks", replace_existing=True,
                      transform={"select": "{order_id: order_id, status: status, "
                                           "subscriber: merchant}"})


async def register_subscribers(app: Tidings, receivers_url: str) -> None:
    registry = EndpointRegistry(app)
    for subscriber, secret in SUBSCRIBERS.items():
        await registry.put(Endpoint(subscriber, f"{receivers_url}/hooks/{subscriber}", secret),
                           allow_http=True)


async def orchestrate(app: Tidings, receivers_url: str) -> dict[str, int]:
    """Publish the platform's events; returns how many copies each channel got."""
    await bind(app)
    await register_subscribers(app, receivers_url)
    copies: dict[str, int] = dict.fromkeys(CHANNELS, 0)

    async def publish(topic: str, payload: dict[str, Any], key: str) -> None:
        result = await app.topics.publish(topic, payload, idempotency_key=key)
        for queue in result.queues:
            copies[queue] += 1

    for i, person in enumerate(USERS):
        await publish("user.signed_up", {"user": person}, f"signup-{i}")
    for status in ("paid", "shipped"):
        for order, user, merchant in ORDERS:
            await publish(f"order.{status}", {"order_id": order, "status": status,
                                              "user": USERS[user], "merchant": merchant},
                          f"order-{order}-{status}")
    return copies
