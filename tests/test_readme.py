"""The README runs as written: its Python blocks, in order, against the test server.

The blocks share one namespace, as they would in one session, and run as ``__main__`` (as a
reader runs a file); the Quickstart is ``examples/myapp.py``, which later blocks import as
``myapp``, as a reader's own module.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from conftest import Recorder, drop_keys, new_prefix
from flow_helpers import ROOT
from tidings import EventKind

README = ROOT / "README.md"
EXAMPLE = ROOT / "examples" / "myapp.py"


def fenced_blocks() -> list[tuple[str, str]]:
    """``(language, text)`` of every fenced block of the README, in order."""
    found: list[tuple[str, str]] = []
    language: str | None = None
    lines: list[str] = []
    for line in README.read_text().splitlines(keepends=True):
        if line.startswith("```"):
            if language is None:
                language, lines = line[3:].strip(), []
            else:
                found.append((language, "".join(lines)))
                language = None
        elif language is not None:
            lines.append(line)
    return found


def python_blocks() -> list[str]:
    return [text for language, text in fenced_blocks() if language == "python"]


@pytest.fixture
def readme_env(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """TIDINGS_* for the blocks (the session's server, a fresh prefix) and ``myapp``."""
    prefix = new_prefix()
    monkeypatch.setenv("TIDINGS_REDIS_URL", redis_url)
    monkeypatch.setenv("TIDINGS_KEY_PREFIX", prefix)
    monkeypatch.syspath_prepend(str(EXAMPLE.parent))
    sys.modules.pop("myapp", None)
    yield prefix
    sys.modules.pop("myapp", None)


def test_the_quickstart_is_examples_myapp() -> None:
    assert python_blocks()[0] == EXAMPLE.read_text()


def test_every_python_block_of_the_readme_runs_in_order(readme_env: str, redis_url: str,
                                                        ) -> None:
    import asyncio

    from redis.asyncio import Redis

    blocks = python_blocks()
    assert len(blocks) >= 7
    namespace: dict[str, Any] = {"__name__": "__main__"}
    try:
        for number, block in enumerate(blocks, 1):
            exec(compile(block, f"README.md python block {number}", "exec"), namespace)
    finally:
        async def cleanup() -> None:
            client = Redis.from_url(redis_url)
            await drop_keys(client, readme_env)
            await client.aclose()

        asyncio.run(cleanup())


async def test_the_quickstart_processes_its_messages(readme_env: str,
                                                      recorder: Recorder) -> None:
    import myapp

    myapp.app.add_middleware(recorder)
    try:
        await myapp.orchestrate()
        async with myapp.app.worker():
            await recorder.wait_count(EventKind.ACKED, 1001, timeout=60)
        stats = await myapp.email.stats()
        assert recorder.counts[EventKind.DEAD_LETTERED] == 0 and stats.dead == 0
        assert stats.delayed == 2 and stats.depth == stats.in_flight == 0  # the two due later
    finally:
        await drop_keys(myapp.app.broker.client, readme_env)
        await myapp.app.close()


def test_every_command_line_of_the_readme_names_a_real_command_and_options() -> None:
    from typer.main import get_command

    from tidings.cli.main import cli

    root = get_command(cli)
    lines = [line.split("#")[0].split() for language, block in fenced_blocks()
             if language in ("", "sh") for line in block.splitlines()
             if line.startswith("tidings ")]
    assert len(lines) > 30
    for words in lines:
        for alternative in words[1].split("|"):
            command: Any = root
            tokens = [alternative, *words[2:]]
            while tokens and hasattr(command, "commands"):
                sub = tokens[0].split("|")[0]
                assert sub in command.commands, words
                command, tokens = command.commands[sub], tokens[1:]
            known = {opt for param in command.params for opt in param.opts}
            for token in re.findall(r"--[a-z-]+", " ".join(tokens)):
                assert token in known, (words, token)
