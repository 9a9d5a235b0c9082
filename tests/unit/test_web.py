"""The page inside QTS over real HTTP on loopback: QTS session auth against a double of authLogin.cgi,
CSRF, escaping, fix and undo (the config file changes, journaled, and comes back byte-identical)."""

from __future__ import annotations

import http.client
import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Dict, Optional, Tuple
from urllib.parse import urlencode

import pytest

from exposure_guard.qts.root import QtsRoot
from exposure_guard.settings import load_settings
from exposure_guard.web.app import WebApp, make_server
from exposure_guard.web.auth import session_cookies
from tests.support.paths import SRC
from tests.support.qts import tree_bytes
from tests.support.qtsauth import FakeQtsAuth

SESSIONS = {"adminsid1": ("admin", True), "usersid1": ("bob", False), "tok123": ("admin", True)}


class Page:
    def __init__(self, root: Path, auth_url: Optional[str] = None) -> None:
        self.app = WebApp(QtsRoot(root), load_settings(None, environ={}), root / "var/exposure-guard", auth_url,
                          offline=True)
        self.server = make_server(self.app, "127.0.0.1", 0)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def request(self, method: str, path: str = "/", cookie: str = "", form: Optional[Dict[str, str]] = None,
                headers: Optional[Dict[str, str]] = None) -> Tuple[int, Dict[str, str], str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        sent = dict(headers or {})
        if cookie:
            sent["Cookie"] = cookie
        body = None
        if form is not None:
            body = urlencode(form)
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        conn.request(method, path, body=body, headers=sent)
        answer = conn.getresponse()
        text = answer.read().decode("utf-8")
        conn.close()
        return answer.status, {k.lower(): v for k, v in answer.getheaders()}, text

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def qts(qts_tree):
    with FakeQtsAuth(SESSIONS) as auth:
        root = qts_tree("exposed")
        set_admin_port(root, auth.port)
        page = Page(root)
        try:
            yield root, page, auth
        finally:
            page.close()


ADMIN = "NAS_SID=adminsid1; NAS_USER=admin"


def set_admin_port(root: Path, port: int) -> None:
    """Point the tree's [System] Web Access Port at ``port`` (where the authLogin.cgi double listens)."""
    conf = root / "etc/config/uLinux.conf"
    conf.write_bytes(re.sub(rb"Web Access Port = \d+", b"Web Access Port = %d" % port, conf.read_bytes()))


def csrf_of(text: str) -> str:
    match = re.search(r'name="csrf" value="([0-9a-f]+)"', text)
    assert match, "no CSRF token in the page"
    return match.group(1)


# ---------------------------------------------------------------- who gets what
@pytest.mark.parametrize("cookie,status", [("", 401), ("NAS_SID=wrongsid", 401), ("NAS_SID=usersid1", 403),
                                           ("NAS_SID=adminsid1; NAS_USER=mallory", 401),
                                           ("NAS_SID=<script>", 401), ("garbage;;==", 401)])
def test_no_session_a_wrong_one_or_a_non_admin_get_nothing(qts, cookie, status):
    root, page, _auth = qts
    code, headers, text = page.request("GET", "/", cookie)
    assert code == status
    assert "NAS-OFFICE" not in text and "service.telnet" not in text and "csrf" not in text
    assert "default-src 'none'" in headers["content-security-policy"]


def test_an_admin_sees_the_verdict_and_the_findings(qts):
    root, page, auth = qts
    code, headers, text = page.request("GET", "/", ADMIN)
    assert code == 200, text
    assert "AT RISK" in text and "NAS-OFFICE" in text and "service.telnet" in text
    assert auth.queries[-1] == {"sid": "adminsid1"}
    assert headers["cache-control"] == "no-store" and headers["x-content-type-options"] == "nosniff"
    assert "script-src" not in headers["content-security-policy"]  # default-src 'none' forbids every script
    assert "<script" not in text and not re.search(r'(src|href)="(https?:)?//', text)  # nothing from elsewhere


def test_qtoken_and_user_are_checked_together(qts):
    root, page, auth = qts
    code, _, _ = page.request("GET", "/", "NAS_USER=admin; qtoken=tok123")
    assert code == 200 and auth.queries[-1] == {"qtoken": "tok123", "user": "admin"}


def test_a_forged_host_header_does_not_move_the_auth_check(qts):
    root, page, auth = qts
    with FakeQtsAuth({"adminsid1": ("evil", True), "anything": ("evil", True)}) as liar:
        before = len(auth.queries)
        code, _, _ = page.request("GET", "/", "NAS_SID=anything",
                                  headers={"Host": "127.0.0.1:%d" % liar.port,
                                           "X-Forwarded-Host": "127.0.0.1:%d" % liar.port})
        assert code == 401 and liar.queries == [] and len(auth.queries) == before + 1


def test_the_auth_endpoint_down_is_503_and_nothing_shown(qts):
    root, page, auth = qts
    auth.server.close()
    code, _, text = page.request("GET", "/", ADMIN)
    assert code == 503 and "NAS-OFFICE" not in text


def test_a_changed_admin_port_is_followed(qts):
    root, page, auth = qts
    with FakeQtsAuth(SESSIONS) as moved:
        set_admin_port(root, moved.port)
        code, _, _ = page.request("GET", "/", ADMIN)
        assert code == 200 and moved.queries == [{"sid": "adminsid1"}]


def test_an_auth_url_off_loopback_is_refused(tmp_path):
    with pytest.raises(ValueError, match="loopback"):
        WebApp(QtsRoot(tmp_path), load_settings(None, environ={}), tmp_path / "s", "http://10.0.0.1/cgi-bin/x")


# ---------------------------------------------------------------- changes
def test_a_post_without_or_with_a_wrong_csrf_token_changes_nothing(qts):
    root, page, _auth = qts
    original = tree_bytes(root)
    for form in ({"check": "service.telnet"}, {"check": "service.telnet", "csrf": "0" * 40}):
        code, _, _ = page.request("POST", "/fix", ADMIN, form=form)
        assert code == 403
    _, _, text = page.request("GET", "/", "NAS_SID=tok123; NAS_USER=admin")  # another session's token
    code, _, _ = page.request("POST", "/fix", ADMIN, form={"check": "service.telnet", "csrf": csrf_of(text)})
    assert code == 403
    assert tree_bytes(root) == original


def test_fix_then_undo_through_the_page(qts):
    root, page, _auth = qts
    original = tree_bytes(root)
    _, _, text = page.request("GET", "/", ADMIN)
    token = csrf_of(text)
    code, _, plan = page.request("POST", "/plan", ADMIN, form={"check": "service.telnet", "csrf": token})
    assert code == 200 and "Apply 1 change?" in plan and "TELNET Enable" in plan
    assert tree_bytes(root) == original  # the plan changes nothing
    code, _, text = page.request("POST", "/fix", ADMIN, form={"check": "service.telnet", "csrf": token})
    assert code == 200 and "Applied 1 change(s)" in text, text
    assert b"TELNET Enable = FALSE" in (root / "etc/config/uLinux.conf").read_bytes()
    journal = (root / "var/exposure-guard/journal.jsonl").read_text()
    assert '"event": "applied"' in journal and "service.telnet" in journal
    change = re.search(r'name="change" value="(chg-[0-9a-f]+)"', text).group(1)
    code, _, text = page.request("POST", "/undo", ADMIN, form={"change": change, "csrf": token})
    assert code == 200 and "restored the exact original bytes" in text
    assert tree_bytes(root) == original


def test_check_now_and_unknown_paths(qts):
    root, page, _auth = qts
    _, _, text = page.request("GET", "/apps/exposure-guard//", ADMIN)  # under a proxy prefix, doubled slash
    code, _, text = page.request("POST", "/apps/exposure-guard/check", ADMIN, form={"csrf": csrf_of(text)})
    assert code == 200 and "Checked again." in text
    assert page.request("GET", "/etc/passwd", ADMIN)[0] == 404
    assert page.request("DELETE", "/", ADMIN)[0] in (404, 501)


def test_oversized_or_lengthless_posts_are_refused(qts):
    root, page, _auth = qts
    conn = http.client.HTTPConnection("127.0.0.1", page.port, timeout=30)
    conn.putrequest("POST", "/fix")
    conn.putheader("Cookie", ADMIN)
    conn.putheader("Content-Length", str(10 * 1024 * 1024))
    conn.endheaders()
    assert conn.getresponse().status == 413
    conn.close()


def test_device_strings_are_escaped(qts):
    root, page, _auth = qts
    conf = root / "etc/config/uLinux.conf"
    conf.write_bytes(conf.read_bytes().replace(b"Server Name = NAS-OFFICE", b"Server Name = <script>x</script>"))
    _, _, text = page.request("GET", "/", ADMIN)
    assert "<script>" not in text and "&lt;script&gt;x&lt;/script&gt;" in text


def test_session_cookie_parsing_keeps_only_plain_values():
    assert session_cookies("NAS_SID=abc123; NAS_USER=admin; other=1") == {"NAS_SID": "abc123", "NAS_USER": "admin"}
    assert session_cookies('NAS_SID="a b"; NAS_USER=<x>') == {}
    assert session_cookies("x" * 9000) == {}
    assert session_cookies(None) == {}


# ---------------------------------------------------------------- as a CGI script (what the package uses)
def cgi(root: Path, method: str, query: str = "", cookie: str = "", body: bytes = b"") -> Tuple[str, str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(SRC), "REQUEST_METHOD": method,
           "SCRIPT_NAME": "/cgi-bin/qpkg/ExposureGuard/index.cgi", "QUERY_STRING": query, "HTTP_COOKIE": cookie,
           "CONTENT_LENGTH": str(len(body)), "CONTENT_TYPE": "application/x-www-form-urlencoded"}
    proc = subprocess.run([sys.executable, "-m", "exposure_guard", "web", "--cgi", "--root", str(root), "--offline"],
                          input=body, capture_output=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    head, _, text = proc.stdout.partition(b"\r\n\r\n")
    return head.decode("latin-1"), text.decode("utf-8")


def test_each_cgi_request_is_its_own_process_and_tokens_carry_over(qts):
    root, _page, auth = qts
    head, text = cgi(root, "GET")
    assert head.startswith("Status: 401 Unauthorized\r\n") and "NAS-OFFICE" not in text
    assert "Content-Security-Policy: default-src 'none'" in head
    head, text = cgi(root, "GET", cookie=ADMIN)
    assert head.startswith("Status: 200 OK\r\n") and "AT RISK" in text and 'action="?a=plan"' in text
    body = urlencode({"check": "service.telnet", "csrf": csrf_of(text)}).encode()
    head, text = cgi(root, "POST", "a=fix", ADMIN, body)
    assert head.startswith("Status: 200 OK\r\n") and "Applied 1 change(s)" in text, text
    assert b"TELNET Enable = FALSE" in (root / "etc/config/uLinux.conf").read_bytes()
    secret = root / "var/exposure-guard/web-secret"
    assert secret.stat().st_mode & 0o777 == 0o600 and len(secret.read_bytes()) == 32
    head, _ = cgi(root, "POST", "a=fix", ADMIN, b"check=service.telnet&csrf=" + b"0" * 40)
    assert head.startswith("Status: 403 Forbidden\r\n")


# ---------------------------------------------------------------- HTTPS-only admin UI (Force SSL)
@pytest.fixture
def tls_context(tmp_path):
    import ssl

    from tests.support.net import make_cert

    cert, key = make_cert(tmp_path / "tls", "qts", "/O=QNAP Systems Inc./CN=QNAP NAS", "IP:127.0.0.1")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


def test_force_ssl_checks_the_session_over_https_at_the_stunnel_port(qts_tree, tls_context):
    root = qts_tree("exposed")
    with FakeQtsAuth(SESSIONS, tls=tls_context) as https_auth:
        conf = root / "etc/config/uLinux.conf"
        text = conf.read_bytes() + b"\n[System]\n"  # keys below are added to the first [System] by setcfg
        conf.write_bytes(text)
        from exposure_guard.qts.config import QtsConfig

        config = QtsConfig(QtsRoot(root))
        config.setcfg("System", "Force SSL", "1", "etc/config/uLinux.conf")
        config.setcfg("Stunnel", "Enable", "1", "etc/config/uLinux.conf")
        config.setcfg("Stunnel", "Port", str(https_auth.port), "etc/config/uLinux.conf")
        page = Page(root)
        try:
            code, _, text = page.request("GET", "/", ADMIN)
        finally:
            page.close()
        assert code == 200 and "AT RISK" in text and https_auth.queries == [{"sid": "adminsid1"}]


def test_a_redirect_to_https_on_loopback_is_followed_and_off_loopback_refused(qts_tree, tls_context):
    root = qts_tree("exposed")
    with FakeQtsAuth(SESSIONS, tls=tls_context) as https_auth, \
            FakeQtsAuth({}, redirect_to=https_auth.url) as http_port, \
            FakeQtsAuth({}, redirect_to="https://203.0.113.9/cgi-bin/authLogin.cgi") as liar:
        page = Page(root, http_port.url)
        try:
            assert page.request("GET", "/", ADMIN)[0] == 200 and len(https_auth.queries) == 1
        finally:
            page.close()
        page = Page(root, liar.url)
        try:
            assert page.request("GET", "/", ADMIN)[0] == 503 and len(https_auth.queries) == 1
        finally:
            page.close()


def test_router_and_internet_sections_show_the_mappings_and_the_rule_to_remove():
    from exposure_guard.report import Finding, Report
    from exposure_guard.web import page

    router = Finding("router.upnp-mappings", "t", "critical", "fail", "the router forwards 1 port", {
        "mappings_to_this_nas": [{"external": "TCP 8080", "internal": "10.0.0.2:8080", "description": "<b>ARC</b>",
                                  "management_port": True, "enabled": True}, "junk"]})
    reach = Finding("reachability.admin", "t", "critical", "fail", "reached", {"ports": [
        {"service": "admin HTTP", "family": "ipv4", "port": 8080, "state": "verified",
         "forwarded": "through a port forward that is NOT a UPnP mapping: remove it (external TCP 8080 -> "
                      "10.0.0.2:8080)"}, 7]})
    html = page.overview(Report({"hostname": "n"}, [router, reach]), [], "tok").decode()
    assert "<td>TCP 8080</td><td>10.0.0.2:8080</td><td>&lt;b&gt;ARC&lt;/b&gt;</td><td>management port</td>" in html
    assert "external TCP 8080 -&gt; 10.0.0.2:8080" in html and "<td>admin HTTP</td><td>ipv4 8080</td>" in html
    unread = Finding("router.upnp-mappings", "t", "high", "unknown", "the table cannot be read", {})
    assert "<h2>Router</h2><p>the table cannot be read</p>" in page.overview(Report({}, [unread]), [], "t").decode()


# ---------------------------------------------------------------- settings from the page
@pytest.fixture
def with_settings(qts_tree):
    with FakeQtsAuth(SESSIONS) as auth:
        root = qts_tree("exposed")
        set_admin_port(root, auth.port)
        ini = root / "exposure-guard.ini"
        ini.write_text("; the owner's notes\n[agent]\nmode = report\ninterval = 1h\n[checks]\nservice.ssh = ignore\n")
        page = Page(root)
        page.app.settings = load_settings(ini, environ={})
        try:
            yield root, page, ini
        finally:
            page.close()


def test_settings_are_shown_and_saved_validated_with_a_backup(with_settings):
    root, page, ini = with_settings
    original = ini.read_text()
    _, _, text = page.request("GET", "/", ADMIN)
    assert '<option value="report" selected>' in text and 'name="agent.interval" value="3600"' in text
    assert "none (this NAS reports only here)" in text
    token = csrf_of(text)
    code, _, text = page.request("POST", "/?a=settings", ADMIN, form={
        "csrf": token, "agent.mode": "fix", "agent.interval": "30m", "reachability.prober_url": ""})
    assert code == 200 and "Settings saved" in text, text
    saved = ini.read_text()
    assert "; the owner's notes" in saved and "service.ssh = ignore" in saved  # the rest of the file is kept
    assert "mode = fix" in saved and "interval = 30m" in saved
    assert (root / "exposure-guard.ini.bak").read_text() == original
    assert page.app.settings.mode == "fix" and page.app.settings.get("agent", "interval") == 1800


@pytest.mark.parametrize("field,value,error", [("agent.mode", "sometimes", "[agent] mode = 'sometimes' is not valid"),
                                               ("agent.interval", "5", "between 1m and 7d"),
                                               ("reachability.prober_url", "file:///etc/passwd", "prober_url"),
                                               ("agent.interval", "1h\n[server]\nurl = http://evil", "one line")])
def test_invalid_settings_change_nothing(with_settings, field, value, error):
    root, page, ini = with_settings
    original = ini.read_bytes()
    _, _, text = page.request("GET", "/", ADMIN)
    code, _, text = page.request("POST", "/?a=settings", ADMIN, form={"csrf": csrf_of(text), field: value})
    assert code == 200 and "Settings not changed" in text and escape_html(error) in text, text
    assert ini.read_bytes() == original and not (root / "exposure-guard.ini.bak").exists()


def escape_html(text: str) -> str:
    from html import escape

    return escape(text)
