"""Per-queue configuration, the retry policy, and the naming rules of queues and stored ids."""

from __future__ import annotations

import random
from datetime import timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from . import errors

MAX_WEIGHT = 1000  # a lane weight's upper bound


class Durability(StrEnum):
    """How far a publish waits before returning; see the README's guarantees section."""

    MEMORY = "memory"
    DISK = "disk"
    REPLICATED = "replicated"


class OnExpire(StrEnum):
    DEAD_LETTER = "dead_letter"
    DROP = "drop"


class OnFull(StrEnum):
    """What a queue at its ``max_depth`` does with a publish (see the README's overload
    section): refuse every lane, or refuse the low lane first (from LOW_LANE_SHARE of
    ``max_depth``), keeping the rest of the room for high and normal messages."""

    REFUSE = "refuse"
    SHED_LOW = "shed_low"


LOW_LANE_SHARE = 0.8


PositiveSeconds = Annotated[float, Field(gt=0)]
DEFAULT_HANDLER_TIMEOUT = 300.0  # seconds; see QueueConfig.handler_timeout
# Handler calls at once per worker process, by measurement (python -m bench.sweep, README
# "Sizing"): the no-op drain peaks at 64 (256: 0.79x of that), and I/O-bound handlers scale
# linearly with it, so 64 is the best engine figure and twice the I/O throughput of 32.
DEFAULT_HANDLER_CONCURRENCY = 64
MAX_HANDLER_TIMEOUT = 24 * 3600.0

# Names callers choose that become parts of Redis keys. Schedules check a queue name before
# the queue is declared, and schedule and campaign ids follow one rule, hence shared here.
QUEUE_NAME_PATTERN = r"^[A-Za-z0-9_.\-]{1,64}$"
RECORD_ID_PATTERN = r"^[A-Za-z0-9_.:\-]{1,128}$"


class RetryPolicy(BaseModel):
    """Exponential backoff with full jitter: delay = uniform(base*factor^n * (1-jitter), ...).

    ``jitter`` is the fraction of the computed delay that is randomised (0 = none, 1 = full).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_attempts: int = Field(5, ge=1, le=1000)
    base: PositiveSeconds = 1.0
    factor: float = Field(2.0, ge=1.0)
    cap: PositiveSeconds = 300.0
    jitter: float = Field(0.2, ge=0.0, le=1.0)

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before attempt number ``attempt + 1`` (``attempt`` >= 1 failed)."""
        raw = min(self.cap, self.base * self.factor ** max(0, attempt - 1))
        spread = raw * self.jitter
        return raw - spread + (rng or random).random() * spread


RETRY_FIELD = "retry"  # the run-time retry override's field in a queue's config hash


def retry_with(base: RetryPolicy, changes: dict[str, Any]) -> RetryPolicy:
    """``base`` with ``changes`` applied, validated; a typed error names a bad field."""
    unknown = sorted(set(changes) - set(RetryPolicy.model_fields))
    if unknown:
        raise errors.ValidationError(unknown[0], "not a field of the retry policy")
    try:
        return RetryPolicy.model_validate({**base.model_dump(), **changes})
    except ValidationError as exc:
        error = exc.errors()[0]
        raise errors.ValidationError(".".join(str(p) for p in error["loc"]) or "retry",
                                     error["msg"]) from None


def _seconds(value: Any) -> Any:
    return value.total_seconds() if isinstance(value, timedelta) else value


class QueueConfig(BaseModel):
    """Everything a queue can be tuned with. All durations are seconds (or timedelta)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=QUEUE_NAME_PATTERN)
    retry: RetryPolicy = RetryPolicy()
    visibility_timeout: PositiveSeconds = 30.0
    # A hung handler would hold its slot and its message for ever (its lease is renewed
    # while it runs); None means no limit.
    handler_timeout: Annotated[float, Field(gt=0, le=MAX_HANDLER_TIMEOUT)] | None = (
        DEFAULT_HANDLER_TIMEOUT)
    max_deliveries: int = Field(5, ge=1)
    weights: tuple[int, int, int] = (6, 3, 1)
    max_payload_bytes: int = Field(256 * 1024, gt=0)
    dedupe_window: PositiveSeconds = 24 * 3600.0
    default_ttl: PositiveSeconds | None = None
    on_expire: OnExpire = OnExpire.DEAD_LETTER
    durability: Durability = Durability.MEMORY
    durability_timeout: PositiveSeconds = 1.0
    # What the queue may hold (queued, in flight, delayed) before publishes are refused;
    # None: bounded only by the server's memory (see Settings.memory_refuse_at).
    max_depth: int | None = Field(None, ge=1)
    on_full: OnFull = OnFull.REFUSE
    # Message-level encryption of payloads (tidings.security.encryption); None: plaintext.
    encryption: Literal["aes-256-gcm"] | None = None

    def depth_limits(self) -> tuple[int | None, int | None]:
        """The depth a publish may fill the queue to: (high and normal, low)."""
        if self.max_depth is None:
            return None, None
        if self.on_full is OnFull.SHED_LOW:
            return self.max_depth, max(1, int(self.max_depth * LOW_LANE_SHARE))
        return self.max_depth, self.max_depth

    @field_validator(
        "visibility_timeout", "handler_timeout", "dedupe_window", "default_ttl",
        "durability_timeout", mode="before",
    )
    @classmethod
    def _durations(cls, value: Any) -> Any:
        return _seconds(value)

    @field_validator("weights")
    @classmethod
    def _weights(cls, value: tuple[int, int, int]) -> tuple[int, int, int]:
        if any(w < 0 for w in value) or sum(value) == 0:
            raise ValueError("weights must be >= 0 and not all zero")
        if any(w > MAX_WEIGHT for w in value):  # shares, not counts: 1000 is plenty
            raise ValueError(f"weights must be <= {MAX_WEIGHT}")
        return value


def build_queue_config(name: str, **options: Any) -> QueueConfig:
    """Build a QueueConfig, turning pydantic's error into a ConfigError naming the field.

    Retry options may be given flat (``max_attempts=5, backoff_base=2``) for convenience.
    """
    retry_fields = {"max_attempts": "max_attempts", "backoff_base": "base",
                    "backoff_factor": "factor", "backoff_cap": "cap", "jitter": "jitter"}
    retry_options = {retry_fields[k]: _seconds(options.pop(k)) for k in list(options)
                     if k in retry_fields}
    try:
        if retry_options:
            base = options.pop("retry", RetryPolicy())
            options["retry"] = base.model_copy(update=retry_options)
            RetryPolicy.model_validate(options["retry"].model_dump())
        return QueueConfig(name=name, **options)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "queue"
        raise errors.ConfigError(field, first["msg"]) from None
    except TypeError as exc:
        raise errors.ConfigError("queue", str(exc)) from None
