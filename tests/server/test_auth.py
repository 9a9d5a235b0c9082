"""Dashboard login, sessions, CSRF, cookies and API tokens — on SQLite and PostgreSQL."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient
from sqlalchemy import text
from tests.support.server import ADMIN_PASSWORD, ADMIN_USER, Api, device_identity, make_report


def test_pages_need_login(api: Api) -> None:
    for path in ("/", "/admin", "/events", "/devices/x", "/devices.csv"):
        response = api.client.get(path, follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"].startswith("/login"), path


def test_login_logout_and_session_cookie(api: Api) -> None:
    wrong = api.login(password="wrong password!")
    assert wrong.status_code == 401 and "Wrong user name or password" in wrong.text
    nobody = api.login(username="nobody")
    assert nobody.status_code == 401
    ok = api.login()
    assert ok.status_code == 303 and ok.headers["location"] == "/"
    cookie = [c for c in ok.headers.get_list("set-cookie") if c.startswith("eg_session=")][0]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # plain http on loopback (auto mode)
    assert api.client.get("/").status_code == 200
    csrf = api.csrf("/")
    out = api.client.post("/logout", data={"csrf": csrf}, follow_redirects=False)
    assert out.status_code == 303
    # The old cookie value no longer works even if a client keeps it.
    token = re.search(r"eg_session=([^;]+)", cookie).group(1)
    api.client.cookies.clear()
    api.client.cookies.set("eg_session", token)
    assert api.client.get("/", follow_redirects=False).status_code == 303


def test_session_cookie_is_secure_over_https(api: Api) -> None:
    with TestClient(api.client.app, base_url="https://127.0.0.1") as client:
        response = api.login(client=client)
        cookie = [c for c in response.headers.get_list("set-cookie") if "eg_session=" in c][0]
        assert cookie.startswith("__Host-eg_session=") and "Secure" in cookie and "HttpOnly" in cookie
        assert client.get("/").status_code == 200


def test_passwords_are_hashed(api: Api) -> None:
    with api.server.engine.connect() as conn:
        stored = conn.execute(text("SELECT password_hash FROM users WHERE username = :u"), {"u": ADMIN_USER}).scalar()
    assert stored.startswith("scrypt$") and ADMIN_PASSWORD not in stored
    with api.server.engine.connect() as conn:
        tokens = conn.execute(text("SELECT token_hash FROM api_tokens")).scalars().all()
        secrets = conn.execute(text("SELECT secret_hash FROM enroll_secrets")).scalars().all()
    assert api.token not in tokens and api.secret not in secrets


def test_login_form_needs_its_csrf_token(api: Api) -> None:
    response = api.client.post("/login", data={"username": ADMIN_USER, "password": ADMIN_PASSWORD, "csrf": "x"},
                               follow_redirects=False)
    assert response.status_code == 403
    assert api.client.get("/", follow_redirects=False).status_code == 303


def test_no_open_redirect_after_login(api: Api) -> None:
    page = api.client.get("/login?next=//evil.example/x")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    for target in ("//evil.example/x", "https://evil.example", "/\\evil.example", "/devices/x"):
        api.client.cookies.delete("eg_session")
        response = api.client.post("/login", data={"username": ADMIN_USER, "password": ADMIN_PASSWORD, "csrf": csrf,
                                                   "next": target}, follow_redirects=False)
        assert response.status_code == 303
        assert response.headers["location"] == (target if target == "/devices/x" else "/")
        api.client.get("/login")  # fresh login csrf cookie
        page = api.client.get("/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)


def test_login_rate_limit(api: Api) -> None:
    for _ in range(10):
        assert api.login(password="nope nope nope").status_code == 401
    assert api.login().status_code == 429


def test_admin_forms_need_csrf(api: Api) -> None:
    api.login()
    before = len(api.admin.enroll_secrets.list())
    assert api.client.post("/admin/enroll-secrets", data={"name": "x"}).status_code == 403
    assert api.client.post("/admin/enroll-secrets", data={"name": "x", "csrf": "forged"}).status_code == 403
    assert api.client.post("/admin/enroll-secrets", json={"name": "x"}).status_code == 415
    assert len(api.admin.enroll_secrets.list()) == before
    created = api.client.post("/admin/enroll-secrets", data={"name": "from the UI", "csrf": api.csrf()})
    assert created.status_code == 200
    secret = re.search(r'id="new-secret">([^<]+)<', created.text).group(1)
    assert api.enroll(device_identity("dev-ui"), secret=secret).status_code == 201
    # The secret is shown once: the admin page lists only its prefix afterwards.
    assert secret not in api.client.get("/admin").text
    secret_id = [s for s in api.admin.enroll_secrets.list() if s["name"] == "from the UI"][0]["id"]
    revoked = api.client.post("/admin/enroll-secrets/%d/revoke" % secret_id, data={"csrf": api.csrf()},
                              follow_redirects=False)
    assert revoked.status_code == 303
    assert api.enroll(device_identity("dev-ui2"), secret=secret).status_code == 401


def test_api_tokens_from_the_ui(api: Api) -> None:
    api.login()
    created = api.client.post("/admin/api-tokens", data={"name": "prometheus", "csrf": api.csrf()})
    token = re.search(r'id="new-token">([^<]+)<', created.text).group(1)
    anonymous = TestClient(api.client.app, base_url="http://127.0.0.1")
    assert anonymous.get("/metrics").status_code == 401
    assert anonymous.get("/metrics", headers={"Authorization": "Bearer " + token}).status_code == 200
    token_id = [t for t in api.admin.api_tokens.list() if t["name"] == "prometheus"][0]["id"]
    api.client.post("/admin/api-tokens/%d/revoke" % token_id, data={"csrf": api.csrf()})
    assert anonymous.get("/metrics", headers={"Authorization": "Bearer " + token}).status_code == 401


def test_session_api_writes_need_csrf_header(api: Api) -> None:
    api.login()
    assert api.client.get("/api/v1/summary").status_code == 200  # reads with the session are fine
    assert api.client.post("/api/v1/enroll-secrets", json={"name": "x"}).status_code == 403
    ok = api.client.post("/api/v1/enroll-secrets", json={"name": "x"}, headers={"X-CSRF-Token": api.csrf()})
    assert ok.status_code == 201


def test_security_headers(api: Api) -> None:
    for path in ("/login", "/healthz", "/static/style.css"):
        response = api.client.get(path)
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]


def test_dashboard_shows_fleet(api: Api) -> None:
    dev = device_identity("dev-1", hostname="office-nas")
    key = api.enroll_key(dev)
    api.checkin(key, make_report(dev, failing=["router.upnp-mappings"], exposed=True))
    api.login()
    page = api.client.get("/").text
    assert 'data-count="exposed">1<' in page and 'data-count="ok">0<' in page
    assert "office-nas" in page and "router.upnp-mappings" in page
    assert "office-nas" not in api.client.get("/?state=ok").text
    device = api.client.get("/devices/dev-1").text
    assert "EXPOSED" in device and "became exposed" in device
    assert api.client.get("/devices/nope").status_code == 404
