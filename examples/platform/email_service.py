"""The email service: the ``email`` queue, sent over SMTP to the relay."""

from __future__ import annotations

from tidings import Tidings
from tidings.integrations.channel import ProviderLimits
from tidings.integrations.email import EmailConfig, EmailConsumer

from .common import RETRY, serve, smtp_address


def build() -> tuple[Tidings, EmailConsumer]:
    app = Tidings()
    host, port = smtp_address()
    # tls="none" only because the local relay is a plaintext fake; the default is STARTTLS.
    mail = EmailConsumer(EmailConfig(host=host, port=port, sender="noreply@shop.example",
                                     tls="none", limits=ProviderLimits(rate="200/s")))
    mail.install(app.queue("email", max_attempts=5, **RETRY))
    return app, mail


if __name__ == "__main__":
    serve(*build())
