"""The SMS service: the ``sms`` queue, sent through a Twilio-shaped API."""

from __future__ import annotations

from tidings import Tidings
from tidings.integrations.channel import ProviderLimits
from tidings.integrations.sms import TwilioConfig, TwilioSms

from .common import RETRY, SMS_ACCOUNT, SMS_TOKEN, providers_url, serve


def build() -> tuple[Tidings, TwilioSms]:
    app = Tidings()
    sms = TwilioSms(TwilioConfig(account_sid=SMS_ACCOUNT, auth_token=SMS_TOKEN,
                                 sender="+15005550006", base_url=providers_url(),
                                 allow_http=True, limits=ProviderLimits(rate="50/s")))
    sms.install(app.queue("sms", max_attempts=5, **RETRY))
    return app, sms


if __name__ == "__main__":
    serve(*build())
