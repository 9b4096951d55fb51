"""A bridge consumer as its own process, for kill -9 tests:

    python -m tests.apps.bridge_proc rabbitmq REDIS_URL PREFIX AMQP_URL QUEUE
    python -m tests.apps.bridge_proc nats REDIS_URL PREFIX NATS_URL STREAM SUBJECT

moves messages into the tidings queue ``bridged`` until killed.
"""

from __future__ import annotations

import asyncio
import sys

from tidings import Tidings


async def main(kind: str, redis_url: str, prefix: str, *source: str) -> None:
    app = Tidings(redis_url, key_prefix=prefix)
    target = app.queue("bridged")
    async with app:
        if kind == "rabbitmq":
            from tidings.integrations.rabbitmq import RabbitConsumeConfig, RabbitConsumer

            await RabbitConsumer(RabbitConsumeConfig(url=source[0], queue=source[1],
                                                     prefetch=50), target).run()
        else:
            from tidings.integrations.jetstream import NatsConsumeConfig, NatsConsumer

            await NatsConsumer(NatsConsumeConfig(url=source[0], stream=source[1],
                                                 subject=source[2], durable="crash",
                                                 batch=50, fetch_timeout=0.2, ack_wait=2),
                               target).run()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
