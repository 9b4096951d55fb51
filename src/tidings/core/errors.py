"""Every exception tidings raises, in one place.

Errors a caller can fix (bad input) name the offending ``field`` and the ``reason``.
Handler control-flow signals (:class:`Retry`, :class:`Snooze`, :class:`DeadLetter`) live
here too: a handler raises them to steer what happens to the message it was given.
"""

from __future__ import annotations

from datetime import timedelta


class TidingsError(Exception):
    """Base class of every error tidings raises."""


class ValidationError(TidingsError, ValueError):
    """Bad input: ``field`` names what was wrong, ``reason`` says why."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


class PayloadError(ValidationError):
    """The payload cannot be encoded or is larger than the queue allows."""


class UnknownQueueError(ValidationError):
    """A queue name that was never declared on this app."""

    def __init__(self, name: str) -> None:
        super().__init__("queue", f"unknown queue {name!r}; declare it with app.queue({name!r})")


class ConfigError(ValidationError):
    """Invalid settings or queue configuration."""


class SettingsFileError(ConfigError):
    """The settings file is not valid TOML, or holds a bad value.

    ``path`` is the file; ``field`` the key that is wrong, or ``"file"`` when the file
    itself cannot be read (the reason then gives the line and column).
    """

    def __init__(self, path: str, field: str, reason: str) -> None:
        super().__init__(field, reason)
        self.path = path
        self.args = (f"{path}: {reason}" if field == "file" else f"{path}: {field}: {reason}",)


class ServerConfigError(TidingsError):
    """The Redis server is configured in a way that would lose messages."""


class BrokerUnavailableError(TidingsError):
    """The server could not be reached after the bounded retries."""


class DatabaseUnavailableError(TidingsError):
    """PostgreSQL (the ledger's database) could not be reached or refused the login."""


class AccessDeniedError(TidingsError):
    """The server refused our credentials or a command: not transient, never retried.

    ``user`` is the server user tidings connected as; ``detail`` is the server's reply.
    """

    def __init__(self, user: str, detail: str) -> None:
        self.user = user
        self.detail = detail
        super().__init__(f"server refused user {user!r}: {detail}")


class AuthenticationFailedError(AccessDeniedError):
    """Wrong or missing password (WRONGPASS, NOAUTH)."""


class PermissionDeniedError(AccessDeniedError):
    """The user may not run a command or touch a key (NOPERM)."""


class UntrustedCertificateError(TidingsError):
    """The server's TLS certificate failed verification: not transient, never retried.

    Give the CA that signed it (``TIDINGS_SECURITY__TLS_CA_FILE``) or fix the server's
    certificate; ``detail`` is what the TLS library reported.
    """

    def __init__(self, server: str, detail: str) -> None:
        self.server = server
        self.detail = detail
        super().__init__(f"the TLS certificate of {server} was not trusted: {detail}")


class ClientCertificateError(UntrustedCertificateError):
    """The server refused our TLS client certificate, or wants one and got none."""

    def __init__(self, server: str, detail: str) -> None:
        self.server = server
        self.detail = detail
        TidingsError.__init__(
            self, f"{server} refused the TLS client certificate: {detail} (set "
            "TIDINGS_SECURITY__TLS_CERT_FILE and TLS_KEY_FILE to one its CA signed)")


class InvalidTokenError(TidingsError):
    """A bearer token (API token or OIDC JWT) was not accepted; ``reason`` says why. The
    token itself is never part of the message."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"invalid token: {reason}")


class NotAuthorizedError(TidingsError):
    """The principal lacks the permission an operation needs (``publish:email`` ...)."""

    def __init__(self, principal: str, permission: str) -> None:
        self.principal = principal
        self.permission = permission
        super().__init__(f"{principal!r} lacks the permission {permission!r}")


class DurabilityError(TidingsError):
    """The write happened but the requested durability was not confirmed in time.

    The message may exist: publish again with the same idempotency key to be safe.
    """

    def __init__(self, message: str, message_ids: list[str]) -> None:
        self.message_ids = message_ids
        super().__init__(message)


class QueueFullError(TidingsError):
    """A publish was refused whole: nothing of it was stored.

    ``reason`` is ``"max_depth"`` (the queue holds its ``max_depth`` messages, or, with
    ``on_full="shed_low"``, a low-priority message met the share kept for the others) or
    ``"server_memory"`` (the server's used memory is at ``memory_refuse_at`` of its
    ``maxmemory``, or past it). Publish again after ``retry_after`` seconds; with
    idempotency keys a repeated publish is always safe.
    """

    def __init__(self, queue: str, reason: str, retry_after: float, *,
                 depth: int | None = None, limit: int | None = None,
                 detail: str = "") -> None:
        self.queue, self.reason, self.retry_after = queue, reason, retry_after
        self.depth, self.limit = depth, limit
        what = (f"holds {depth} messages queued or in flight (max_depth {limit})"
                if reason == "max_depth"
                else f"server memory is full{': ' + detail if detail else ''}")
        super().__init__(f"queue {queue!r} refused the publish: {what}; nothing was "
                         f"stored, retry after {retry_after:g}s")


class LeaseLostError(TidingsError):
    """A settle (ack, retry, dead-letter) was refused because the lease had moved on."""


class EnvelopeError(ValidationError):
    """A stored entry that is not a valid tidings envelope (``field`` names what is wrong).

    A ``ValueError`` too: every decoder failure is one.
    """


class UnsupportedEnvelopeError(EnvelopeError):
    """An envelope of a newer version than this tidings reads (upgrade the workers)."""


class HandlerTimeoutError(TidingsError, TimeoutError):
    """A handler ran past its queue's ``handler_timeout`` and was cancelled."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        super().__init__(f"handler ran past handler_timeout ({timeout:g} s)")


class MessageNotFoundError(TidingsError):
    """No message with that id is where the operation expected it."""


class EmbeddedServerError(TidingsError, RuntimeError):
    """The embedded server could not be found or started."""


class ScheduleError(ValidationError):
    """Invalid schedule input: ``field`` names what was wrong, ``reason`` says why.

    A :class:`tidings.errors.ValidationError` (hence also a ``ValueError``), so callers can
    catch every bad-input error of tidings in one place.
    """


class ScheduleNotFoundError(TidingsError, LookupError):
    """No schedule with that id."""

    def __init__(self, schedule_id: str) -> None:
        self.schedule_id = schedule_id
        super().__init__(f"no schedule {schedule_id!r}")


class ScheduleExistsError(ValidationError):
    """``add`` was given an id that is taken (pass ``replace=True`` to redefine it)."""


class CampaignNotFoundError(TidingsError, LookupError):
    """No campaign with that id."""

    def __init__(self, campaign_id: str) -> None:
        self.campaign_id = campaign_id
        super().__init__(f"no campaign {campaign_id!r}")


class CampaignConflictError(TidingsError):
    """The campaign's state forbids the change: another ``schedule`` run moved its cursor
    (run one at a time), or it is still scheduling, cancelled, or not finished yet."""


class RouteError(ValidationError):
    """A routing rule that cannot be saved: ``field`` names the rule and its part
    (``bindings[sms].filter``), ``reason`` says why, with the position for an expression
    (``line``/``column``, 1-based, else None)."""

    def __init__(self, field: str, reason: str, *, line: int | None = None,
                 column: int | None = None) -> None:
        self.line, self.column = line, column
        where = f" (line {line}, column {column})" if line is not None else ""
        super().__init__(field, reason + where)


class RouteNotFoundError(TidingsError, LookupError):
    """No binding with that name, or no stored rule set version with that number."""


class RulesConflictError(TidingsError):
    """The rule set changed between reading it and saving a change (another editor won);
    read it again and redo the change."""


class HandlerSignal(Exception):
    """Base of the exceptions a handler raises on purpose to choose an outcome."""


class Retry(HandlerSignal):
    """Retry this message after ``delay`` (default: the queue's backoff); counts as an attempt."""

    def __init__(self, delay: timedelta | float | None = None, reason: str = "retry requested"):
        self.delay = delay
        self.reason = reason
        super().__init__(reason)


class Snooze(HandlerSignal):
    """Put the message back for ``delay`` without spending an attempt."""

    def __init__(self, delay: timedelta | float) -> None:
        self.delay = delay
        super().__init__(f"snoozed for {delay}")


class DeadLetter(HandlerSignal):
    """Park the message in the dead-letter queue now, with ``reason``."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class QueueNotEmptyError(TidingsError):
    """A queue was not deleted: it still holds messages or live workers consume it.

    ``held`` counts its messages (queued, in flight, delayed, dead-lettered, held for fair
    feeding); ``consumers`` the workers that heartbeated within its visibility timeout.
    """

    def __init__(self, name: str, held: int, consumers: int) -> None:
        self.name, self.held, self.consumers = name, held, consumers
        what = [f"{held} messages"] if held else []
        what += [f"{consumers} live workers"] if consumers else []
        super().__init__(f"queue {name!r} still has {' and '.join(what)}; stop its workers "
                         "and producers first, or force the deletion")



__all__ = [
    "AccessDeniedError",
    "AuthenticationFailedError",
    "BrokerUnavailableError",
    "CampaignConflictError",
    "CampaignNotFoundError",
    "ConfigError",
    "DeadLetter",
    "DurabilityError",
    "EmbeddedServerError",
    "EnvelopeError",
    "HandlerSignal",
    "HandlerTimeoutError",
    "LeaseLostError",
    "MessageNotFoundError",
    "PayloadError",
    "PermissionDeniedError",
    "QueueFullError",
    "QueueNotEmptyError",
    "Retry",
    "RouteError",
    "RouteNotFoundError",
    "RulesConflictError",
    "ScheduleError",
    "ScheduleExistsError",
    "ScheduleNotFoundError",
    "ServerConfigError",
    "SettingsFileError",
    "Snooze",
    "TidingsError",
    "UnknownQueueError",
    "UnsupportedEnvelopeError",
    "UntrustedCertificateError",
    "ValidationError",
]
