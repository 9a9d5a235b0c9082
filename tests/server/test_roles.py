"""Roles and group limits: a table of every route × role (anonymous, viewer, operator, admin; API tokens on
the API, logged-in sessions on the dashboard) and a group-limited viewer who sees only its boxes through
every page, the CSV, the API and /metrics. On SQLite and PostgreSQL."""

from __future__ import annotations

import re
from typing import Any, Dict, List, Optional, Tuple

import pytest
from fastapi.routing import APIRoute
from tests.support.server import ADMIN_PASSWORD, Api, device_identity, make_report

from exposure_guard_server.roles import RANK

PUBLIC, AGENT = "public", "agent"
# Every route and the least role it needs. A route missing here fails the first test: new routes are classified.
EXPECTED: Dict[Tuple[str, str], str] = {
    ("GET", "/login"): PUBLIC, ("POST", "/login"): PUBLIC, ("GET", "/healthz"): PUBLIC,
    ("GET", "/qpkg/{name}"): PUBLIC, ("GET", "/qpkg/ExposureGuard.xml"): PUBLIC, ("POST", "/api/v1/enroll"): AGENT,
    ("POST", "/logout"): "viewer", ("GET", "/"): "viewer", ("GET", "/groups"): "viewer",
    ("GET", "/devices.csv"): "viewer", ("GET", "/devices/{device_id:path}"): "viewer",
    ("GET", "/devices/{device_id:path}/printable"): "viewer", ("GET", "/api/v1/checks"): "viewer",
    ("GET", "/reports/{report_id}"): "viewer", ("GET", "/events"): "viewer",
    ("GET", "/metrics"): "viewer", ("GET", "/api/v1/summary"): "viewer", ("GET", "/api/v1/devices"): "viewer",
    ("GET", "/api/v1/devices.csv"): "viewer", ("GET", "/api/v1/devices/{device_id:path}"): "viewer",
    ("GET", "/api/v1/reports/{report_id}"): "viewer", ("GET", "/api/v1/transitions"): "viewer",
    ("GET", "/api/v1/groups"): "viewer", ("GET", "/api/v1/re-enroll"): "viewer",
    ("POST", "/devices/{device_id:path}/group"): "operator", ("GET", "/admin"): "operator",
    ("POST", "/devices/{device_id:path}/details"): "operator", ("POST", "/devices/{device_id:path}/retire"): "operator",
    ("PATCH", "/api/v1/devices/{device_id:path}"): "operator",
    ("GET", "/api/v1/acceptances"): "viewer", ("POST", "/api/v1/acceptances"): "operator",
    ("DELETE", "/api/v1/acceptances/{acceptance_id}"): "operator",
    ("POST", "/devices/{device_id:path}/accept"): "operator",
    ("POST", "/devices/{device_id:path}/revoke-acceptance"): "operator",
    ("POST", "/devices/{device_id:path}/delete"): "admin", ("DELETE", "/api/v1/devices/{device_id:path}"): "admin",
    ("POST", "/admin/enroll-secrets"): "operator", ("POST", "/admin/enroll-secrets/{item_id}/revoke"): "operator",
    ("POST", "/admin/re-enroll/{request_id}/{action}"): "operator",
    ("POST", "/api/v1/re-enroll/{request_id}/{action}"): "operator",
    ("GET", "/api/v1/enroll-secrets"): "operator", ("POST", "/api/v1/enroll-secrets"): "operator",
    ("DELETE", "/api/v1/enroll-secrets/{secret_id}"): "operator",
    ("PUT", "/api/v1/devices/{device_id:path}/group"): "operator",
    ("GET", "/api/v1/audit"): "operator", ("GET", "/audit"): "operator",
    ("POST", "/admin/groups"): "admin", ("POST", "/admin/groups/{item_id}/delete"): "admin",
    ("POST", "/admin/api-tokens"): "admin", ("POST", "/admin/api-tokens/{item_id}/revoke"): "admin",
    ("POST", "/admin/webhooks"): "admin", ("POST", "/admin/webhooks/{item_id}/delete"): "admin",
    ("POST", "/admin/webhooks/{item_id}/test"): "admin", ("POST", "/admin/settings"): "admin",
    ("GET", "/api/v1/settings"): "admin", ("PUT", "/api/v1/settings"): "admin",
    ("POST", "/admin/users/{username}/alerts"): "admin",
    ("POST", "/admin/users"): "admin", ("POST", "/admin/users/{username}/delete"): "admin",
    ("GET", "/api/v1/webhooks"): "admin", ("POST", "/api/v1/groups"): "admin",
    ("DELETE", "/api/v1/groups/{ident}"): "admin",
}
USERS = ("viewer", "operator", "admin")


def _routes(app: Any) -> List[Tuple[str, str, APIRoute]]:
    while not hasattr(app, "routes"):  # ExposureGuardApp and its middleware wrap the FastAPI app (asgi.py)
        app = app.app
    out = []

    def walk(routes: List[Any]) -> None:
        for route in routes:
            if isinstance(route, APIRoute):
                out.extend((method, route.path, route) for method in sorted(route.methods - {"HEAD"}))
            elif hasattr(route, "original_router"):  # an included router (newer FastAPI keeps it whole)
                walk(route.original_router.routes)

    walk(app.routes)
    return out


def _roles_checked(route: APIRoute) -> List[str]:
    """The roles the route's dependencies check (deps.need / deps.form_for set ``role`` on them)."""
    found: List[str] = []

    def walk(dependant: Any) -> None:
        role = getattr(dependant.call, "role", None)
        if role:  # a form_for(role) holds its need(role): one check
            found.append(role)
            return
        for sub in dependant.dependencies:
            walk(sub)

    walk(route.dependant)
    return found


def test_every_route_is_classified_and_checks_its_role_in_one_dependency(api: Api) -> None:
    routes = _routes(api.client.app)
    missing = [(m, p) for m, p, _r in routes if (m, p) not in EXPECTED]
    assert not missing, "classify these routes in EXPECTED: %s" % missing
    assert len(routes) == len(EXPECTED)
    for method, path, route in routes:
        needed = EXPECTED[(method, path)]
        checked = _roles_checked(route)
        if needed in (PUBLIC, AGENT) or path == "/metrics":  # /metrics: --public-metrics waives it (deps.py)
            assert checked == [], (method, path, checked)
        else:
            assert checked == [needed], (method, path, checked)


@pytest.fixture
def fleet(api: Api) -> Dict[str, Any]:
    """Groups A and B, a box in each and one in none; a user and an API token per role, and a viewer and an
    operator limited to group A."""
    admin = api.admin
    for name in ("A", "B"):
        admin.groups.create(name)
    reports = {}
    for device_id, group in (("a1", "A"), ("b1", "B"), ("n1", "")):
        secret = admin.enroll_secrets.create("s-" + device_id, group)[1]
        ident = device_identity(device_id, "host-" + device_id)
        key = api.enroll(ident, secret).json()["node_key"]
        doc = make_report(ident, ["service.telnet"], exposed=device_id == "b1")
        assert api.checkin(key, doc).status_code == 201
        reports[device_id] = doc["report_id"]
    assert api.enroll(device_identity("a1", "impostor"), secret).status_code in (200, 201)  # a pending request
    tokens = {}
    for role in USERS:
        admin.set_password("u-" + role, ADMIN_PASSWORD, role)
        tokens[role] = admin.api_tokens.create("t-" + role, role=role)[1]
    admin.set_password("u-viewer-a", ADMIN_PASSWORD, "viewer", ["A"])
    admin.set_password("u-operator-a", ADMIN_PASSWORD, "operator", ["A"])
    tokens["viewer-a"] = admin.api_tokens.create("t-viewer-a", role="viewer", groups="A")[1]
    return {"reports": reports, "tokens": tokens}


def _concrete(path: str, reports: Dict[str, str]) -> str:
    return (path.replace("{device_id:path}", "a1").replace("{report_id}", reports["a1"]).replace("{item_id}", "999")
            .replace("{request_id}", "999").replace("{action}", "reject").replace("{ident}", "zzz")
            .replace("{username}", "nobody").replace("{secret_id}", "999").replace("{acceptance_id}", "999")
            .replace("{name}", "nothing.qpkg"))


def _session(api: Api, username: Optional[str]) -> Tuple[Any, str]:
    """A fresh client (own cookies) logged in as ``username`` (None: anonymous) and its CSRF token."""
    from fastapi.testclient import TestClient

    client = TestClient(api.client.app, base_url="http://127.0.0.1")
    if username is None:
        return client, ""
    answer = api.login(client, username, ADMIN_PASSWORD)
    assert answer.status_code == 303, answer.text
    page = client.get("/")
    return client, re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)


def _denied(answer: Any) -> bool:
    if answer.status_code == 303:  # a page's redirect to the login form, or a form's to where it leads
        return answer.headers["location"].startswith("/login")
    return answer.status_code in (401, 403)


@pytest.mark.parametrize("who", [None, *USERS])
def test_route_by_role_table(api: Api, fleet: Dict[str, Any], who: Optional[str]) -> None:
    """Each route with each role: refused (401/403, or the login redirect for pages) below its role, never
    refused at or above it. The API is called with the role's API token, the dashboard with its session, and
    without a body: who may call is decided before a body is read."""
    rank = -1 if who is None else RANK[who]
    client, csrf = _session(api, None if who is None else "u-" + who)
    bearer = {} if who is None else {"Authorization": "Bearer " + fleet["tokens"][who]}
    for (method, path), needed in sorted(EXPECTED.items()):
        if needed in (PUBLIC, AGENT) or (method, path) == ("POST", "/logout"):
            continue
        url = _concrete(path, fleet["reports"])
        api_route = path.startswith("/api/") or path == "/metrics"
        if api_route:
            answer = api.client.request(method, url, headers=bearer)  # no body: the role is checked before it
        elif method == "POST":
            answer = client.post(url, data={"csrf": csrf}, follow_redirects=False)
        else:
            answer = client.get(url, follow_redirects=False)
        allowed = rank >= RANK[needed]
        assert _denied(answer) != allowed, (who, method, path, answer.status_code, answer.text[:200])
        if not allowed and who is not None:
            assert answer.status_code == 403 and needed in answer.text, (method, path, answer.text[:200])


def test_a_group_limited_viewer_sees_only_its_boxes_everywhere(api: Api, fleet: Dict[str, Any]) -> None:
    client, _csrf = _session(api, "u-viewer-a")
    token = {"Authorization": "Bearer " + fleet["tokens"]["viewer-a"]}
    for get in (lambda url: client.get(url), lambda url: api.client.get(url, headers=token)):
        assert [d["device_id"] for d in get("/api/v1/devices").json()["devices"]] == ["a1"]
        summary = get("/api/v1/summary").json()
        assert summary["devices"] == 1 and summary["counts"]["exposed"] == 0  # b1 is exposed, but not theirs
        assert summary["reenrollments_pending"] == 1
        assert get("/api/v1/devices/b1").status_code == 404 and get("/api/v1/devices/n1").status_code == 404
        assert get("/api/v1/reports/" + fleet["reports"]["b1"]).status_code == 404
        assert get("/api/v1/reports/" + fleet["reports"]["a1"]).status_code == 200
        assert [g["group"] for g in get("/api/v1/groups").json()["groups"]] == ["A"]
        assert {e["device_id"] for e in get("/api/v1/transitions").json()["transitions"]} == {"a1"}
        assert [r["device_id"] for r in get("/api/v1/re-enroll").json()["pending"]] == ["a1"]
        csv_text = get("/api/v1/devices.csv").text
        assert "a1" in csv_text and "b1" not in csv_text and "n1" not in csv_text
        assert get("/api/v1/devices", ).json()["total"] == 1
        assert get("/api/v1/devices?group=B").json()["total"] == 0
        metrics = get("/metrics").text
        assert 'exposure_guard_devices{state="exposed"} 0' in metrics and 'state="at_risk"} 1' in metrics
    pages = {path: client.get(path).text for path in ("/", "/events", "/devices.csv")}
    for path, text in pages.items():
        assert "host-a1" in text, path
        assert "host-b1" not in text and "host-n1" not in text, path
    groups_page = client.get("/groups").text
    assert "group=A" in groups_page and "group=B" not in groups_page and "no group" not in groups_page
    assert client.get("/devices/b1").status_code == 404
    assert client.get("/reports/" + fleet["reports"]["n1"]).status_code == 404


def test_a_group_limited_operator_acts_only_inside_its_groups(api: Api, fleet: Dict[str, Any]) -> None:
    client, csrf = _session(api, "u-operator-a")
    write = {"X-CSRF-Token": csrf}
    assert client.put("/api/v1/devices/b1/group", json={"group": "A"}, headers=write).status_code == 404
    assert client.put("/api/v1/devices/a1/group", json={"group": "B"}, headers=write).status_code == 403
    assert client.put("/api/v1/devices/a1/group", json={"group": None}, headers=write).status_code == 403
    assert client.put("/api/v1/devices/a1/group", json={"group": "A"}, headers=write).status_code == 200
    assert client.post("/api/v1/enroll-secrets", json={"group": "B"}, headers=write).status_code == 403
    assert client.post("/api/v1/enroll-secrets", json={}, headers=write).status_code == 403
    made = client.post("/api/v1/enroll-secrets", json={"name": "more A", "group": "A"}, headers=write)
    assert made.status_code == 201
    listed = {s["name"] for s in client.get("/api/v1/enroll-secrets").json()["enroll_secrets"]}
    assert listed == {"s-a1", "more A"}
    other = next(s["id"] for s in api.admin.enroll_secrets.list() if s["name"] == "s-b1")
    assert client.delete("/api/v1/enroll-secrets/%d" % other, headers=write).status_code == 404
    # Without the CSRF header a session cannot write through the API.
    assert client.put("/api/v1/devices/a1/group", json={"group": "A"}).status_code == 403
    log = client.get("/api/v1/audit").json()["entries"]
    assert [(e["actor"], e["action"]) for e in log[:2]] == [("u-operator-a", "secret.create"),
                                                            ("u-operator-a", "device.move")]
    assert all(e["target"] != "device:b1" for e in log)


def test_api_tokens_have_a_role_and_the_prometheus_token_cannot_make_secrets(api: Api) -> None:
    token = api.admin.api_tokens.create("prometheus")[1]  # the default: viewer
    auth = {"Authorization": "Bearer " + token}
    assert api.client.get("/metrics", headers=auth).status_code == 200
    refused = api.client.post("/api/v1/enroll-secrets", json={}, headers=auth)
    assert refused.status_code == 403 and "operator" in refused.json()["detail"]
    assert api.count("enroll_secrets") == 1
    listed = {t["name"]: t["role"] for t in api.admin.api_tokens.list()}
    assert listed["prometheus"] == "viewer"
    with pytest.raises(Exception, match="role must be one of"):
        api.admin.api_tokens.create("x", role="root")


def test_the_last_admin_cannot_be_removed(api: Api) -> None:
    from exposure_guard_server.errors import ApiError

    with pytest.raises(ApiError, match="last admin"):
        api.admin.remove_user("admin")
    api.admin.set_password("second", ADMIN_PASSWORD, "admin")
    assert api.admin.remove_user("admin") is True
