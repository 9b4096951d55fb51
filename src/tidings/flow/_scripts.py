"""Loader for the flow-control Lua scripts: read from the package once, called by SHA."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Sequence
from importlib import resources
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from ..errors import ValidationError

Arg = str | bytes | int | float


class Script:
    """One server-side script from ``tidings/lua/<name>.lua``, called by EVALSHA."""

    __slots__ = ("name", "sha", "source")

    def __init__(self, name: str) -> None:
        self.name = name
        self.source = resources.files("tidings.lua").joinpath(f"{name}.lua").read_text("utf-8")
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()

    async def __call__(self, client: Redis, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        # redis-py leaves execute_command untyped; the typed alias keeps mypy --strict quiet.
        execute: Callable[..., Awaitable[Any]] = client.execute_command
        try:
            return await execute("EVALSHA", self.sha, len(keys), *keys, *args)
        except NoScriptError:
            # The script cache is empty after a restart, a failover or SCRIPT FLUSH.
            await execute("SCRIPT", "LOAD", self.source)
            return await execute("EVALSHA", self.sha, len(keys), *keys, *args)


def text(value: Any) -> str:
    """A reply element as str, whether or not the client decodes responses."""
    return value.decode() if isinstance(value, bytes) else str(value)


def hash_tagged(prefix: str, kind: str, name: str) -> str:
    """The key of one named limiter; the name is the Cluster hash tag, so one slot per name.

    An empty tag would make Redis hash the whole key, hence the check.
    """
    if not name:
        raise ValidationError("name", "must not be empty")
    return f"{prefix}:{kind}:{{{name}}}"
