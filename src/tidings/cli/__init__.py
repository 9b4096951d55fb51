"""The ``tidings`` command: main.py holds the top-level commands and assembles the groups
(flow.py, ordered.py, schedules.py); support.py the shared option types, app loading and
the one error-to-exit-code table; output.py tables and progress; views.py the message
views that ``inspect`` and ``dlq list`` share."""

from .main import cli, main

__all__ = ["cli", "main"]
