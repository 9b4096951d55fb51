"""`saq bench.peers.apps.saq_app.settings`."""

from ..base import Ctx, mark_started
from ..saq_peer import settings as make_settings

settings = make_settings(Ctx.from_env(), lambda body: mark_started())
