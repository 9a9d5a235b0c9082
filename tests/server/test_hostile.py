"""Hostile input: bad keys, replays, forgeries, oversized and malformed bodies, XSS — on both databases."""

from __future__ import annotations

import gzip
import json
import re

import pytest
from tests.support.server import Api, device_identity, finding, make_report

XSS = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def _nothing_stored(api: Api, reports: int = 0) -> None:
    assert api.count("reports") == reports


def test_missing_and_bad_node_keys(api: Api) -> None:
    dev = device_identity("dev-1")
    api.enroll_key(dev)
    doc = make_report(dev)
    assert api.checkin(None, doc).status_code == 401
    assert api.checkin("egn_not-a-real-key", doc).status_code == 401
    assert api.checkin("", doc, headers={"Authorization": "Bearer "}).status_code == 401
    assert api.checkin(None, doc, headers={"Authorization": "Basic YWRtaW46YWRtaW4="}).status_code == 401
    response = api.checkin("x" * 5000, doc)
    assert response.status_code == 401 and response.headers.get("www-authenticate") == "Bearer"
    # The key is checked before the body is parsed: garbage from strangers is never looked at.
    assert api.checkin("egn_not-a-real-key", None, raw=b"{garbage").status_code == 401
    assert api.checkin("egn_not-a-real-key", None, raw=b"\x1f\x8b junk",
                       headers={"Content-Encoding": "gzip"}).status_code == 401
    _nothing_stored(api)


def test_forged_report_for_another_device_is_rejected(api: Api) -> None:
    mine, victim = device_identity("dev-mine"), device_identity("dev-victim")
    key = api.enroll_key(mine)
    api.enroll_key(victim)
    forged = make_report(victim, exposed=False)
    response = api.checkin(key, forged)
    assert response.status_code == 403
    _nothing_stored(api)
    detail = api.client.get("/api/v1/devices/dev-victim", headers=api.auth).json()
    assert detail["verdict"] == "pending" and detail["reports"] == 0


def test_replays(api: Api) -> None:
    dev_a, dev_b = device_identity("dev-a"), device_identity("dev-b")
    key_a, key_b = api.enroll_key(dev_a), api.enroll_key(dev_b)
    doc = make_report(dev_a, failing=["service.telnet"])
    assert api.checkin(key_a, doc).status_code == 201
    # Exact replay: accepted as a duplicate, stored once.
    for _ in range(3):
        assert api.checkin(key_a, doc).json()["duplicate"] is True
    # Same report_id, altered content (e.g. "fixed" flipped): refused, original kept.
    altered = json.loads(json.dumps(doc))
    altered["findings"][2]["status"] = "pass"
    altered["summary"]["fail"] = 0
    assert api.checkin(key_a, altered).status_code == 409
    # Another device replaying someone else's report_id with its own identity: refused.
    stolen = make_report(dev_b, report_id=doc["report_id"])
    assert api.checkin(key_b, stolen).status_code == 409
    _nothing_stored(api, reports=1)
    assert api.client.get("/api/v1/devices/dev-a", headers=api.auth).json()["verdict"] == "at_risk"
    assert api.client.get("/api/v1/devices/dev-b", headers=api.auth).json()["reports"] == 0


def test_oversized_bodies(api: Api) -> None:
    dev = device_identity("dev-1")
    key = api.enroll_key(dev)
    cap = api.server.config.max_body
    big = make_report(dev, extra=[finding("big.evidence")])
    big["findings"][-1]["evidence"]["blob"] = "A" * (cap + 10)  # past the agent's own caps: a hostile sender
    assert api.checkin(key, big).status_code == 413
    # A gzip bomb: small on the wire, huge when inflated — refused without inflating it all.
    bomb = gzip.compress(b"{" + b" " * (50 * 1024 * 1024) + b"}")
    assert len(bomb) < cap
    response = api.checkin(key, None, raw=bomb, headers={"Content-Encoding": "gzip"})
    assert response.status_code == 413
    # Content-Length lying about a big body is refused up front.
    response = api.client.post("/api/v1/checkin", content=b"x" * (cap + 1),
                               headers={"Authorization": "Bearer " + key})
    assert response.status_code == 413
    _nothing_stored(api)


@pytest.mark.parametrize("raw,encoding,status", [
    (b"{not json", "", 400),
    (b"[1, 2, 3]", "", 400),
    (b'"a string"', "", 400),
    (b"\xff\xfe\x00garbage", "", 400),
    (b"[" * 100000 + b"]" * 100000, "", 400),
    (b'{"duration_ms": NaN}', "", 400),
    (b"not gzip at all", "gzip", 400),
    (b"{}", "br", 415),
    (b"{}", "", 422),
])
def test_malformed_bodies(api: Api, raw: bytes, encoding: str, status: int) -> None:
    key = api.enroll_key(device_identity("dev-1"))
    headers = {"Content-Encoding": encoding} if encoding else {}
    response = api.checkin(key, None, raw=raw, headers=headers)
    assert response.status_code == status, response.text
    assert "detail" in response.json()
    _nothing_stored(api)


@pytest.mark.parametrize("mutate", [
    lambda d: d.pop("report_id"),
    lambda d: d.__setitem__("report_id", "../../etc/passwd"),
    lambda d: d.__setitem__("schema", "exposure-guard/report/v9"),
    lambda d: d["findings"][0].__setitem__("status", "pwned"),
    lambda d: d["findings"][0].__setitem__("severity", "apocalyptic"),
    lambda d: d["findings"][0].__setitem__("id", "Bad ID <x>"),
    lambda d: d.__setitem__("generated_at", "yesterday"),
    lambda d: d["device"].__setitem__("hostname", "h" * 300),
    lambda d: d.__setitem__("findings", [d["findings"][0]] * 501),
    lambda d: d["summary"].__setitem__("exposed", "yes"),
])
def test_schema_violations_are_rejected(api: Api, mutate: object) -> None:
    dev = device_identity("dev-1")
    key = api.enroll_key(dev)
    doc = make_report(dev)
    mutate(doc)  # type: ignore[operator]
    response = api.checkin(key, doc)
    assert response.status_code == 422, response.text
    assert "report-v1" in response.json()["detail"] or "report/v1" in response.json()["detail"]
    _nothing_stored(api)


def test_device_strings_are_escaped_in_html(api: Api) -> None:
    dev = device_identity("dev-xss", hostname=XSS, firmware='5.1"><b>fw')
    dev["model"] = "<iframe src=javascript:alert(2)>"
    key = api.enroll_key(dev)
    evil = finding("service.telnet", "fail", severity="high", file=XSS, value="</pre><script>alert(3)</script>")
    evil.summary = "<b onmouseover=alert(4)>hover</b>"
    evil.title = "<svg onload=alert(5)>"
    doc = make_report(dev, extra=[evil])
    assert api.checkin(key, doc).status_code == 201
    api.login()
    pages = [api.client.get("/"), api.client.get("/devices/dev-xss"), api.client.get("/reports/" + doc["report_id"]),
             api.client.get("/events"), api.client.get("/?q=" + XSS)]
    for page in pages:
        assert page.status_code == 200
        html = page.text
        assert "<script>alert" not in html and "<img src=x" not in html and "<iframe" not in html
        assert "<b onmouseover" not in html and "<svg onload" not in html
        assert "</pre><script>" not in html
    device_html = pages[1].text
    assert "&lt;script&gt;alert(" in device_html  # shown, as text
    assert "&lt;b onmouseover=alert(4)&gt;" in device_html
    # No page ever runs a script: the CSP forbids them outright.
    assert "script-src" not in pages[0].headers["content-security-policy"]
    assert "default-src 'none'" in pages[0].headers["content-security-policy"]
    assert not re.search(r"<script", device_html, re.IGNORECASE)


def test_hostile_device_id_in_urls(api: Api) -> None:
    dev = device_identity('id/with "quotes" & <tags> ?x=1#frag')
    key = api.enroll_key(dev)
    assert api.checkin(key, make_report(dev)).status_code == 201
    api.login()
    fleet = api.client.get("/").text
    link = re.search(r'href="(/devices/[^"]+)"', fleet).group(1)
    assert "<" not in link and '"' not in link and "?" not in link and "#" not in link
    page = api.client.get(link)
    assert page.status_code == 200 and "&lt;tags&gt;" in page.text
