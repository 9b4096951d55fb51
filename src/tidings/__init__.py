"""tidings: a reliable, fast message queue for notification platforms, on Redis Streams."""

from .app import Tidings
from .campaign import CampaignProgress, Campaigns, Recipient
from .config import Durability, OnExpire, QueueConfig, RetryPolicy
from .dlq import DeadLetter as DeadLetterEntry
from .errors import (
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
from .events import Event, EventKind, Middleware
from .log import JsonLogMiddleware
from .message import Message, Priority
from .ordering import OrderedQueue
from .queue import MessageInfo, Outgoing, Queue, QueueStats
from .recurrence import AmbiguousPolicy, MissedPolicy, NonexistentPolicy, Recurrence
from .scheduler import Schedule, Schedules, publish_local
from .settings import Settings
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
