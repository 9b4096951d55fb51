"""What the platform's programs share: where the providers are, and how a service runs."""

from __future__ import annotations

import asyncio
import base64
import os
import signal

from tidings import Tidings
from tidings.integrations.channel import Channel

ENV_HTTP = "PLATFORM_PROVIDERS_URL"  # the fake providers' HTTP server
ENV_SMTP = "PLATFORM_SMTP"  # host:port of the fake SMTP relay
RETRY = {"backoff_base": 0.05, "backoff_cap": 1.0}  # quick retries for a demo
# The subscribers' webhook secrets: the orchestrator registers them, the receivers verify.
SUBSCRIBERS = {
    "acme": "whsec_" + base64.b64encode(b"acme-webhook-secret-32-bytes!!!!").decode(),
    "globex": "whsec_" + base64.b64encode(b"globex-webhook-secret-32-bytes!!").decode(),
}
SMS_ACCOUNT, SMS_TOKEN, PUSH_TOKEN = "AC0001", "twilio-token", "fcm-token"


def providers_url() -> str:
    return os.environ[ENV_HTTP]


def smtp_address() -> tuple[str, int]:
    host, port = os.environ[ENV_SMTP].rsplit(":", 1)
    return host, int(port)


def serve(app: Tidings, consumer: Channel) -> None:
    """Run ``app``'s worker until SIGTERM or SIGINT, then close the consumer."""
    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            async with app, app.worker():
                print("ready", flush=True)  # the launcher waits for this line
                await stop.wait()
        finally:
            await consumer.close()

    asyncio.run(main())
