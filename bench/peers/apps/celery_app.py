"""`celery -A bench.peers.apps.celery_app worker`."""

from ..base import Ctx, mark_started
from ..celery_peer import make_app

app, job = make_app(Ctx.from_env(), lambda body: mark_started())
