"""Health checks of one worker: liveness (``/livez``) and readiness (``/readyz``).

Liveness answers "should this process be restarted?": the event loop answers (it runs
this check) and every fetch loop went round within ``deadline`` seconds (a loop that
waits for its handlers to free a slot counts as current). A server outage does not make
a worker unlive: restarting it would not bring Redis back, and its loops retry.

Readiness answers "should it get work?": not shutting down (false from the SIGTERM on,
before the drain begins, so a load balancer stops sending first), Redis answers a PING
within ``redis_timeout``, and every script is loaded (a restarted server has an empty
script cache: the check loads what is missing, and fails if it cannot).

Each report names every check with its result and lists the failing ones.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..core.middleware import WorkerView
from ..engine.scripts import LIBRARY
from ..queues.host import QueueHost


def _report(checks: dict[str, dict[str, Any]]) -> dict[str, Any]:
    failing = [name for name, check in checks.items() if not check["ok"]]
    return {"status": "fail" if failing else "ok", "failing": failing, "checks": checks}


class Health:
    """The liveness and readiness checks of ``worker`` (see the module docstring)."""

    def __init__(self, app: QueueHost, worker: WorkerView | None, *, deadline: float = 60.0,
                 redis_timeout: float = 2.0) -> None:
        self.app = app
        self.worker = worker
        self.deadline = deadline
        self.redis_timeout = redis_timeout

    async def liveness(self) -> dict[str, Any]:
        checks: dict[str, dict[str, Any]] = {"event_loop": {"ok": True}}
        age = self.worker.fetch_loop_age() if self.worker is not None else None
        if age is not None:
            checks["fetch_loop"] = {"ok": age <= self.deadline, "age_seconds": round(age, 3),
                                    "deadline_seconds": self.deadline}
        return _report(checks)

    async def readiness(self) -> dict[str, Any]:
        stopping = self.worker is not None and self.worker.stopping
        checks: dict[str, dict[str, Any]] = {"shutting_down": {"ok": not stopping}}
        checks["redis"] = await self._redis()
        checks["scripts"] = (await self._scripts() if checks["redis"]["ok"]
                             else {"ok": False, "error": "redis is not answering"})
        return _report(checks)

    async def _redis(self) -> dict[str, Any]:
        if not self.app.broker.connected:
            return {"ok": False, "error": "not connected"}
        try:
            await asyncio.wait_for(self.app.broker.client.ping(), self.redis_timeout)
        except TimeoutError:
            return {"ok": False, "error": f"no answer to PING within {self.redis_timeout}s"}
        except Exception as exc:
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        return {"ok": True}

    async def _scripts(self) -> dict[str, Any]:
        client = self.app.broker.client
        scripts = list(LIBRARY)
        try:
            loaded = await asyncio.wait_for(
                client.script_exists(*[s.sha for s in scripts]), self.redis_timeout)
            missing = [s for s, found in zip(scripts, loaded, strict=True) if not found]
            if missing:
                await asyncio.wait_for(LIBRARY.preload(client), self.redis_timeout)
        except Exception as exc:
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        return {"ok": True, "scripts": len(scripts), "reloaded": len(missing)}
