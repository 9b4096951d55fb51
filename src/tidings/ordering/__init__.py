"""Ordered queues: per-key order over partitions, each owned by one worker at a time."""

from .queue import OrderedQueue
from .worker import OrderedWorker

__all__ = ["OrderedQueue", "OrderedWorker"]
