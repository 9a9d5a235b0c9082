"""What to tell the customer: the server explains findings with the agent's own check catalogue (why it
matters, how to fix by hand, whether the agent can fix it, which finding makes the box EXPOSED), shows
evidence as tables (this box's router mappings first, other hosts' folded) and prints a report per box."""

from __future__ import annotations

import re

from markupsafe import escape
from tests.support.server import Api, device_identity, finding, make_report

from exposure_guard.checks import get_check


def _exposed_box(api: Api) -> str:
    ident = device_identity("cat-1", "clinic-nas")
    key = api.enroll_key(ident)
    mapping = finding("router.upnp-mappings", "fail", severity="critical",
                      mappings_to_this_nas=[{"external_port": 8080, "internal_port": 8080, "protocol": "TCP",
                                             "description": "<b>qnap</b>", "management_port": True}],
                      mappings_to_other_hosts=[{"external_port": 3074, "internal_client": "192.168.1.77"}],
                      upnp_offered=True)
    doc = make_report(ident, ["service.telnet"], exposed=True,
                      extra=[mapping])
    doc["findings"] = [f for f in doc["findings"] if not (f["id"] == "router.upnp-mappings" and not f["evidence"])]
    doc["findings"][-1]["exposure"] = True
    assert api.checkin(key, doc).status_code == 201
    return doc["report_id"]


def test_the_catalogue_api_is_the_agents(api: Api) -> None:
    answer = api.client.get("/api/v1/checks", headers=api.auth).json()
    entries = {c["id"]: c for c in answer["checks"]}
    check = get_check("router.upnp-mappings")
    assert entries["router.upnp-mappings"]["remediation"] == check.remediation
    assert entries["router.upnp-mappings"]["makes_exposed"] is True and entries["service.telnet"]["makes_exposed"] is False
    assert answer["version"]


def test_the_device_page_says_what_makes_it_exposed_and_how_to_fix_it(api: Api) -> None:
    _exposed_box(api)
    api.login()
    page = api.client.get("/devices/cat-1").text
    rows = re.findall(r'<tr class="status-fail">(.*?)</tr>', page, re.S)
    effects = {re.search(r"<td>([a-z.-]+)", r).group(1): re.findall(r'data-effect="(\w+)"', r) for r in rows}
    assert effects["router.upnp-mappings"] == ["exposed"] and effects["service.telnet"] == ["at_risk"]
    remediation = get_check("service.telnet").remediation.split(".")[0]
    assert str(escape(remediation)) in page
    # Evidence as tables: this box's mapping in a table, other hosts' folded, device text escaped.
    assert "<th>external port</th>" in page and "&lt;b&gt;qnap&lt;/b&gt;" in page
    assert re.search(r"<details class=\"ev\"><summary>mappings to other hosts \(1\)</summary>", page)
    assert page.index("mappings to this nas") < page.index("mappings to other hosts")


def test_the_printable_report(api: Api) -> None:
    _exposed_box(api)
    api.login()
    page = api.client.get("/devices/cat-1/printable")
    assert page.status_code == 200
    text = page.text
    assert "clinic-nas" in text and "makes it EXPOSED" in text
    assert get_check("router.upnp-mappings").title in text
    first = text.index('data-check="router.upnp-mappings"')
    assert first < text.index('data-check="service.telnet"')  # what makes it exposed comes first
    assert "{" not in re.sub(r"<style.*?</style>", "", text)  # no raw JSON
    assert api.client.get("/devices/nope/printable").status_code == 404
