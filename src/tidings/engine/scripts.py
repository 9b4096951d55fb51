"""Lua scripts: one file per atomic operation under ``tidings/lua``, loaded once, called by SHA.

A line ``-- @include NAME`` inlines ``lua/includes/NAME.lua`` so shared helpers (moving an
entry to the dead-letter stream, say) are written once.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from functools import cache
from importlib import resources
from typing import Any

from redis.exceptions import NoScriptError

_INCLUDE = re.compile(r"^-- @include (\w+)$", re.MULTILINE)

Arg = str | bytes | int | float


@cache
def _source(name: str) -> str:
    text = resources.files("tidings.engine.lua").joinpath(f"{name}.lua").read_text("utf-8")
    return _INCLUDE.sub(lambda m: _source(f"includes/{m.group(1)}"), text)


class Script:
    """A server-side script, called by SHA and loaded on first NOSCRIPT."""

    __slots__ = ("name", "sha", "source")

    def __init__(self, name: str) -> None:
        self.name = name
        self.source = _source(name)
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()

    async def __call__(self, client: Any, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        try:
            return await client.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)
        except NoScriptError:
            # A restarted or failed-over server has an empty script cache.
            await client.execute_command("SCRIPT", "LOAD", self.source)
            return await client.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)


class QueueScripts:
    """The scripts of the core queue transitions."""

    def __init__(self) -> None:
        self.publish = Script("publish")
        self.fetch = Script("fetch")
        self.reclaim = Script("reclaim")
        self.extend = Script("extend")
        self.ack = Script("ack")
        self.retry = Script("retry")
        self.dead_letter = Script("dead_letter")
        self.cancel_delayed = Script("cancel_delayed")
        self.reschedule_delayed = Script("reschedule_delayed")
        self.dlq_replay = Script("dlq_replay")
        self.dlq_purge = Script("dlq_purge")

    def all(self) -> list[Script]:
        return [s for s in vars(self).values() if isinstance(s, Script)]


SCRIPTS = QueueScripts()
