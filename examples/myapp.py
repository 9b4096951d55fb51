# myapp.py: an app with one queue, its handler, and a producer. Run `python myapp.py` to
# publish and `tidings worker myapp:app` to process (both in the directory of this file).
import asyncio
from datetime import UTC, datetime, timedelta

from tidings import DeadLetter, Message, Retry, Tidings

app = Tidings()  # no URL: embedded server; TIDINGS_REDIS_URL or Tidings(url): a real one
email = app.queue("email", max_attempts=5, visibility_timeout=timedelta(seconds=30))


async def smtp_send(payload: dict[str, str]) -> int:
    """A stand-in for your email provider's client: replace it with the real call."""
    await asyncio.sleep(0.005)  # the network round trip
    return 250  # the SMTP reply code; 421 would mean "try again later"


@email.handler(concurrency=64)
async def send_email(msg: Message) -> None:
    if msg.payload.get("unsubscribed"):
        raise DeadLetter("recipient unsubscribed")  # park it now, with a reason
    if await smtp_send(msg.payload) == 421:
        raise Retry(timedelta(seconds=30))  # counts as an attempt
    # returning normally acks; any other exception goes through the retry policy


async def orchestrate() -> None:
    async with app:
        await email.publish({"to": "a@b.c"}, priority="high",
                            idempotency_key="order-42:welcome", correlation_id="order-42")
        await email.publish_many([{"to": f"user{i}@b.c"} for i in range(1_000)])
        await email.publish({"to": "a@b.c"}, delay=timedelta(minutes=5))
        tomorrow = datetime.now(UTC) + timedelta(days=1)
        await email.publish({"to": "a@b.c"}, send_at=tomorrow,
                            expires_at=tomorrow + timedelta(hours=1))  # then it is too late


if __name__ == "__main__":
    asyncio.run(orchestrate())
