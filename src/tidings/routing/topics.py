"""Topic publishing: ``await app.topics.publish("order.shipped", payload)``.

The producer keeps the rule set in memory (loaded once, reloaded when the store
announces a new version on its channel) and plans each message locally: patterns,
filters, transforms. The copies then go out in one ``route.lua`` call that also checks the
rule set version on the server: a message planned under a version that is no longer
current is planned again under the new one, so during a rule change every message is
routed whole by exactly one version, none lost, none doubled.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from ..core.clock import now_ms
from ..core.config import build_queue_config
from ..core.errors import RulesConflictError, ValidationError
from ..core.ids import new_message_id
from ..core.message import Priority, check_payload, duration_ms, to_ms, validate_headers
from ..queues.host import ExtensionHost
from ..queues.queue import Queue
from .editing import RuleEditing
from .plan import Matcher, RoutePlan, plan_route
from .rules import RuleSet, check_topic
from .send import STALE, Delivery, Origin, RouteCall
from .store import RuleStore
from .transform import TransformFunction

if TYPE_CHECKING:
    from .reroute import Rerouted

log = logging.getLogger("tidings.routing")
F = TypeVar("F", bound=TransformFunction)
REPLANS = 5  # route again this many times while the rules keep changing under a message


@dataclass(frozen=True, slots=True)
class RouteResult:
    """Where one topic message went: the copies stored, what was dead-lettered to the
    unrouted queue (with its reason), the bindings its filters kept it from."""

    message_id: str
    topic: str
    version: int
    deliveries: tuple[Delivery, ...]
    dead_lettered: tuple[Delivery, ...] = ()
    filtered_out: tuple[str, ...] = ()
    filter_errors: dict[str, str] = field(default_factory=dict)
    dropped: bool = False

    @property
    def queues(self) -> list[str]:
        return [d.queue for d in self.deliveries]


class Topics(RuleEditing):
    """The app's topic router (``app.topics``): publish, test, and edit the rules."""

    def __init__(self, app: ExtensionHost) -> None:
        self.settings = app.settings.routing
        self.keys = app.key_space.routes
        super().__init__(app, RuleStore(app.broker, self.keys, self.settings))
        self._matcher: Matcher | None = None
        self._functions: dict[str, TransformFunction] = {}
        self._targets: dict[str, Queue] = {}
        self._lock = asyncio.Lock()
        self._loaded = asyncio.Event()
        self._listener: asyncio.Task[None] | None = None
        self._pubsub: Any = None
        self._stopping = False

    # -- the rules in memory -------------------------------------------------------------

    def transform(self, name: str) -> Callable[[F], F]:
        """Register ``fn(payload, message) -> payload`` as the transform function ``name``
        (a binding's ``transform.function``). ``message`` holds ``payload`` (as
        published), ``headers``, ``topic``, ``routing_key``, ``priority``."""
        def register(fn: F) -> F:
            self._functions[name] = fn
            return fn
        return register

    @property
    def version(self) -> int | None:
        """The version of the rules this process routes with (None: not loaded yet)."""
        return None if self._matcher is None else self._matcher.rules.version

    async def start(self) -> RuleSet:
        """Load the rules and (``routing.listen``) follow their changes; publish does this
        on first use."""
        if not self.app.broker.connected:
            await self.app.connect()
        if self._matcher is None:
            await self.refresh()
        if self.settings.listen and self._listener is None:
            self._listener = asyncio.get_running_loop().create_task(self._listen())
        assert self._matcher is not None
        return self._matcher.rules

    async def refresh(self) -> RuleSet:
        """Read the rules now (a publish that met a newer version on the server does)."""
        async with self._lock:
            rules = await self.store.load()
            if self._matcher is None or self._matcher.rules.version != rules.version:
                self._matcher = Matcher(rules, self.settings.topic_cache)
                names = {b.queue for b in rules.bindings} | {rules.unrouted_queue}
                await self.app.broker.client.sadd(self.app.key_space.queue_registry, *names)
                self._loaded.set()
                self._loaded = asyncio.Event()
            return rules

    async def wait_for_version(self, version: int, timeout: float = 10.0) -> None:
        """Return once this process routes with ``version`` or a later one."""
        async def reached() -> None:
            while self.version is None or self.version < version:
                await self._loaded.wait()
        await asyncio.wait_for(reached(), timeout)

    async def _listen(self) -> None:
        """Reload when the store announces a version; on a lost connection, resubscribe and
        reload (a change missed meanwhile is caught there, or by the next publish)."""
        pause = 0.1
        while not self._stopping and self.app.broker.connected:
            pubsub = self._pubsub = self.app.broker.client.pubsub()
            try:
                await pubsub.subscribe(self.keys.channel)
                await self.refresh()
                pause = 0.1
                while not self._stopping:
                    message = await pubsub.get_message(ignore_subscribe_messages=True,
                                                       timeout=5.0)
                    if message is not None and int(message["data"]) != self.version:
                        await self.refresh()
            except Exception as exc:
                if self._stopping:
                    return
                log.warning("routing: lost the rule change channel (%s); retrying", exc)
                await self.app.clock.sleep(pause)
                pause = min(pause * 2, 5.0)
            finally:
                self._pubsub = None
                await pubsub.aclose()

    async def app_closing(self) -> None:
        """Stop following the rules (the app is closing its connection).

        The listener is stopped by closing its connection under it, not by cancelling it:
        a cancelled pub/sub read of redis-py can swallow the cancellation and wait on.
        """
        task, self._listener = self._listener, None
        if task is not None:
            self._stopping = True
            if self._pubsub is not None:
                await self._pubsub.aclose()
            done, _ = await asyncio.wait({task}, timeout=2.0)
            if not done:
                task.cancel()
            self._stopping = False
        self._matcher = None

    def _target(self, name: str) -> Queue:
        """The queue a binding names: declared on the app, else with default settings."""
        declared = self.app.queues.get(name)
        if declared is not None:
            return declared
        found = self._targets.get(name)
        if found is None:
            found = self._targets[name] = Queue(self.app, build_queue_config(name))
        return found

    # -- publishing ----------------------------------------------------------------------

    async def publish(
        self, topic: str, payload: Any, *, headers: dict[str, str] | None = None,
        routing_key: str | None = None, priority: Priority | str = Priority.NORMAL,
        idempotency_key: str | None = None, delay: timedelta | float | None = None,
        send_at: datetime | None = None, expires_in: timedelta | float | None = None,
    ) -> RouteResult:
        """Publish to every queue whose binding matches ``topic`` and whose filter passes,
        in one atomic server call. ``idempotency_key``: publishing the same key again
        (within each queue's dedupe window) adds no copies. ``delay``/``send_at`` hold
        every copy back (a binding's own ``delay`` wins)."""
        origin = self._origin(topic, payload, headers, routing_key, priority,
                              idempotency_key, delay, expires_in, send_at)
        await self.start()
        variables = {"payload": payload, "headers": origin.headers, "topic": topic,
                     "routing_key": routing_key or "", "priority": origin.priority.name.lower()}
        base_key = idempotency_key or origin.message_id
        chain = self.app.middleware
        for _ in range(REPLANS):
            assert self._matcher is not None
            plan = plan_route(self._matcher, variables, base_key, self._functions)
            call = RouteCall(self.keys, plan, origin, self._target,
                             self._target(self._matcher.rules.unrouted_queue))
            if chain.wraps_publish:
                reply = await chain.call_publish(topic, len(plan.copies),
                                                 partial(self._send, topic, call))
            else:
                reply = await self._send(topic, call)
            if reply[0] == STALE:
                await self.refresh()
                continue
            return self._result(origin, plan, call.deliveries(reply))
        raise RulesConflictError(f"the rules changed {REPLANS} times while a message to "
                                 f"{topic!r} was routed; publish it again")

    async def _send(self, topic: str, call: RouteCall) -> Any:
        ids = [sent[2] for _, made in call.groups for sent in made]
        return await self.app.broker.publish(topic, call.call(), call.durability,
                                             call.timeout or 1.0, ids)

    def _origin(self, topic: str, payload: Any, headers: dict[str, str] | None,
                routing_key: str | None, priority: Priority | str,
                idempotency_key: str | None, delay: timedelta | float | None,
                expires_in: timedelta | float | None, send_at: datetime | None = None
                ) -> Origin:
        check_topic(topic)
        if delay is not None and send_at is not None:
            raise ValidationError("delay", "give either delay or send_at, not both")
        if send_at is not None:
            to_ms(send_at, "send_at")  # refuses a naive or non-datetime value
        if routing_key is not None and (not isinstance(routing_key, str)
                                        or len(routing_key) > 255):
            raise ValidationError("routing_key", f"must be a string of <= 255 characters, "
                                  f"got {routing_key!r}")
        if idempotency_key is not None and (not isinstance(idempotency_key, str)
                                            or not 0 < len(idempotency_key) <= 400):
            raise ValidationError("idempotency_key", "must be a non-empty string of <= 400 "
                                  "chars")
        check_payload(payload)
        created = now_ms(self.app.clock)
        return Origin(new_message_id(created), topic, payload, routing_key,
                      validate_headers(headers), Priority.parse(priority),
                      None if delay is None else duration_ms(delay, "delay") / 1000, send_at,
                      None if expires_in is None else duration_ms(expires_in,
                                                                  "expires_in") / 1000,
                      created)

    def _result(self, origin: Origin, plan: RoutePlan, stored: list[Delivery]) -> RouteResult:
        chain = self.app.middleware
        copies = tuple(d for d in stored if d.reason is None)
        if chain.active:
            for delivery, planned in zip(copies, plan.copies, strict=True):
                if delivery.new:
                    binding = planned.binding.binding
                    chain.emit_published(delivery.queue, delivery.message_id,
                                         Priority.parse(binding.priority or origin.priority),
                                         origin.headers)
        return RouteResult(origin.message_id, origin.topic, plan.version, copies,
                           tuple(d for d in stored if d.reason is not None),
                           tuple(plan.filtered_out), plan.filter_errors, plan.dropped)

    async def reroute_unrouted(self, limit: int = 1000) -> Rerouted:
        """Publish the unrouted queue's dead letters (up to ``limit``, oldest first) to
        their topics again under the current rules; see :mod:`.reroute`."""
        from .reroute import reroute_unrouted

        return await reroute_unrouted(self, limit)

    # -- dry run -------------------------------------------------------------------------

    async def test(self, topic: str, payload: Any, *, headers: dict[str, str] | None = None,
                   routing_key: str | None = None,
                   priority: Priority | str = Priority.NORMAL) -> dict[str, Any]:
        """Which bindings the message would meet under the stored rules, and what each
        queue would receive; nothing is written."""
        origin = self._origin(topic, payload, headers, routing_key, priority, None, None, None)
        if not self.app.broker.connected:
            await self.app.connect()
        rules = await self.store.load()
        variables = {"payload": payload, "headers": origin.headers, "topic": topic,
                     "routing_key": routing_key or "", "priority": origin.priority.name.lower()}
        matched = rules.matching(topic)
        plan = plan_route(Matcher(rules, 0), variables, origin.message_id, self._functions)
        return {
            "version": rules.version, "topic": topic,
            "matched": [c.binding.name for c in matched],
            "filtered_out": plan.filtered_out, "filter_errors": plan.filter_errors,
            "copies": [{"binding": p.binding.binding.name, "queue": p.binding.binding.queue,
                        "priority": p.binding.binding.priority or origin.priority.name.lower(),
                        "delay": p.binding.binding.delay, "ttl": p.binding.binding.ttl,
                        "payload": p.payload} for p in plan.copies],
            "dead_lettered": [{"binding": f.binding, "queue": rules.unrouted_queue,
                               "reason": f.reason, "error": f.error} for f in plan.failures],
            "dropped": plan.dropped,
        }
