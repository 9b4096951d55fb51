"""``POST /v1/queues/{queue}/messages`` (one) and ``.../messages/batch`` (many).

The hot path: one permission check on a cached principal, the Python API's own
validation (:meth:`Queue.publish_each`), one round trip, orjson out.
"""

from __future__ import annotations

import orjson
from fastapi import APIRouter
from fastapi.responses import Response

from ..core.errors import ValidationError
from ..queues.queue import Outgoing, Published, with_correlation
from .common import Caller, aware, doc, queue_of
from .errors import error_body, field_of, reason_of
from .models import BatchIn, BatchOut, PublishedOut, PublishIn

router = APIRouter(tags=["publish"])


def outgoing(body: PublishIn) -> Outgoing:
    """The message ``body`` describes, as :meth:`Queue.publish` would build it."""
    headers = body.headers
    if body.correlation_id is not None:
        headers = with_correlation(headers, body.correlation_id)
    return Outgoing(body.payload, body.priority, body.idempotency_key, headers, body.delay,
                    aware(body.send_at, body.zone, "send_at"), body.ttl, body.expires_at,
                    body.max_attempts)


def _outgoing_or_error(body: PublishIn) -> Outgoing | ValidationError:
    try:
        return outgoing(body)
    except ValidationError as exc:
        return exc


def _json(data: object, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status, media_type="application/json")


@router.post("/queues/{queue}/messages", **doc(PublishedOut, 201))
async def publish(queue: str, body: PublishIn, access: Caller) -> Response:
    """Publish one message; its id (the first message's, for a duplicate idempotency key)."""
    access.require(f"publish:{queue}")
    q = await queue_of(access, queue)
    (done,) = await q.publish_each([outgoing(body)])
    if done.error is not None:
        raise done.error
    return _json({"id": done.id, "queue": q.name, "duplicate": done.duplicate}, 201)


@router.post("/queues/{queue}/messages/batch", **doc(BatchOut))
async def publish_batch(queue: str, body: BatchIn, access: Caller) -> Response:
    """Publish many messages in one round trip, each judged on its own: the result lists
    every message's outcome in order (``published``, ``duplicate`` or ``refused`` with
    its error); a refused message does not stop the others."""
    access.require(f"publish:{queue}")
    q = await queue_of(access, queue)
    limit = access.app.settings.api.max_batch
    if len(body.messages) > limit:
        raise ValidationError("messages", f"{len(body.messages)} messages; at most {limit} "
                              "per batch (TIDINGS_API__MAX_BATCH)")
    built = [_outgoing_or_error(m) for m in body.messages]
    sent = await q.publish_each([m for m in built if isinstance(m, Outgoing)])
    results: list[dict[str, object]] = []
    outcomes = iter(sent)
    for item in built:
        done = Published(None, error=item) if isinstance(item, ValidationError) else next(outcomes)
        results.append(_outcome(done, len(results)))
    counts = {s: sum(1 for r in results if r["status"] == s)
              for s in ("published", "duplicate", "refused")}
    return _json({"queue": q.name, "published": counts["published"],
                  "duplicates": counts["duplicate"], "refused": counts["refused"],
                  "results": results})


def _outcome(done: Published, index: int) -> dict[str, object]:
    if done.error is not None:
        error = error_body(type(done.error).__name__, f"messages[{index}].{field_of(done.error)}",
                           reason_of(done.error))["error"]
        return {"id": None, "status": "refused", "error": error}
    return {"id": done.id, "status": "duplicate" if done.duplicate else "published",
            "error": None}
