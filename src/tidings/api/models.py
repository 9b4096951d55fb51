"""The request and response bodies of the HTTP API, as pydantic models (the OpenAPI
document's schemas). Types and shapes only: what a value may be (a priority's name, a
queue's depth limit ...) is checked by the Python API the routes call, so HTTP and Python
callers get the same errors for the same input."""

from __future__ import annotations

from datetime import date as Date
from datetime import datetime, time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Lane = Literal["high", "normal", "low"]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PublishIn(_In):
    """One message. Times: ``delay`` seconds from now, or ``send_at`` (an ISO 8601 instant
    with its offset, or a wall time with ``zone``); ``ttl`` seconds or ``expires_at``."""

    payload: Any = Field(description="any JSON value")
    priority: Lane = "normal"
    delay: float | None = Field(None, description="seconds before delivery")
    send_at: datetime | None = None
    zone: str | None = Field(None, description="IANA zone of a send_at without an offset")
    ttl: float | None = Field(None, description="seconds the message may wait, then expires")
    expires_at: datetime | None = None
    idempotency_key: str | None = None
    correlation_id: str | None = None
    headers: dict[str, str] | None = None
    max_attempts: int | None = None


class BatchIn(_In):
    messages: list[PublishIn] = Field(min_length=1)


class ErrorDetail(BaseModel):
    type: str
    field: str | None
    reason: str


class ErrorOut(BaseModel):
    error: ErrorDetail


class PublishedOut(BaseModel):
    id: str
    queue: str
    duplicate: bool = Field(description="an earlier message had this idempotency key")


class OutcomeOut(BaseModel):
    id: str | None
    status: Literal["published", "duplicate", "refused"]
    error: ErrorDetail | None = None


class BatchOut(BaseModel):
    queue: str
    published: int
    duplicates: int
    refused: int
    results: list[OutcomeOut]


class QueueOut(BaseModel):
    name: str
    lanes: dict[str, int]
    depth: int
    in_flight: int
    delayed: int
    dead: int
    oldest_age: float | None
    consumers: int
    paused: bool
    counters: dict[str, int]


class QueueDetailOut(QueueOut):
    weights: dict[str, int]
    paused_keys: list[str]
    visibility_timeout: float
    max_depth: int | None
    encryption: str | None


class WeightsIn(_In):
    high: int
    normal: int
    low: int


class PauseIn(_In):
    key: str | None = Field(None, description="only this key of the queue")


class PauseOut(BaseModel):
    queue: str
    paused: bool
    key: str | None = None
    released: int = Field(0, description="a key's parked messages made due by the resume")


class RescheduleIn(_In):
    delay: float | None = None
    send_at: datetime | None = None
    zone: str | None = None


class RescheduleOut(BaseModel):
    id: str
    queue: str
    due_at: datetime


class SelectionIn(_In):
    """Which dead letters: ``ids``, or a filter (reason, error type, dead before), or
    ``all``; at least one."""

    ids: list[str] | None = None
    reason: str | None = None
    error_type: str | None = None
    before: datetime | None = None
    after: datetime | None = None
    all: bool = False


class ReplayIn(SelectionIn):
    rate: float | None = Field(None, description="messages per second at most")


class CountOut(BaseModel):
    queue: str
    count: int
    skipped: list[dict[str, Any]] = Field(default_factory=list)


class ScheduleIn(_In):
    id: str | None = None
    queue: str | None = None
    topic: str | None = None
    cron: str | None = None
    every: float | None = Field(None, description="seconds")
    timezone: str = "UTC"
    start: datetime | None = None
    end: datetime | None = None
    max_count: int | None = None
    payload: Any = None
    priority: Lane = "normal"
    headers: dict[str, str] | None = None
    nonexistent: str = "next_valid"
    ambiguous: str = "first"
    missed: str = "once"
    grace: float = 60.0
    paused: bool = False
    replace: bool = False


class ScheduleUpdateIn(_In):
    """The definition fields to change (those given)."""

    queue: str | None = None
    cron: str | None = None
    every: float | None = None
    timezone: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    max_count: int | None = None
    payload: Any = None
    priority: Lane | None = None
    headers: dict[str, str] | None = None
    nonexistent: str | None = None
    ambiguous: str | None = None
    missed: str | None = None
    grace: float | None = None


class RecipientIn(_In):
    id: str
    payload: Any = None
    zone: str | None = None


class CampaignIn(_In):
    id: str
    queue: str
    recipients: list[RecipientIn]
    local_time: time | None = None
    at: datetime | None = None
    date: Date | None = None
    default_zone: str = "UTC"
    throttle_per_minute: int | None = None
    priority: Lane = "normal"
    headers: dict[str, str] | None = None
    expires_in: float | None = None
    nonexistent: str = "next_valid"
    ambiguous: str = "first"
    if_past: Literal["send", "skip"] = "send"


class CampaignUpdateIn(_In):
    """What may change while a campaign runs (those given; any other field is a 422)."""

    throttle_per_minute: int | None = None
    at: datetime | None = None


class PrincipalOut(BaseModel):
    name: str
    kind: str
    scopes: list[str]
