"""Accepted risks on the server: an operator accepts a failing check for a box or a whole group (reason,
until a day, who); the counts move at once, come back by themselves when it expires (time injected) or is
revoked; each step is a transition and in the audit log. SQLite and PostgreSQL."""

from __future__ import annotations

import time
from typing import Any, Dict

import pytest
from tests.support.server import Api, device_identity, make_report

DAY = 86400.0
SOON = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 200 * DAY))


def _box(api: Api, device_id: str, failing: Any, exposed: bool = False, secret: str = "") -> str:
    ident = device_identity(device_id, "host-" + device_id)
    key = api.enroll(ident, secret or None).json()["node_key"]
    doc = make_report(ident, list(failing), exposed)
    for f in doc["findings"]:
        if f["id"] == "router.upnp-mappings" and f["status"] == "fail":
            f["severity"] = "critical"
    assert api.checkin(key, doc).status_code == 201
    return key


def _summary(api: Api) -> Dict[str, int]:
    return api.client.get("/api/v1/summary", headers=api.auth).json()["counts"]


def _accept(api: Api, **body: str) -> Any:
    return api.client.post("/api/v1/acceptances", json=body, headers=api.auth)


def _day(offset_days: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(time.time() + offset_days * DAY))


def test_accepting_moves_the_counts_and_expiry_brings_them_back(api: Api) -> None:
    _box(api, "vpn-box", ["router.upnp-mappings"], exposed=True)
    _box(api, "ssh-box", ["service.telnet"])
    assert _summary(api)["exposed"] == 1 and _summary(api)["at_risk"] == 1
    made = _accept(api, check_id="router.upnp-mappings", reason="the VPN concentrator", until=_day(30),
                   device_id="vpn-box")
    assert made.status_code == 201, made.text
    counts = _summary(api)
    assert counts["exposed"] == 0 and counts["ok"] == 1 and counts["at_risk"] == 1
    device = api.client.get("/api/v1/devices/vpn-box", headers=api.auth).json()
    assert device["verdict"] == "ok" and device["failing"] == []
    assert device["findings"][0]["status"] == "fail"  # the stored report is untouched
    event = api.client.get("/api/v1/transitions?kind=risk_accepted", headers=api.auth).json()["transitions"][0]
    assert event["detail"]["previous_verdict"] == "exposed" and event["detail"]["verdict"] == "ok"

    # Expiry (time injected): the box is exposed again, with a transition and an audit entry.
    assert api.server.acceptances.expire(now=time.time() + 40 * DAY) == 1
    assert _summary(api)["exposed"] == 1
    expired = api.client.get("/api/v1/transitions?kind=acceptance_expired", headers=api.auth).json()["transitions"]
    assert expired[0]["device_id"] == "vpn-box" and expired[0]["detail"]["verdict"] == "exposed"
    actions = [e["action"] for e in api.client.get("/api/v1/audit", headers=api.auth).json()["entries"]]
    assert actions[:2] == ["risk.expire", "risk.accept"]
    assert api.client.get("/api/v1/acceptances", headers=api.auth).json()["acceptances"] == []


def test_a_group_acceptance_covers_its_boxes_and_new_reports(api: Api) -> None:
    api.admin.groups.create("Lab")
    secret = api.admin.enroll_secrets.create("lab", "Lab")[1]
    keys = {d: _box(api, d, ["service.telnet"], secret=secret) for d in ("lab-1", "lab-2")}
    _box(api, "other", ["service.telnet"])
    assert _accept(api, check_id="service.telnet", reason="isolated lab", until=_day(3), group="Lab").status_code == 201
    counts = _summary(api)
    assert counts["ok"] == 2 and counts["at_risk"] == 1
    # The next check-in of a lab box keeps it accepted.
    ident = device_identity("lab-1", "host-lab-1")
    doc = make_report(ident, ["service.telnet"], generated_at="2030-01-01T00:00:00Z")
    answer = api.checkin(keys["lab-1"], doc)
    assert answer.status_code == 201 and answer.json()["verdict"] == "ok"
    listed = api.client.get("/api/v1/acceptances", headers=api.auth).json()["acceptances"]
    assert [(a["group"], a["check_id"]) for a in listed] == [("Lab", "service.telnet")]
    assert api.client.delete("/api/v1/acceptances/%d" % listed[0]["id"], headers=api.auth).status_code == 200
    assert _summary(api)["at_risk"] == 3
    assert api.client.delete("/api/v1/acceptances/%d" % listed[0]["id"], headers=api.auth).status_code == 404


@pytest.mark.parametrize("body,status", [
    ({"check_id": "service.telnet", "reason": "", "until": SOON, "device_id": "b"}, 400),
    ({"check_id": "service.telnet", "reason": "x", "until": "2000-01-01", "device_id": "b"}, 400),
    ({"check_id": "service.telnet", "reason": "x", "until": "soon", "device_id": "b"}, 400),
    ({"check_id": "service.telnet", "reason": "x", "until": "2999-01-01", "device_id": "b"}, 400),
    ({"check_id": "service.telnet", "reason": "x", "until": SOON}, 400),
    ({"check_id": "service.telnet", "reason": "x", "until": SOON, "device_id": "nope"}, 404),
    ({"check_id": "service.telnet", "reason": "x", "until": SOON, "group": "nope"}, 404),
])
def test_bad_acceptances_are_refused(api: Api, body: Dict[str, str], status: int) -> None:
    _box(api, "b", ["service.telnet"])
    answer = _accept(api, **body)
    assert answer.status_code == status, answer.text
    assert api.client.get("/api/v1/acceptances", headers=api.auth).json()["acceptances"] == []


def test_accepting_from_the_device_page(api: Api) -> None:
    _box(api, "page-box", ["service.telnet"])
    api.login()
    csrf = api.csrf("/devices/page-box")
    page = api.client.get("/devices/page-box").text
    assert "Accept this risk" in page
    answer = api.client.post("/devices/page-box/accept", data={"csrf": csrf, "check_id": "service.telnet",
                                                                "reason": "spare box", "until": _day(7),
                                                                "scope": "device"}, follow_redirects=False)
    assert answer.status_code == 303
    page = api.client.get("/devices/page-box").text
    assert 'data-accepted="service.telnet"' in page and "spare box" in page and 'id="acceptances"' in page
    assert "1 risk accepted" in api.client.get("/").text
    ident = api.client.get("/api/v1/acceptances", headers=api.auth).json()["acceptances"][0]["id"]
    assert api.client.post("/devices/page-box/revoke-acceptance", data={"csrf": csrf, "id": str(ident)},
                           follow_redirects=False).status_code == 303
    assert api.client.get("/api/v1/devices/page-box", headers=api.auth).json()["verdict"] == "at_risk"
