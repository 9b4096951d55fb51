"""The push service: the ``push`` queue, sent through an FCM-HTTP-v1-shaped API."""

from __future__ import annotations

from tidings import Tidings
from tidings.integrations.push import FcmConfig, FcmPush

from .common import PUSH_TOKEN, RETRY, providers_url, serve


def build() -> tuple[Tidings, FcmPush]:
    app = Tidings()
    push = FcmPush(FcmConfig(project_id="shop", token=PUSH_TOKEN, base_url=providers_url(),
                             allow_http=True))
    push.install(app.queue("push", max_attempts=5, **RETRY))
    return app, push


if __name__ == "__main__":
    serve(*build())
