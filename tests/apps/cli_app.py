"""An app for the CLI tests (``--app tests.apps.cli_app:app``), built from the environment.

It declares ``email``, with a handler that accepts everything, and ``big``, which takes
payloads of up to 16 MiB. Tests drop the module from ``sys.modules`` so that each
invocation reads the test's own key prefix.
"""

from __future__ import annotations

from tidings import Message, Tidings

app = Tidings()
email = app.queue("email")
big = app.queue("big", max_payload_bytes=16 * 1024 * 1024)


@email.handler
async def send(msg: Message) -> None:
    """Accepts everything (a worker test runs it as a real process)."""
