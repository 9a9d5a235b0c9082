"""A finding the NAS owner accepted in the agent's settings keeps status "fail" in the stored report but
does not make the box exposed or at risk, is not in its failing checks, and shows as accepted on its page."""

from __future__ import annotations

from tests.support.server import Api, device_identity, make_report


def test_accepted_findings_do_not_count_on_the_server(api: Api) -> None:
    ident = device_identity("acc-1", "acc-nas")
    key = api.enroll_key(ident)
    doc = make_report(ident, ["router.upnp-mappings", "service.telnet"], exposed=False)
    for finding in doc["findings"]:
        if finding["id"] == "router.upnp-mappings":
            finding["severity"] = "critical"
            finding["accepted"] = {"reason": "the <b>VPN</b> box", "until": "2099-01-01", "by": "settings x.ini:4"}
    doc["summary"]["accepted"] = 1
    answer = api.checkin(key, doc)
    assert answer.status_code == 201, answer.text
    device = api.client.get("/api/v1/devices/acc-1", headers=api.auth).json()
    assert device["verdict"] == "at_risk" and device["failing"] == ["service.telnet"] and device["fail_count"] == 1
    api.login()
    page = api.client.get("/devices/acc-1").text
    assert 'data-accepted="router.upnp-mappings"' in page and "the &lt;b&gt;VPN&lt;/b&gt; box" in page
    bad = dict(doc, report_id="", findings=[dict(f, accepted={"reason": "", "until": "soon", "by": ""})
                                             for f in doc["findings"]])
    bad.pop("report_id")
    assert api.checkin(key, dict(bad, report_id="6d3c1e51-1f0e-4d55-9c59-0f3a3b4a2c10")).status_code == 422
