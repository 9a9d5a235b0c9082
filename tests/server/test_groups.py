"""Customers (groups): secrets put boxes in groups, every count/list/CSV follows the group filter, groups are
ranked by risk; an exposed box that goes silent stays counted as exposed; natural host name order and the
wider search. On SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
from typing import Any, Dict, List

from sqlalchemy import update
from tests.support.server import Api, device_identity, make_report

from exposure_guard_server.db import models as m


def _box(api: Api, secret: str, device_id: str, host: str, failing: List[str], exposed: bool = False,
         address: str = "192.168.1.20") -> None:
    ident = dict(device_identity(device_id, host), lan_addresses=[address])
    response = api.enroll(ident, secret)
    assert response.status_code in (200, 201), response.text
    key = response.json()["node_key"]
    answer = api.checkin(key, make_report(ident, failing, exposed))
    assert answer.status_code == 201, answer.text


def _fleet(api: Api) -> Dict[str, str]:
    """Two customers and a box in no group: acme (1 exposed, 1 at risk), zenith (1 ok), a loose box at risk."""
    groups = {}
    for name in ("Acme Dental", "Zenith Law"):
        made = api.client.post("/api/v1/groups", json={"name": name}, headers=api.auth)
        assert made.status_code == 201, made.text
        secret = api.client.post("/api/v1/enroll-secrets", json={"name": name + " boxes", "group": name},
                                 headers=api.auth)
        assert secret.status_code == 201, secret.text
        groups[name] = secret.json()["secret"]
    _box(api, groups["Acme Dental"], "acme-1", "ACME-NAS10", ["router.upnp-mappings"], exposed=True)
    _box(api, groups["Acme Dental"], "acme-2", "acme-nas2", ["service.telnet"], address="10.20.30.40")
    _box(api, groups["Zenith Law"], "zen-1", "zenith", [])
    _box(api, api.secret, "loose-1", "loose", ["admin.https"])
    return groups


def _get(api: Api, path: str, **params: Any) -> Any:
    response = api.client.get(path, params=params, headers=api.auth)
    assert response.status_code == 200, response.text
    return response.json() if not path.endswith(".csv") else response.text


def test_boxes_land_in_their_secrets_group_and_every_view_follows_the_filter(api: Api) -> None:
    _fleet(api)
    acme = _get(api, "/api/v1/devices", group="Acme Dental")
    assert sorted(d["device_id"] for d in acme["devices"]) == ["acme-1", "acme-2"]
    assert {d["group"] for d in acme["devices"]} == {"Acme Dental"}
    assert {d["enroll_secret"] for d in acme["devices"]} == {"Acme Dental boxes"}
    loose = _get(api, "/api/v1/devices", group="(none)")
    assert [d["device_id"] for d in loose["devices"]] == ["loose-1"]
    assert _get(api, "/api/v1/devices", group="nobody")["total"] == 0

    api.login()
    page = api.client.get("/", params={"group": "Acme Dental"}).text
    assert 'data-count="exposed">1<' in page and 'data-count="at_risk">1<' in page
    assert 'data-count="ok">0<' in page and 'data-count="total">2<' in page
    assert "admin.https" not in page.split('aria-label="Failing checks"')[1].split("</section>")[0]
    whole = api.client.get("/").text
    assert 'data-count="total">4<' in whole and 'data-count="at_risk">2<' in whole

    rows = list(csv.DictReader(io.StringIO(_get(api, "/api/v1/devices.csv", group="Acme Dental"))))
    assert sorted(r["device_id"] for r in rows) == ["acme-1", "acme-2"]
    assert {r["group"] for r in rows} == {"Acme Dental"}

    secrets = _get(api, "/api/v1/enroll-secrets")["enroll_secrets"]
    zen_secret = next(s["id"] for s in secrets if s["group"] == "Zenith Law")
    assert [d["device_id"] for d in _get(api, "/api/v1/devices", secret=zen_secret)["devices"]] == ["zen-1"]


def test_groups_ranked_by_risk_and_a_removed_group_leaves_its_boxes(api: Api) -> None:
    _fleet(api)
    ranking = _get(api, "/api/v1/groups")["groups"]
    assert [g["group"] for g in ranking] == ["Acme Dental", "(none)", "Zenith Law"]
    assert ranking[0]["counts"] == {"exposed": 1, "at_risk": 1, "ok": 0, "stale": 0, "pending": 0}
    api.login()
    page = api.client.get("/groups").text
    assert page.index("Acme Dental") < page.index("no group") < page.index("Zenith Law")

    moved = api.client.put("/api/v1/devices/loose-1/group", json={"group": "Zenith Law"}, headers=api.auth)
    assert moved.status_code == 200 and moved.json()["group"] == "Zenith Law"
    assert api.client.put("/api/v1/devices/loose-1/group", json={"group": "Nope"}, headers=api.auth).status_code == 404
    assert api.client.put("/api/v1/devices/nope/group", json={"group": None}, headers=api.auth).status_code == 404
    assert _get(api, "/api/v1/devices", group="(none)")["total"] == 0

    assert api.client.delete("/api/v1/groups/Acme Dental", headers=api.auth).status_code == 200
    assert api.client.delete("/api/v1/groups/Acme Dental", headers=api.auth).status_code == 404
    assert sorted(d["device_id"] for d in _get(api, "/api/v1/devices", group="(none)")["devices"]) == ["acme-1", "acme-2"]
    assert api.count("reports") == 4  # the boxes and their history stay


def test_group_names_are_checked(api: Api) -> None:
    for bad, status in (("", 400), ("(none)", 400), ("x" * 101, 400), ("tab\there", 400)):
        answer = api.client.post("/api/v1/groups", json={"name": bad}, headers=api.auth)
        assert answer.status_code == status, (bad, answer.text)
    assert api.client.post("/api/v1/groups", json={"name": "A"}, headers=api.auth).status_code == 201
    assert api.client.post("/api/v1/groups", json={"name": "A"}, headers=api.auth).status_code == 409
    refused = api.client.post("/api/v1/enroll-secrets", json={"group": "missing"}, headers=api.auth)
    assert refused.status_code == 404 and "no group" in refused.text


def test_reenrolling_with_another_customers_secret_moves_the_box_only_with_proof(api: Api) -> None:
    secrets = _fleet(api)
    ident = dict(device_identity("zen-1", "zenith"))
    # Without proof: a request waits for an operator; the box stays in its group until it is approved.
    assert api.enroll(ident, secrets["Acme Dental"]).status_code in (200, 201)
    assert _get(api, "/api/v1/devices/zen-1")["group"] == "Zenith Law"
    pending = _get(api, "/api/v1/re-enroll")["pending"]
    assert api.client.post("/api/v1/re-enroll/%d/approve" % pending[0]["id"], headers=api.auth).status_code == 200
    assert _get(api, "/api/v1/devices/zen-1")["group"] == "Acme Dental"


def test_an_exposed_box_that_goes_silent_stays_counted_as_exposed(api: Api) -> None:
    _fleet(api)
    with api.server.engine.begin() as conn:
        conn.execute(update(m.devices).where(m.devices.c.device_id.in_(["acme-1", "zen-1"])).values(stale_base=0))
    summary = _get(api, "/api/v1/summary")
    assert summary["counts"] == {"exposed": 1, "at_risk": 2, "ok": 0, "stale": 1, "pending": 0}
    assert summary["exposed_silent"] == 1
    exposed = _get(api, "/api/v1/devices", state="exposed")["devices"]
    assert [(d["device_id"], d["state"], d["stale"]) for d in exposed] == [("acme-1", "exposed", True)]
    assert [d["device_id"] for d in _get(api, "/api/v1/devices", state="stale")["devices"]] == ["zen-1"]
    assert sorted(d["device_id"] for d in _get(api, "/api/v1/devices", stale="true")["devices"]) == ["acme-1", "zen-1"]
    api.login()
    assert 'data-count="exposed_silent">1 of them silent' in api.client.get("/").text


def test_natural_host_name_order_and_search_by_address_id_and_model(api: Api) -> None:
    for i in (10, 2, 1, 100):
        _box(api, api.secret, "nat-%d" % i, "NAS%d" % i, [], address="172.16.0.%d" % i)
    names = [d["hostname"] for d in _get(api, "/api/v1/devices", sort="hostname")["devices"]]
    assert names == ["NAS1", "NAS2", "NAS10", "NAS100"]
    down = [d["hostname"] for d in _get(api, "/api/v1/devices", sort="hostname", order="desc")["devices"]]
    assert down == names[::-1]
    assert [d["device_id"] for d in _get(api, "/api/v1/devices", q="172.16.0.10")["devices"]] == ["nat-10", "nat-100"]
    assert [d["device_id"] for d in _get(api, "/api/v1/devices", q="NAT-2")["devices"]] == ["nat-2"]
    assert _get(api, "/api/v1/devices", q="ts-453")["total"] == 4
    assert _get(api, "/api/v1/devices", q="%")["total"] == 0  # a wildcard is a plain character
    paged = _get(api, "/api/v1/devices", sort="hostname", per_page=2, page=2)
    assert [d["hostname"] for d in paged["devices"]] == ["NAS10", "NAS100"] and paged["pages"] == 2


def test_webhook_payload_names_the_group(api: Api) -> None:
    from exposure_guard_server.services.admin import Webhooks

    Webhooks(api.server.engine, allow_internal="127.0.0.0/8").create("hook", "http://127.0.0.1:9/hook",
                                                             "*,enrolled,first_report")
    _fleet(api)
    with api.server.engine.connect() as conn:
        payloads = [json.loads(row.payload) for row in conn.execute(m.webhook_deliveries.select())]
    groups = {p["device"]["device_id"]: p["device"]["group"] for p in payloads}
    assert groups["acme-1"] == "Acme Dental" and groups["loose-1"] == ""
