"""The app ``tidings bridge ... --app tests.apps.conformance_app:app`` runs in the bridge
conformance suite: the environment (``TIDINGS_REDIS_URL``, ``TIDINGS_KEY_PREFIX``,
``TIDINGS_BRIDGE__*``) configures it; its queue ``bridged`` has a 2 s visibility timeout,
so what a killed outbound bridge held comes back soon."""

from __future__ import annotations

from tidings import Tidings

app = Tidings()
app.queue("bridged", visibility_timeout=2)
