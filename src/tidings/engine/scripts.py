"""The script layer: one Lua file per atomic operation, loaded at connect, called by SHA.

Every ``*.lua`` file under ``engine/lua`` is a script named after its file; a line
``-- @include NAME`` inlines ``lua/includes/NAME.lua``, so shared helpers (moving an entry
to the dead-letter stream, say) are written once.

A full server (used memory past ``maxmemory``) refuses every script at its start, before it
writes anything, so a publish is refused whole, never half done. Scripts that keep accepted
messages moving (fetch, ack, retry, heartbeats, flow-control gates ...) declare
``-- @flags allow-oom``: they must run on a full server, or nothing would ever drain it.

Each script's header names its KEYS and ARGV; the typed wrappers that build them by name
live beside the code that uses them (``queues/scripts.py``, ``flow/scripts.py``,
``ordering/scripts.py``, ``scheduling/scripts.py``). This module is the one place that
talks EVALSHA: the one NOSCRIPT path (a restarted or failed-over server has an empty script
cache) and the one pipelined call.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Sequence
from functools import cache
from importlib import resources
from typing import Any

from redis.exceptions import NoScriptError

_INCLUDE = re.compile(r"^-- @include (\w+)$", re.MULTILINE)
_FLAGS = re.compile(r"^-- @flags ([a-z-]+(?:,[a-z-]+)*)$", re.MULTILINE)
_PACKAGE = "tidings.engine.lua"

Arg = str | bytes | int | float


@cache
def _source(name: str) -> str:
    text = resources.files(_PACKAGE).joinpath(f"{name}.lua").read_text("utf-8")
    return _INCLUDE.sub(lambda m: _source(f"includes/{m.group(1)}"), text)


class Script:
    """A server-side script, called by SHA and loaded again on NOSCRIPT."""

    __slots__ = ("name", "sha", "source")

    def __init__(self, name: str) -> None:
        self.name = name
        body = _source(name)
        flags = _FLAGS.search(body)
        # The shebang makes the server honour the flags (Redis >= 7.0, Valkey).
        self.source = (f"#!lua flags={flags.group(1)}\n" if flags else "#!lua\n") + body
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()

    def __repr__(self) -> str:
        return f"<Script {self.name}>"

    async def __call__(self, client: Any, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        try:
            return await client.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await client.execute_command("SCRIPT", "LOAD", self.source)
            return await client.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)


class ScriptLibrary:
    """Every script of tidings, discovered from the package's Lua files."""

    def __init__(self) -> None:
        root = resources.files(_PACKAGE)
        names = sorted(p.name[:-4] for p in root.iterdir() if p.name.endswith(".lua"))
        self._scripts = {name: Script(name) for name in names}

    def __getitem__(self, name: str) -> Script:
        return self._scripts[name]

    def __iter__(self) -> Iterator[Script]:
        return iter(self._scripts.values())

    def __len__(self) -> int:
        return len(self._scripts)

    async def preload(self, client: Any) -> None:
        """Load the scripts the server lacks (at connect), so no first call pays for it.

        One round trip asks which are cached already (a server other workers use has them
        all, and compiling them again is most of a start-up's server time); a second loads
        the rest, if any.
        """
        scripts = list(self)
        cached = await client.execute_command("SCRIPT", "EXISTS", *(s.sha for s in scripts))
        missing = [s for s, known in zip(scripts, cached, strict=True) if not int(known)]
        if missing:
            pipe = client.pipeline(transaction=False)
            for script in missing:
                pipe.execute_command("SCRIPT", "LOAD", script.source)
            await pipe.execute()


LIBRARY = ScriptLibrary()
ScriptCall = tuple[Script, Sequence[str], Sequence[Arg]]


async def run_pipelined(client: Any, calls: Sequence[ScriptCall],
                        after: Sequence[tuple[Arg, ...]] = ()) -> list[Any]:
    """Run script calls in one round trip; those the server lost are loaded and run again.

    ``after``: plain commands sent behind the calls in the same round trip (a WAIT that
    confirms them, say); their replies follow the calls' in the result. Raises the first
    error reply. A call refused with NOSCRIPT did not run, so running it again is safe;
    every other reply stands. This is the one place that handles NOSCRIPT for pipelines.
    """
    results: list[Any] = [None] * (len(calls) + len(after))
    todo = list(range(len(calls)))
    for attempt in range(2):
        pipe = client.pipeline(transaction=False)
        for i in todo:
            script, keys, args = calls[i]
            pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
        for command in after:
            pipe.execute_command(*command)
        replies = await pipe.execute(raise_on_error=False)
        missing = []
        for i, reply in zip([*todo, *range(len(calls), len(results))], replies, strict=True):
            if isinstance(reply, NoScriptError) and attempt == 0:
                missing.append(i)
            elif isinstance(reply, Exception):
                raise reply
            else:
                results[i] = reply
        if not missing:
            break
        await LIBRARY.preload(client)
        todo = missing
    return results
