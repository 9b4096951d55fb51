"""`tidings worker bench.peers.apps.tidings_app:app`."""

from ..base import Ctx, mark_started
from ..tidings_peer import make_app

app, queue = make_app(Ctx.from_env(), lambda body: mark_started())
