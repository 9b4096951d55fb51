"""tidings: a reliable, fast message queue for notification platforms, on Redis Streams."""

from .app import Tidings
from .config import Durability, OnExpire, QueueConfig, RetryPolicy
from .dlq import DeadLetter as DeadLetterEntry
from .errors import (
    BrokerUnavailableError,
    ConfigError,
    DeadLetter,
    DurabilityError,
    EmbeddedServerError,
    LeaseLostError,
    MessageNotFoundError,
    PayloadError,
    Retry,
    ServerConfigError,
    Snooze,
    TidingsError,
    UnknownQueueError,
    ValidationError,
)
from .events import Event, EventKind, Middleware
from .log import JsonLogMiddleware
from .message import Message, Priority
from .queue import MessageInfo, Outgoing, Queue, QueueStats
from .settings import Settings
from .worker import Worker

__all__ = [
    "BrokerUnavailableError",
    "ConfigError",
    "DeadLetter",
    "DeadLetterEntry",
    "Durability",
    "DurabilityError",
    "EmbeddedServerError",
    "Event",
    "EventKind",
    "JsonLogMiddleware",
    "LeaseLostError",
    "Message",
    "MessageInfo",
    "MessageNotFoundError",
    "Middleware",
    "OnExpire",
    "Outgoing",
    "PayloadError",
    "Priority",
    "Queue",
    "QueueConfig",
    "QueueStats",
    "Retry",
    "RetryPolicy",
    "ServerConfigError",
    "Settings",
    "Snooze",
    "Tidings",
    "TidingsError",
    "UnknownQueueError",
    "ValidationError",
    "Worker",
]
__version__ = "0.1.0"
