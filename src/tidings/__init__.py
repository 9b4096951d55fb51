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
    QueueFullError,
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
from .core.events import Event, EventKind
from .core.message import Message, Priority
from .core.middleware import Middleware
from .core.settings import Settings
from .observability.logs import JsonLogMiddleware
from .ordering import OrderedQueue, OrderedWorker
from .queues.dead_letters import DeadLetterEntry
from .queues.inspection import MessageInfo
from .queues.queue import Outgoing, Queue
from .queues.stats import QueueStats
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
    "OrderedWorker",
    "Outgoing",
    "PayloadError",
    "PermissionDeniedError",
    "Priority",
    "Queue",
    "QueueConfig",
    "QueueFullError",
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
