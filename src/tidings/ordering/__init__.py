"""Ordered queues: per-key order over partitions, each owned by one worker at a time."""

from .queue import OrderedQueue

__all__ = ["OrderedQueue"]
