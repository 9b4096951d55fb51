"""Alert thresholds: defaults for every queue, overridden per queue (settings file or code).

In ``tidings.toml``::

    [alerts]
    oldest_age_high = 5          # seconds the oldest waiting high message may wait
    [alerts.queues.marketing]
    oldest_age_low = 3600
    no_consumers_for = false     # off for this queue

A threshold set to ``None`` (``false`` in TOML) turns its alert off. Both the generated
Prometheus rules (``tidings alerts rules``) and the in-process evaluator read them.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .keys import LANE_NAMES


def _off(value: Any) -> Any:
    """``false`` in a TOML file turns a threshold off, like ``None`` in code."""
    return None if value is False else value


class AlertThresholds(BaseModel):
    """The thresholds of one queue (or the defaults of all); ``None`` turns an alert off."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    oldest_age_high: float | None = Field(5.0, gt=0, description="seconds, high lane")
    oldest_age_normal: float | None = Field(60.0, gt=0, description="seconds, normal lane")
    oldest_age_low: float | None = Field(900.0, gt=0, description="seconds, low lane")
    depth: int | None = Field(None, ge=0, description="waiting messages, all lanes")
    dlq_growth: int | None = Field(0, ge=0, description="new dead letters per window")
    error_ratio: float | None = Field(0.25, gt=0, le=1, description="failed / handled")
    no_consumers_for: float | None = Field(60.0, gt=0, description="seconds")
    breaker_open_for: float | None = Field(300.0, gt=0, description="seconds")
    lease_lost_per_minute: float | None = Field(1.0, ge=0, description="leases lost")
    window: float = Field(300.0, ge=60, description="seconds of the rate windows")
    pending_for: float = Field(30.0, ge=0, description="seconds a condition must hold")

    @field_validator("*", mode="before")
    @classmethod
    def _false_is_off(cls, value: Any) -> Any:
        return _off(value)

    def oldest_age(self, lane: str) -> float | None:
        """The oldest-message-age threshold of ``lane`` (high, normal, low)."""
        if lane not in LANE_NAMES:
            raise ValueError(f"unknown lane {lane!r}")
        value: float | None = getattr(self, f"oldest_age_{lane}")
        return value


class AlertSettings(AlertThresholds):
    """Default thresholds plus per-queue overrides (``queues.<name>``: only what differs)."""

    queues: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @field_validator("queues")
    @classmethod
    def _valid_overrides(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for name, override in value.items():
            if not name:
                raise ValueError("a queue name must not be empty")
            try:
                AlertThresholds(**override)
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(part) for part in first["loc"])
                known = ", ".join(AlertThresholds.model_fields)
                reason = (f"unknown threshold; the thresholds are {known}"
                          if first["type"] == "extra_forbidden" else first["msg"])
                raise ValueError(f"{name}.{where}: {reason}") from None
        return value

    def for_queue(self, name: str) -> AlertThresholds:
        """The thresholds of queue ``name``: the defaults, with its overrides applied."""
        base = self.model_dump(exclude={"queues"})
        return AlertThresholds(**{**base, **self.queues.get(name, {})})

    def with_queue(self, name: str, **override: Any) -> AlertSettings:
        """A copy with ``override`` applied to queue ``name`` (thresholds set in code)."""
        queues = {**self.queues, name: {**self.queues.get(name, {}), **override}}
        return AlertSettings(**{**self.model_dump(exclude={"queues"}), "queues": queues})
