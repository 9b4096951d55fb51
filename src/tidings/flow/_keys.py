"""Key names of the named flow-control primitives (rate limits, concurrency caps, breakers)."""

from __future__ import annotations

from ..core.errors import ValidationError


def hash_tagged(prefix: str, kind: str, name: str) -> str:
    """The key of one named limiter; the name is the Cluster hash tag, so one slot per name.

    An empty tag would make Redis hash the whole key, hence the check.
    """
    if not name:
        raise ValidationError("name", "must not be empty")
    return f"{prefix}:{kind}:{{{name}}}"
