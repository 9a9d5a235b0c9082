"""What changed: transitions named precisely, onboarding kept out of alerts, and the event log filtered by
time, kind, group and device and paged with a cursor (API and page). On SQLite and PostgreSQL."""

from __future__ import annotations

import re
from typing import Any, Dict, List

import pytest
from sqlalchemy import update
from tests.support.server import Api, device_identity, make_report

from exposure_guard_server.db import models as m
from exposure_guard_server.reportlogic import derive_transitions

DAY = 86400.0


@pytest.mark.parametrize("before,after,kind", [
    ("pending", "ok", "first_report"), ("pending", "at_risk", "first_report"), ("pending", "exposed", "became_exposed"),
    ("ok", "at_risk", "became_at_risk"), ("ok", "exposed", "became_exposed"), ("at_risk", "exposed", "became_exposed"),
    ("exposed", "at_risk", "no_longer_exposed"), ("exposed", "ok", "fixed"), ("at_risk", "ok", "fixed"),
    ("ok", "ok", None), ("at_risk", "at_risk", None), ("exposed", "exposed", None),
])
def test_each_change_of_verdict_has_one_precise_name(before: str, after: str, kind: Any) -> None:
    found = derive_transitions(before, {}, after, {"x": "high"} if after != "ok" else {})
    assert [k for k, _ in found] == ([kind] if kind else [])


def _events(api: Api, **params: Any) -> Dict[str, Any]:
    response = api.client.get("/api/v1/transitions", params=params, headers=api.auth)
    assert response.status_code == 200, response.text
    return response.json()


def _onboard(api: Api, group: str, n: int) -> List[str]:
    api.client.post("/api/v1/groups", json={"name": group}, headers=api.auth)
    secret = api.client.post("/api/v1/enroll-secrets", json={"group": group}, headers=api.auth).json()["secret"]
    keys = []
    for i in range(n):
        ident = device_identity("%s-%d" % (group, i), "%s-nas%d" % (group, i))
        key = api.enroll(ident, secret).json()["node_key"]
        assert api.checkin(key, make_report(ident, ["service.telnet"])).status_code == 201
        keys.append(key)
    return keys


def _backdate(api: Api, seconds: float) -> None:
    """Move every event so far ``seconds`` into the past (time injected, no waiting)."""
    with api.server.engine.begin() as conn:
        conn.execute(update(m.transitions).values(at=m.transitions.c.at - seconds))


def test_onboarding_is_not_an_alert(api: Api) -> None:
    from exposure_guard_server.services.admin import Webhooks

    hooks = Webhooks(api.server.engine, allow_internal="127.0.0.0/8")
    hooks.create("all", "http://127.0.0.1:9/a")
    hooks.create("all and onboarding", "http://127.0.0.1:9/b", "*,enrolled")
    _onboard(api, "acme", 3)
    with api.server.engine.connect() as conn:
        sent = sorted((row.webhook_id, row.event) for row in conn.execute(m.webhook_deliveries.select()))
    assert sent == [(2, "enrolled")] * 3
    assert {e["kind"] for e in _events(api)["transitions"]} == {"enrolled", "first_report"}


def test_events_filtered_to_yesterday_for_one_group_and_paged(api: Api) -> None:
    import time

    acme = _onboard(api, "acme", 3)
    _onboard(api, "zenith", 2)
    _backdate(api, 2 * DAY)  # onboarding: two days ago
    exposed = make_report(device_identity("acme-0", "acme-nas0"), ["router.upnp-mappings"], exposed=True)
    assert api.checkin(acme[0], exposed).json()["transitions"] == ["became_exposed"]
    zen = make_report(device_identity("zenith-0", "zenith-nas0"), ["router.upnp-mappings"], exposed=True)
    zen_key = api.enroll(device_identity("zenith-9", "z9"), None).json()["node_key"]  # a box in no group
    assert api.checkin(zen_key, dict(zen, device=device_identity("zenith-9", "z9"))).status_code == 201
    _backdate(api, DAY)  # those: yesterday; onboarding: three days ago
    fixed = make_report(device_identity("acme-0", "acme-nas0"), ["service.telnet"])
    assert api.checkin(acme[0], fixed).json()["transitions"] == ["no_longer_exposed"]  # today

    yesterday = time.strftime("%Y-%m-%d", time.gmtime(time.time() - DAY))
    got = _events(api, since=yesterday, until=yesterday, group="acme")["transitions"]
    assert [(e["device_id"], e["kind"], e["group"]) for e in got] == [("acme-0", "became_exposed", "acme")]
    assert [e["device_id"] for e in _events(api, since=yesterday, until=yesterday, group="(none)")["transitions"]] \
        == ["zenith-9", "zenith-9"]  # enrolled and its first report (exposed)
    assert [e["kind"] for e in _events(api, device="acme-0")["transitions"]] == [
        "no_longer_exposed", "became_exposed", "first_report", "enrolled"]
    assert len(_events(api, kind="enrolled,first_report")["transitions"]) == 11

    pages, before = [], None
    while True:
        page = _events(api, limit=4, **({"before": before} if before else {}))
        pages.append([e["id"] for e in page["transitions"]])
        before = page["next_before"]
        if before is None:
            break
    every = [e["id"] for e in _events(api, limit=500)["transitions"]]
    assert [i for p in pages for i in p] == every and len(pages) == -(-len(every) // 4)

    api.login()
    html = api.client.get("/events", params={"since": yesterday, "until": yesterday, "group": "acme"}).text
    assert re.findall(r'data-kind="([a-z_]+)"', html) == ["became_exposed"]
    assert "became exposed" in html
    older = api.client.get("/events", params={"limit": 2}).text
    assert 'id="older"' in older


@pytest.mark.parametrize("params", [{"since": "yesterday"}, {"until": "2024-13-01"}, {"kind": "nope"},
                                    {"limit": "0"}, {"before": "x"}, {"since": "1e300"}, {"group": "g" * 101}])
def test_bad_event_filters_get_a_clear_400(api: Api, params: Dict[str, str]) -> None:
    response = api.client.get("/api/v1/transitions", params=params, headers=api.auth)
    assert response.status_code == 400, response.text
    assert response.json()["detail"]
