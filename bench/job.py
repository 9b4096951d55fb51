"""The job every benchmark publishes: a typical small notification payload.

Kept free of imports so worker processes that measure start-up load nothing extra.
"""

from __future__ import annotations

from typing import Any

PRIORITIES = ("high", "normal", "low")


def payload(i: int) -> dict[str, Any]:
    """A typical small notification payload (about 80 bytes once encoded)."""
    return {"to": f"user{i}@example.com", "template": "welcome", "vars": {"name": "Ada", "n": i}}


def priority(i: int) -> str:
    return PRIORITIES[i % 3]
