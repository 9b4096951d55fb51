"""A notification platform in miniature, built from tidings' channel consumers.

``python -m examples.platform`` (or ``make example-platform``) starts the embedded server
and the local fake providers (:mod:`.fake_providers`), runs each channel service as its own
process (:mod:`.email_service`, :mod:`.sms_service`, :mod:`.push_service`,
:mod:`.webhook_service`), lets the orchestrator (:mod:`.orchestrator`) publish what happened
to topics, and prints what each provider received.
"""
