"""Webhook formats — our JSON, Slack, Teams (Adaptive Card), ntfy (JSON publish to the server root) — each
with the box, its group and a link to its page; one time format; a "send test" button. A real HTTP receiver
on 127.0.0.1 gets them."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, Iterator, List

import pytest
from sqlalchemy import update
from tests.support.server import Api, device_identity, make_report

from exposure_guard_server.db import models as m
from exposure_guard_server.services.admin import Webhooks
from exposure_guard_server.webhooks import WebhookSender

LOOPBACK = "127.0.0.0/8"


class PathReceiver:
    """Records every POST with its path, headers and JSON body."""

    def __init__(self) -> None:
        self.got: List[Dict[str, Any]] = []
        got = self.got

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                got.append({"path": self.path, "headers": dict(self.headers), "json": json.loads(body)})
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = "http://127.0.0.1:%d" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[PathReceiver]:
    r = PathReceiver()
    try:
        yield r
    finally:
        r.close()


def _deliver(api: Api) -> None:
    sender = WebhookSender(api.server.engine, backoff_base=1.0, timeout=5, allow=LOOPBACK)
    while sender.run_due():
        pass


def test_every_format_carries_the_box_its_group_and_a_link(api: Api, receiver: PathReceiver) -> None:
    hooks = Webhooks(api.server.engine, allow_internal=LOOPBACK)
    for fmt in ("json", "slack", "teams", "ntfy"):
        hooks.create(fmt, receiver.base + "/" + fmt + "/alerts-topic", ["became_exposed", "went_stale"], format=fmt)
    api.server.settings.set("public_url", "https://eg.example.com/")
    api.admin.groups.create("Acme Dental")
    secret = api.admin.enroll_secrets.create("acme", "Acme Dental")[1]
    ident = device_identity("fmt-1", "front-desk")
    key = api.enroll(ident, secret).json()["node_key"]
    assert api.checkin(key, make_report(ident, ["router.upnp-mappings"], exposed=True)).status_code == 201
    _deliver(api)
    by_path = {item["path"]: item for item in receiver.got}
    link = "https://eg.example.com/devices/fmt-1"
    ours = by_path["/json/alerts-topic"]["json"]
    assert ours["device"]["group"] == "Acme Dental" and ours["dashboard_url"] == link
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", ours["at"]) and ours["device"]["last_seen_at"].endswith("Z")
    slack = by_path["/slack/alerts-topic"]["json"]
    assert slack["text"].startswith("front-desk (Acme Dental) became exposed: now failing router.upnp-mappings")
    assert "<%s|open in ExposureGuard>" % link in slack["text"]
    card = by_path["/teams/alerts-topic"]["json"]["attachments"][0]
    assert card["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert card["content"]["actions"][0]["url"] == link and "Acme Dental" in card["content"]["body"][0]["text"]
    ntfy = by_path["/ntfy/"]  # JSON publish: the server root, the topic in the body
    assert ntfy["json"]["topic"] == "alerts-topic" and ntfy["json"]["priority"] == 5 and ntfy["json"]["click"] == link
    for item in receiver.got:  # every format is signed the same way
        assert {k.lower() for k in item["headers"]} >= {"x-exposureguard-signature", "x-exposureguard-event"}

    # went_stale's detail carries the last time it was seen as an RFC 3339 string too (it is stored as epoch).
    receiver.got.clear()
    with api.server.engine.begin() as conn:
        conn.execute(update(m.devices).values(stale_base=0))
    api.server.stale.run()
    _deliver(api)
    stale = next(i["json"] for i in receiver.got if i["path"] == "/json/alerts-topic")
    assert stale["event"] == "went_stale" and stale["detail"]["last_seen_at"].endswith("Z")


def test_the_send_test_button_queues_one_delivery_in_the_hooks_format(api: Api, receiver: PathReceiver) -> None:
    hooks = Webhooks(api.server.engine, allow_internal=LOOPBACK)
    hook_id, _secret = hooks.create("chat", receiver.base + "/slack", [], format="slack")
    api.login()
    csrf = api.csrf()
    answer = api.client.post("/admin/webhooks/%d/test" % hook_id, data={"csrf": csrf}, follow_redirects=False)
    assert answer.status_code == 303
    _deliver(api)
    assert len(receiver.got) == 1 and receiver.got[0]["json"]["text"].startswith("test-nas (test group) test delivery")
    log = api.client.get("/admin").text
    assert re.search(r"<td>test</td><td>delivered</td>", log)
    assert api.client.post("/admin/webhooks/999/test", data={"csrf": csrf}).status_code == 404


@pytest.mark.parametrize("fields,message", [({"format": "xml"}, "format must be one of"),
                                            ({"format": "ntfy", "url": "http://127.0.0.1:9/"}, "names its topic")])
def test_bad_formats_are_refused(api: Api, fields: Dict[str, str], message: str) -> None:
    from exposure_guard_server.errors import ApiError

    hooks = Webhooks(api.server.engine, allow_internal=LOOPBACK)
    args = dict({"url": "http://127.0.0.1:9/x"}, **fields)
    with pytest.raises(ApiError, match=message):
        hooks.create("bad", args["url"], [], format=args["format"])


def test_public_url_is_checked(api: Api) -> None:
    from exposure_guard_server.errors import ApiError

    for bad in ("ftp://x", "eg.example.com", "https://x/?q=1", "https://x/a b", "https://x/#top"):
        with pytest.raises(ApiError):
            api.server.settings.set("public_url", bad)
    answer = api.client.put("/api/v1/settings", json={"public_url": "https://eg.example.com/"}, headers=api.auth)
    assert answer.status_code == 200 and answer.json()["public_url"] == "https://eg.example.com"
