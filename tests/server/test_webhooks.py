"""Webhooks: signed JSON on transitions, retried with backoff, visible delivery log (a real HTTP receiver
on 127.0.0.1)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any, Dict, Iterator

import pytest
from tests.support.server import Api, device_identity, make_report
from tests.support.webhook_receiver import Receiver

from exposure_guard_server.services.admin import Webhooks
from exposure_guard_server.webhooks import WebhookSender

LOOPBACK = "127.0.0.0/8"  # the receivers here are on loopback, an internal range: allowed explicitly


def _hooks(api: Api) -> Webhooks:
    return Webhooks(api.server.engine, allow_internal=LOOPBACK)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    try:
        yield r
    finally:
        r.close()


def _verify(secret: str, item: Dict[str, Any]) -> bool:
    headers = {k.lower(): v for k, v in item["headers"].items()}
    stamp = headers["x-exposureguard-timestamp"]
    expected = "sha256=" + hmac.new(secret.encode(), stamp.encode() + b"." + item["body"], hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, headers["x-exposureguard-signature"])


def test_transition_webhook_is_signed_retried_and_logged(api: Api, receiver: Receiver) -> None:
    _hook_id, secret = _hooks(api).create("ops", receiver.url, ["became_exposed", "fixed"])
    sender = WebhookSender(api.server.engine, backoff_base=5.0, allow=LOOPBACK)
    dev = device_identity("dev-w", hostname="<b>nas</b>")
    key = api.enroll_key(dev)  # "enrolled" is not subscribed: nothing queued
    assert api.count("webhook_deliveries") == 0
    api.checkin(key, make_report(dev, failing=["router.upnp-mappings"], exposed=True,
                                 generated_at="2024-01-01T00:00:00Z"))
    receiver.fail_next = 1
    assert sender.run_due() == 1
    assert receiver.received == []
    log = api.admin.webhooks.deliveries()
    assert log[0]["status"] == "pending" and log[0]["attempts"] == 1 and log[0]["last_status"] == 500
    assert log[0]["last_error"] == "HTTP 500 Internal Server Error"  # the status, never the receiver's text
    # Not due yet: backoff (≥ half the base delay).
    assert sender.run_due() == 0
    assert sender.run_due(now=time.time() + 10) == 1
    assert len(receiver.received) == 1
    item = receiver.received[0]
    assert _verify(secret, item)
    assert not _verify("another secret!!", item)
    payload = json.loads(item["body"])
    assert payload["event"] == "became_exposed"
    assert payload["device"]["device_id"] == "dev-w" and payload["device"]["hostname"] == "<b>nas</b>"
    assert payload["detail"]["newly_failing"] == ["router.upnp-mappings"]
    assert {k.lower(): v for k, v in item["headers"].items()}["x-exposureguard-event"] == "became_exposed"
    log = api.admin.webhooks.deliveries()
    assert log[0]["status"] == "delivered" and log[0]["attempts"] == 2
    # Fixed → second event.
    api.checkin(key, make_report(dev, generated_at="2024-01-01T01:00:00Z"))
    sender.run_due()
    assert [json.loads(i["body"])["event"] for i in receiver.received] == ["became_exposed", "fixed"]
    # The delivery log is on the admin page, escaped.
    api.login()
    page = api.client.get("/admin").text
    assert "delivered" in page and "became_exposed" in page and "HTTP 500" not in page.split("Delivery log")[0]


def test_webhook_gives_up_after_max_attempts(api: Api) -> None:
    from exposure_guard_server import webhooks

    _hooks(api).create("dead", "http://127.0.0.1:9/nothing-listens", ["enrolled"])
    dev = device_identity("dev-x")
    api.enroll_key(dev)
    sender = WebhookSender(api.server.engine, backoff_base=1.0, timeout=2, allow=LOOPBACK)
    now = time.time()
    for attempt in range(webhooks.MAX_ATTEMPTS):
        assert sender.run_due(now=now + 10000 * (attempt + 1)) == 1
    log = api.admin.webhooks.deliveries()
    assert log[0]["status"] == "failed" and log[0]["attempts"] == webhooks.MAX_ATTEMPTS
    assert sender.run_due(now=now + 10 ** 7) == 0


def test_webhook_url_validation(api: Api) -> None:
    from exposure_guard_server.errors import ApiError

    for bad in ("ftp://x", "javascript:alert(1)", "http://", "not a url", "http://127.0.0.1/a b",
                "http://127.0.0.1/\r\nX-Injected: 1", "http://127.0.0.1:99999/"):
        with pytest.raises(ApiError):
            _hooks(api).create("x", bad, [])
    with pytest.raises(ApiError):
        _hooks(api).create("x", "http://127.0.0.1/", ["no_such_event"])
