"""The example platform runs end to end as one command: orchestrator, four channel
services as their own processes, the fake providers; every notification arrives once."""

from __future__ import annotations

import json
import subprocess
import sys

from flow_helpers import ROOT


def test_the_example_platform_delivers_every_notification_once(redis_url: str) -> None:
    done = subprocess.run([sys.executable, "-m", "examples.platform", "--redis-url",
                           redis_url, "--json"], cwd=ROOT, capture_output=True, text=True,
                          timeout=180, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["published"] == {"email": 3, "sms": 2, "push": 6, "webhooks": 6}
    # The UNREGISTERED device's push is dead-lettered; every other copy is delivered once,
    # some after a retry (greylisting, 503, UNAVAILABLE, 429).
    assert report["delivered"] == {"email": 3, "sms": 2, "push": 5, "webhook": 6}
    assert report["dead_lettered"] == {"email": 0, "sms": 0, "push": 1, "webhooks": 0}
    assert report["attempts"] == {"email": 4, "sms": 3, "push": 7, "webhook": 7}
    assert report["repeats"] == {"email": 0, "sms": 0, "push": 0, "webhook": 0}
    assert "ada@example.org: Welcome, Ada" in report["received"]["email"]
    assert "+4915100000001: Order 41 has shipped" in report["received"]["sms"]
    assert any(line.startswith("/hooks/globex (signature verified)")
               for line in report["received"]["webhook"])
