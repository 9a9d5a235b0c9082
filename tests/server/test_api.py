"""Enrollment, check-in, transitions, read API, CSV, metrics — on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import time

from tests.support.server import Api, device_identity, make_report


def test_enroll_returns_node_key_and_is_idempotent_by_device_id(api: Api) -> None:
    first = api.enroll(device_identity("dev-a", hostname="NAS1"))
    assert first.status_code == 201
    key1 = first.json()["node_key"]
    # Enrolling the same id again with its current key as proof (what the agent sends) rotates the key.
    again = api.client.post("/api/v1/enroll", json={"enroll_secret": api.secret, "previous_node_key": key1,
                                                    "device": device_identity("dev-a", hostname="renamed")})
    assert again.status_code == 201 and again.json()["re_enrolled"] is True
    key2 = again.json()["node_key"]
    assert key1 != key2
    assert api.count("devices") == 1
    # The old key stops working, the new one works; the device keeps one row.
    doc = make_report(device_identity("dev-a", hostname="renamed"))
    assert api.checkin(key1, doc).status_code == 401
    assert api.checkin(key2, doc).status_code == 201
    detail = api.client.get("/api/v1/devices/dev-a", headers=api.auth).json()
    assert detail["hostname"] == "renamed"


def test_enroll_never_keys_on_hostname(api: Api) -> None:
    api.enroll_key(device_identity("dev-a", hostname="NAS"))
    api.enroll_key(device_identity("dev-b", hostname="NAS"))
    assert api.count("devices") == 2


def test_enroll_rejects_bad_and_revoked_secrets(api: Api) -> None:
    assert api.enroll(device_identity("x"), secret="ege_wrong").status_code == 401
    response = api.client.post("/api/v1/enroll", json={"device": device_identity("x")})
    assert response.status_code == 401
    secret_id, secret = api.admin.enroll_secrets.create("to revoke")
    assert api.enroll(device_identity("y"), secret=secret).status_code == 201
    assert api.admin.enroll_secrets.remove(secret_id)
    assert api.enroll(device_identity("z"), secret=secret).status_code == 401
    assert api.count("devices") == 1


def test_enroll_validates_identity(api: Api) -> None:
    bad = device_identity("x")
    del bad["model"]
    response = api.enroll(bad)
    assert response.status_code == 422 and "model" in response.json()["detail"]
    assert api.client.post("/api/v1/enroll", content=b"{nope").status_code == 400
    assert api.count("devices") == 0


def test_checkin_stores_once_and_derives_transitions(api: Api) -> None:
    dev = device_identity("dev-1")
    key = api.enroll_key(dev)
    at_risk = make_report(dev, failing=["service.telnet"], generated_at="2024-01-01T00:00:00Z")
    response = api.checkin(key, at_risk, gzip_body=True)
    assert response.status_code == 201, response.text
    assert response.json()["transitions"] == ["first_report"]
    # Same report again (a retry after a lost answer): stored once.
    again = api.checkin(key, at_risk)
    assert again.status_code == 200 and again.json()["duplicate"] is True
    exposed = make_report(dev, failing=["router.upnp-mappings"], exposed=True, generated_at="2024-01-01T01:00:00Z")
    assert api.checkin(key, exposed).json()["transitions"] == ["became_exposed"]
    fixed = make_report(dev, generated_at="2024-01-01T02:00:00Z")
    assert api.checkin(key, fixed).json()["transitions"] == ["fixed"]
    assert api.count("reports") == 3
    kinds = [t["kind"] for t in api.client.get("/api/v1/transitions", headers=api.auth).json()["transitions"]]
    assert kinds == ["fixed", "became_exposed", "first_report", "enrolled"]
    detail = api.client.get("/api/v1/devices/dev-1", headers=api.auth).json()
    assert detail["verdict"] == "ok" and detail["reports"] == 3
    assert [h["verdict"] for h in detail["history"]] == ["ok", "exposed", "at_risk"]
    assert detail["diff"]["fixed"] == ["router.upnp-mappings"]
    assert detail["diff"]["previous_verdict"] == "exposed"


def test_out_of_order_report_is_kept_in_history_but_does_not_replace_latest(api: Api) -> None:
    dev = device_identity("dev-1")
    key = api.enroll_key(dev)
    api.checkin(key, make_report(dev, failing=["service.telnet"], generated_at="2024-01-02T00:00:00Z"))
    late = make_report(dev, exposed=True, failing=["router.upnp-mappings"], generated_at="2024-01-01T00:00:00Z")
    response = api.checkin(key, late)
    assert response.status_code == 201 and response.json()["latest"] is False
    detail = api.client.get("/api/v1/devices/dev-1", headers=api.auth).json()
    assert detail["verdict"] == "at_risk" and detail["reports"] == 2
    assert [h["generated_at"] for h in detail["history"]] == ["2024-01-02T00:00:00Z", "2024-01-01T00:00:00Z"]


def test_report_diff_endpoint(api: Api) -> None:
    dev = device_identity("dev-1", firmware="5.1.0")
    key = api.enroll_key(dev)
    first = make_report(dev, failing=["service.telnet"], generated_at="2024-01-01T00:00:00Z")
    second = make_report(device_identity("dev-1", firmware="5.2.0"), failing=["admin.https"],
                         generated_at="2024-01-01T01:00:00Z")
    api.checkin(key, first)
    api.checkin(key, second)
    body = api.client.get("/api/v1/reports/" + second["report_id"], headers=api.auth).json()
    assert body["diff"]["previous_report_id"] == first["report_id"]
    assert body["diff"]["newly_failing"] == ["admin.https"]
    assert body["diff"]["fixed"] == ["service.telnet"]
    assert body["diff"]["device"] == {"firmware": {"from": "5.1.0", "to": "5.2.0"}}
    assert body["report"]["report_id"] == second["report_id"]
    first_body = api.client.get("/api/v1/reports/" + first["report_id"], headers=api.auth).json()
    assert first_body["diff"]["previous_report_id"] is None
    assert api.client.get("/api/v1/reports/00000000-0000-0000-0000-000000000000", headers=api.auth).status_code == 404


def _fleet(api: Api) -> None:
    """6 devices: 2 exposed, 2 at risk (one on old firmware), 1 ok, 1 pending."""
    plan = [
        ("e1", "alpha", "5.1.4", ["router.upnp-mappings"], True),
        ("e2", "bravo", "5.1.4", ["router.upnp-mappings", "service.telnet"], True),
        ("r1", "charlie", "4.5.0", ["service.telnet"], False),
        ("r2", "delta", "5.1.4", ["admin.https"], False),
        ("o1", "echo", "5.1.4", [], False),
    ]
    for device_id, host, fw, failing, exposed in plan:
        dev = device_identity(device_id, hostname=host, firmware=fw)
        key = api.enroll_key(dev)
        assert api.checkin(key, make_report(dev, failing=failing, exposed=exposed)).status_code == 201
    api.enroll_key(device_identity("p1", hostname="foxtrot"))


def test_summary_filters_sort_and_pagination(api: Api) -> None:
    _fleet(api)
    summary = api.client.get("/api/v1/summary", headers=api.auth).json()
    assert summary["devices"] == 6
    assert summary["counts"] == {"exposed": 2, "at_risk": 2, "ok": 1, "stale": 0, "pending": 1}
    assert summary["failing_checks"][:2] == [{"check_id": "router.upnp-mappings", "devices": 2},
                                             {"check_id": "service.telnet", "devices": 2}]

    def ids(query: str) -> list:
        response = api.client.get("/api/v1/devices?" + query, headers=api.auth)
        assert response.status_code == 200, response.text
        return [d["device_id"] for d in response.json()["devices"]]

    assert ids("state=exposed&sort=hostname") == ["e1", "e2"]
    assert ids("exposed=true&sort=hostname") == ["e1", "e2"]
    assert ids("check=service.telnet&sort=hostname") == ["e2", "r1"]
    assert ids("firmware=4.5.0") == ["r1"]
    assert ids("q=LPH") == ["e1"]
    assert ids("sort=hostname&order=desc")[:2] == ["p1", "o1"]
    assert ids("")[:2] == ["e1", "e2"]  # default: riskiest first
    page1 = api.client.get("/api/v1/devices?sort=hostname&per_page=4", headers=api.auth).json()
    page2 = api.client.get("/api/v1/devices?sort=hostname&per_page=4&page=2", headers=api.auth).json()
    assert page1["total"] == 6 and page1["pages"] == 2
    assert [d["device_id"] for d in page1["devices"] + page2["devices"]] == ["e1", "e2", "r1", "r2", "o1", "p1"]
    for bad in ("state=nope", "sort=evil", "page=0", "per_page=100000", "exposed=maybe", "page=x"):
        assert api.client.get("/api/v1/devices?" + bad, headers=api.auth).status_code == 400, bad


def test_stale_detection_and_went_stale_transition(api: Api) -> None:
    dev = device_identity("dev-s")
    key = api.enroll_key(dev)
    response = api.checkin(key, make_report(dev), headers={"X-ExposureGuard-Interval": "600"})
    assert response.status_code == 201
    sweep = api.server.stale
    grace = sweep.grace
    now = time.time()
    # Not stale just before 2 × interval + grace, stale just after.
    assert sweep.run(now=now + 2 * 600 + grace - 30) == 0
    assert api.server.reader.summary(now=now + 2 * 600 + grace - 30)["counts"]["stale"] == 0
    assert sweep.run(now=now + 2 * 600 + grace + 30) == 1
    assert sweep.run(now=now + 2 * 600 + grace + 60) == 0  # once only
    later = api.server.reader.summary(now=now + 2 * 600 + grace + 30)
    assert later["counts"]["stale"] == 1 and later["counts"]["ok"] == 0
    listing = api.server.reader.devices(__import__("exposure_guard_server.services.fleet", fromlist=["x"]).DeviceFilter(
        state="stale"), now=now + 2 * 600 + grace + 30)
    assert [d["device_id"] for d in listing["devices"]] == ["dev-s"]
    kinds = [t["kind"] for t in api.client.get("/api/v1/transitions", headers=api.auth).json()["transitions"]]
    assert kinds[0] == "went_stale"
    # Checking in again brings it back.
    assert api.checkin(key, make_report(dev)).json()["transitions"] == ["back"]


def test_csv_export_neutralises_formulas(api: Api) -> None:
    dev = device_identity("dev-c", hostname="=HYPERLINK(\"http://evil\")")
    key = api.enroll_key(dev)
    api.checkin(key, make_report(dev, failing=["service.telnet"]))
    response = api.client.get("/api/v1/devices.csv", headers=api.auth)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert len(rows) == 1
    assert rows[0]["hostname"] == "'=HYPERLINK(\"http://evil\")"
    assert rows[0]["failing"] == "service.telnet" and rows[0]["state"] == "at_risk"


def test_metrics_and_healthz(api: Api) -> None:
    _fleet(api)
    assert api.client.get("/healthz").json()["status"] == "ok"
    assert api.client.get("/metrics").status_code == 401
    text = api.client.get("/metrics", headers=api.auth).text
    assert 'exposure_guard_devices{state="exposed"} 2' in text
    assert 'exposure_guard_devices{state="pending"} 1' in text
    assert 'exposure_guard_failing_devices{check_id="router.upnp-mappings"} 2' in text
    assert "exposure_guard_reports_stored_total 5" in text
    assert 'exposure_guard_checkins_total{result="stored"} 5' in text
    api.server.counters.flush()  # per-process counters land in the shared table; totals do not change
    assert 'exposure_guard_checkins_total{result="stored"} 5' in api.client.get("/metrics", headers=api.auth).text


def test_read_api_requires_valid_token(api: Api) -> None:
    for path in ("/api/v1/summary", "/api/v1/devices", "/api/v1/devices.csv", "/api/v1/transitions",
                 "/api/v1/enroll-secrets", "/api/v1/webhooks"):
        assert api.client.get(path).status_code == 401, path
        assert api.client.get(path, headers={"Authorization": "Bearer egt_nope"}).status_code == 401, path
        assert api.client.get(path, headers=api.auth).status_code == 200, path
    token_id, token = api.admin.api_tokens.create("short-lived")
    assert api.client.get("/api/v1/summary", headers={"Authorization": "Bearer " + token}).status_code == 200
    api.admin.api_tokens.remove(token_id)
    assert api.client.get("/api/v1/summary", headers={"Authorization": "Bearer " + token}).status_code == 401
    # A node key is not an API token and an API token is not a node key.
    key = api.enroll_key(device_identity("dev-k"))
    assert api.client.get("/api/v1/summary", headers={"Authorization": "Bearer " + key}).status_code == 401
    assert api.checkin(api.token, make_report(device_identity("dev-k"))).status_code == 401


def test_enroll_secret_api(api: Api) -> None:
    created = api.client.post("/api/v1/enroll-secrets", json={"name": "branch"}, headers=api.auth)
    assert created.status_code == 201
    secret = created.json()["secret"]
    assert api.enroll(device_identity("dev-n"), secret=secret).status_code == 201
    listed = api.client.get("/api/v1/enroll-secrets", headers=api.auth).json()["enroll_secrets"]
    assert secret not in str(listed)
    assert any(s["name"] == "branch" and s["enrolled_count"] == 1 for s in listed)
    assert api.client.delete("/api/v1/enroll-secrets/%d" % created.json()["id"], headers=api.auth).status_code == 200
    assert api.enroll(device_identity("dev-m"), secret=secret).status_code == 401


def test_concurrent_duplicate_deliveries_store_once(api: Api) -> None:
    """The same report sent at once on several connections (a retry racing a slow first attempt)."""
    import gzip
    import json
    from concurrent.futures import ThreadPoolExecutor

    dev = device_identity("dev-race")
    key = api.enroll_key(dev)
    docs = [make_report(dev, failing=["service.telnet"] if i % 2 else [], generated_at="2024-01-01T00:%02d:00Z" % i)
            for i in range(5)]
    bodies = [gzip.compress(json.dumps(doc).encode()) for doc in docs]
    ingest = api.server.ingest

    def send(i: int) -> dict:
        return ingest.checkin(key, bodies[i % 5], "gzip", "3600", 1 << 20)

    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(send, range(40)))
    assert sum(1 for r in results if not r["duplicate"]) == 5
    assert api.count("reports") == 5
    detail = api.client.get("/api/v1/devices/dev-race", headers=api.auth).json()
    assert detail["reports"] == 5 and detail["verdict"] == "ok"  # the newest report (i = 4) wins


def test_failing_checks_are_listed_worst_first():
    from exposure_guard_server.services.fleet import worst_first

    stored = [["admin.default-ports", "medium"], ["router.upnp-mappings", "critical"], ["service.ssh", "medium"],
              ["apps.exposed", "high"], ["upnp.nas-discovery", "low"], ["odd", "unheard-of"], "junk"]
    assert worst_first(stored) == ["router.upnp-mappings", "apps.exposed", "admin.default-ports", "service.ssh",
                                   "upnp.nas-discovery", "odd"]
