"""The worker: fetches with leases, runs handlers, settles each message exactly once.

One :class:`Worker` per process serves any number of queues; each queue gets a
:class:`QueueRunner` (runner.py: fetch loop) that calls its handler through a
:class:`HandlerInvoker` (invoke.py: middleware, threads, the time limit), holds its leases
(leases.py: heartbeat, reclaim, leaving the group) and settles (settle.py: coalesced acks,
retries, dead letters, hand-backs). Messages that a dying process held run alone
(isolation.py), so a crash is blamed on the message that caused it. The retry decision
(retry.py), the invoker and the ack coalescer (coalesce.py) serve ordered queues too.
"""

from .runner import PROMOTE_LIMIT, QueueRunner
from .worker import Worker

__all__ = ["PROMOTE_LIMIT", "QueueRunner", "Worker"]
