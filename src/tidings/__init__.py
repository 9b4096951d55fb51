"""tidings: a reliable, fast message queue for notification platforms, on Redis Streams."""

from .app import Tidings
from .core.config import Durability, OnExpire, QueueConfig, RetryPolicy
from .core.errors import (
    AccessDeniedError,
    AuthenticationFailedError,
    BrokerUnavailableError,
    CampaignConflictError,
    CampaignNotFoundError,
    ConfigError,
    DeadLetter,
    DurabilityError,
    EmbeddedServerError,
    EnvelopeError,
    HandlerTimeoutError,
    LeaseLostError,
    MessageNotFoundError,
    PayloadError,
    PermissionDeniedError,
    Retry,
    ScheduleError,
    ScheduleExistsError,
    ScheduleNotFoundError,
    ServerConfigError,
    SettingsFileError,
    Snooze,
    TidingsError,
    UnknownQueueError,
    UntrustedCertificateError,
    ValidationError,
)
from .core.events import Event, EventKind, Middleware
from .core.message import Message, Priority
from .core.settings import Settings
from .observability.logs import JsonLogMiddleware
from .ordering.queue import OrderedQueue
from .queues.dead_letters import DeadLetter as DeadLetterEntry
from .queues.queue import MessageInfo, Outgoing, Queue, QueueStats
from .scheduling.campaigns import CampaignProgress, Campaigns, Recipient
from .scheduling.recurrence import AmbiguousPolicy, MissedPolicy, NonexistentPolicy, Recurrence
from .scheduling.schedules import Schedule, Schedules, publish_local
from .worker import Worker

__all__ = [
    "AccessDeniedError",
    "AmbiguousPolicy",
    "AuthenticationFailedError",
    "BrokerUnavailableError",
    "CampaignConflictError",
    "CampaignNotFoundError",
    "CampaignProgress",
    "Campaigns",
    "ConfigError",
    "DeadLetter",
    "DeadLetterEntry",
    "Durability",
    "DurabilityError",
    "EmbeddedServerError",
    "EnvelopeError",
    "Event",
    "EventKind",
    "HandlerTimeoutError",
    "JsonLogMiddleware",
    "LeaseLostError",
    "Message",
    "MessageInfo",
    "MessageNotFoundError",
    "Middleware",
    "MissedPolicy",
    "NonexistentPolicy",
    "OnExpire",
    "OrderedQueue",
    "Outgoing",
    "PayloadError",
    "PermissionDeniedError",
    "Priority",
    "Queue",
    "QueueConfig",
    "QueueStats",
    "Recipient",
    "Recurrence",
    "Retry",
    "RetryPolicy",
    "Schedule",
    "ScheduleError",
    "ScheduleExistsError",
    "ScheduleNotFoundError",
    "Schedules",
    "ServerConfigError",
    "Settings",
    "SettingsFileError",
    "Snooze",
    "Tidings",
    "TidingsError",
    "UnknownQueueError",
    "UntrustedCertificateError",
    "ValidationError",
    "Worker",
    "publish_local",
]
__version__ = "0.1.0"
