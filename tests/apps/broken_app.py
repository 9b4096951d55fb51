"""An app module that fails while it is imported (for the CLI's load errors)."""

from __future__ import annotations

from tidings import Tidings

app = Tidings()
email = app.queue("email")
handler = undefined_name  # type: ignore[name-defined]  # noqa: F821
