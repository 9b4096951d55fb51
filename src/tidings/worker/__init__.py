"""The worker: fetches with leases, runs handlers, settles each message exactly once.

One :class:`Worker` per process serves any number of queues; each queue gets a
:class:`QueueRunner` (runner.py: fetch loop and handler calls) with its leases
(leases.py: heartbeat, reclaim, leaving the group) and its settling (settle.py: coalesced
acks, retries, dead letters, hand-backs). Messages that a dying process held run alone
(isolation.py), so a crash is blamed on the message that caused it.
"""

from ..queues.handlers import FetchGate, HandlerSpec, WorkerService
from .runner import PROMOTE_LIMIT, QueueRunner
from .worker import Worker

__all__ = ["PROMOTE_LIMIT", "FetchGate", "HandlerSpec", "QueueRunner", "Worker",
           "WorkerService"]
