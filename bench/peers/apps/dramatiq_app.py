"""`dramatiq bench.peers.apps.dramatiq_app`."""

from ..base import Ctx, mark_started
from ..dramatiq_peer import make_broker

broker, job = make_broker(Ctx.from_env(), lambda body: mark_started())
