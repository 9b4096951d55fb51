"""Progress of long operations (DLQ replay and purge, campaigns, queue deletion).

A ``progress`` callback is called as ``progress(done, total)`` as the work goes: ``done``
items so far, ``total`` the expected count or None while it is unknown. It runs on the
caller's event loop between round trips, so it must be quick (print, update a bar).
"""

from __future__ import annotations

from collections.abc import Callable

ProgressCallback = Callable[[int, int | None], None]
