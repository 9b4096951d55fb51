"""Deciding what happens to a message after its handler failed or asked for something."""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

import orjson

from ..core.config import QueueConfig
from ..core.errors import DeadLetter, Retry, Snooze
from ..core.message import Message, now_ms


class Action(StrEnum):
    RETRY = "retry"
    SNOOZE = "snooze"
    DEAD_LETTER = "dead_letter"


@dataclass(slots=True, frozen=True)
class Decision:
    action: Action
    delay: float = 0.0  # seconds
    reason: str = ""
    error_json: str = ""  # for the dead-letter entry


def _seconds(value: timedelta | float) -> float:
    return max(0.0, value.total_seconds() if isinstance(value, timedelta) else float(value))


def error_details(message: Message, error: BaseException, attempts: int) -> str:
    """What the dead-letter entry records about the failure, as JSON text."""
    return orjson.dumps({
        "type": type(error).__qualname__,
        "message": str(error),
        "traceback": "".join(traceback.format_exception(error))[-8000:],
        "attempts": attempts,
        "created_at": message.created_at_ms,
        "failed_at": now_ms(),
    }).decode()


def decide(message: Message, error: BaseException, config: QueueConfig) -> Decision:
    """The outcome for ``message`` whose handler raised ``error`` (or a handler signal)."""
    if isinstance(error, Snooze):
        return Decision(Action.SNOOZE, _seconds(error.delay), "snoozed")
    attempts = message.attempts + 1
    if isinstance(error, DeadLetter):
        return Decision(Action.DEAD_LETTER, reason=error.reason,
                        error_json=error_details(message, error, attempts))
    max_attempts = message.max_attempts or config.retry.max_attempts
    if attempts >= max_attempts:
        return Decision(Action.DEAD_LETTER, reason="max_attempts",
                        error_json=error_details(message, error, attempts))
    if isinstance(error, Retry) and error.delay is not None:
        return Decision(Action.RETRY, _seconds(error.delay), error.reason)
    return Decision(Action.RETRY, config.retry.delay(attempts), f"{type(error).__name__}: {error}")
