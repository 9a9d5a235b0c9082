"""Headless Debian Chromium (Playwright, no downloaded browser) against the real server process:
log in, read the summary counts, filter exposed devices, open a device page, save screenshots under
artifacts/. Device strings carrying HTML/JS must show as text and never run."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any, Dict, List

import pytest
from tests.support.browser import launch, require_chromium
from tests.support.serverproc import ADMIN_PASSWORD, ServerProcess, cli, free_port

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


XSS_HOST = '<img src=x onerror="alert(1)">evil'

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _report(device: Dict[str, Any], failing: List[str], exposed: bool, stamp: str) -> Dict[str, Any]:
    from exposure_guard.report import Finding, Report

    checks = ["router.upnp-mappings", "myqnapcloud.upnp-forwarding", "service.telnet", "admin.https"]
    findings = [Finding(id=c, title="Title " + c, severity="critical" if c.startswith("router") else "high",
                        status="fail" if c in failing else "pass", summary="%s is %s" % (c, "bad" if c in failing
                                                                                           else "fine"),
                        evidence={"file": "etc/config/uLinux.conf", "note": "<script>alert(2)</script>"},
                        exposure=exposed) for c in checks]
    report = Report(device=device, findings=findings)
    report.generated_at = stamp
    return report.to_dict()


@pytest.fixture
def populated_server(tmp_path: Path) -> Any:
    require_chromium()
    from sqlalchemy import text

    from exposure_guard import checkin
    from exposure_guard.qts.identity import DeviceIdentity
    from exposure_guard.settings import load_settings
    from exposure_guard_server.db import make_engine

    db_url = "sqlite:///%s" % (tmp_path / "eg.db")
    cli("init", "--db", db_url)
    secret = cli("enroll-secret", "create", "--db", db_url).stdout.strip().splitlines()[-1]
    server = ServerProcess(db_url, free_port(), tmp_path / "server.log", workers=1)
    server.start()
    settings = load_settings(None, environ={"EXPOSURE_GUARD_SERVER_URL": server.url})
    fleet = [
        ("qnap-b-001", "reception-nas", ["router.upnp-mappings", "myqnapcloud.upnp-forwarding"], True),
        ("qnap-b-002", XSS_HOST, ["router.upnp-mappings"], True),
        ("qnap-b-003", "accounting", ["service.telnet"], False),
        ("qnap-b-004", "backup-1", ["admin.https"], False),
        ("qnap-b-005", "backup-2", [], False),
        ("qnap-b-006", "old-lab", [], False),
    ]
    try:
        for i, (device_id, host, failing, exposed) in enumerate(fleet):
            ident = DeviceIdentity(device_id=device_id, hostname=host, model="TS-453D", firmware="5.1.%d" % (i % 2),
                                   build="20231128", lan_addresses=["192.168.1.%d" % (20 + i)])
            state = tmp_path / ("agent-%d" % i)
            checkin.enroll(server.url, secret, ident, state)
            checkin.spool_report(state, _report(ident.to_dict(), [], False, "2024-05-01T10:00:00Z"), 10)
            checkin.spool_report(state, _report(ident.to_dict(), failing, exposed, "2024-05-02T10:00:00Z"), 10)
            result = checkin.deliver_spool(settings, state, deadline=20)
            assert result.ok, result.summary()
        # old-lab stopped checking in long ago.
        engine = make_engine(db_url)
        with engine.begin() as conn:
            conn.execute(text("UPDATE devices SET stale_base = :t, last_seen_at = :t WHERE device_id = 'qnap-b-006'"),
                         {"t": time.time() - 30 * 86400})
        engine.dispose()
        yield server
    finally:
        server.stop()


def test_dashboard_login_summary_filter_device(populated_server: ServerProcess) -> None:
    from playwright.sync_api import sync_playwright

    url = populated_server.url
    artifacts = ROOT / "artifacts"
    artifacts.mkdir(exist_ok=True)
    dialogs: List[str] = []
    with sync_playwright() as p:
        browser = launch(p)
        try:
            page = browser.new_page(viewport={"width": 1360, "height": 900})
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.goto(url + "/")
            assert "/login" in page.url
            page.fill("input[name=username]", "admin")
            page.fill("input[name=password]", ADMIN_PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_selector("[data-count=exposed]")
            counts = {s: page.inner_text("[data-count=%s]" % s) for s in ("exposed", "at_risk", "ok", "stale",
                                                                          "total")}
            assert counts == {"exposed": "2", "at_risk": "2", "ok": "1", "stale": "1", "total": "6"}
            assert page.inner_text(".ranked li:first-child").startswith("router.upnp-mappings")
            page.screenshot(path=str(artifacts / "dashboard-fleet.png"), full_page=True)

            page.select_option("select[name=state]", "exposed")
            page.click("form.filters button[type=submit]")
            page.wait_for_url("**/?state=exposed**")
            rows = page.locator("#devices tbody tr")
            assert rows.count() == 2
            hosts = sorted(rows.nth(i).locator("td a").inner_text() for i in range(2))
            assert hosts == sorted(["reception-nas", XSS_HOST])  # the hostile name shows as plain text
            assert page.locator("#devices img").count() == 0
            page.screenshot(path=str(artifacts / "dashboard-exposed.png"), full_page=True)

            page.click("text=reception-nas")
            page.wait_for_selector("#device-name")
            assert "reception-nas" in page.inner_text("#device-name")
            assert "EXPOSED" in page.inner_text("#device-name")
            body = page.inner_text("main")
            assert "router.upnp-mappings" in body and "became exposed" in body
            assert "Newly failing: myqnapcloud.upnp-forwarding, router.upnp-mappings" in body
            evidence = page.locator("table.findings td:last-child > details").first
            evidence.locator("summary").first.click()  # open an evidence block: the script tag is text
            assert "<script>alert(2)</script>" in evidence.inner_text()
            page.screenshot(path=str(artifacts / "dashboard-device.png"), full_page=True)

            page.goto(url + "/devices/qnap-b-002")
            assert XSS_HOST in page.inner_text("#device-name")
            page.goto(url + "/?state=stale")
            assert page.locator("#devices tbody tr").count() == 1 and "old-lab" in page.inner_text("#devices")
        finally:
            browser.close()
    assert dialogs == []  # no injected script ever ran
    assert (artifacts / "dashboard-device.png").stat().st_size > 10000


PHONE = {"width": 390, "height": 844}


def _log_in(page: Any, url: str, username: str = "admin") -> None:
    page.goto(url + "/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", ADMIN_PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_selector("[data-count=total]")


def test_groups_in_the_browser_and_every_page_fits_a_phone(populated_server: ServerProcess) -> None:
    """A customer's view: pick a group and every tile and the failing-checks panel count only its boxes; the
    Groups page ranks it first. Then at 390 px (a phone) no page is wider than the screen and "Log out" and
    every button are on it; screenshots saved under artifacts/ (docs/images/ keeps one)."""
    from playwright.sync_api import sync_playwright

    db = populated_server.db_url
    cli("group", "create", "Reception", "--db", db)
    cli("group", "create", "Back office", "--db", db)
    for device_id, group in (("qnap-b-001", "Reception"), ("qnap-b-002", "Reception"), ("qnap-b-003", "Back office"),
                             ("qnap-b-004", "Back office")):
        cli("group", "move", device_id, group, "--db", db)
    listed = cli("group", "list", "--db", db).stdout
    assert re.search(r"Back office\s+2\s+0", listed) and re.search(r"Reception\s+2\s+0", listed), listed
    url = populated_server.url
    artifacts = ROOT / "artifacts"
    artifacts.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = launch(p)
        try:
            page = browser.new_page(viewport={"width": 1360, "height": 900})
            _log_in(page, url)
            page.select_option("select[name=group]", "Reception")
            page.click("form.filters button[type=submit]")
            page.wait_for_selector("#scope")
            counts = {s: page.inner_text("[data-count=%s]" % s) for s in ("exposed", "at_risk", "ok", "stale", "total")}
            assert counts == {"exposed": "2", "at_risk": "0", "ok": "0", "stale": "0", "total": "2"}
            panel = page.inner_text(".ranked")
            assert "myqnapcloud.upnp-forwarding" in panel and "service.telnet" not in panel
            page.click("a.count.state-exposed")  # a tile keeps the group
            page.wait_for_url("**group=Reception**")
            assert page.locator("#devices tbody tr").count() == 2
            page.goto(url + "/groups")
            first = page.locator("#groups tbody tr").first.inner_text()
            assert first.startswith("Reception")

            phone = browser.new_page(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True)
            _log_in(phone, url)
            for name, path in (("fleet", "/"), ("device", "/devices/qnap-b-001"), ("events", "/events"),
                               ("groups", "/groups"), ("admin", "/admin"), ("report", None)):
                if path is None:
                    phone.goto(url + "/devices/qnap-b-001")
                    path = phone.locator("a[href^='/reports/']").first.get_attribute("href")
                phone.goto(url + path)
                width = phone.evaluate("document.documentElement.scrollWidth")
                assert width <= PHONE["width"], "%s is %d px wide at 390 px" % (name, width)
                logout = phone.locator("header button.link").bounding_box()
                assert logout and logout["x"] + logout["width"] <= PHONE["width"], name
                for button in phone.locator("main button").all():
                    box = button.bounding_box()
                    if box is not None:  # inside a scrolling table a button may be scrolled out of view
                        in_table = button.evaluate("b => !!b.closest('table')")
                        assert in_table or box["x"] + box["width"] <= PHONE["width"] + 0.5, (name, box)
                phone.screenshot(path=str(artifacts / ("phone-%s.png" % name)), full_page=True)
        finally:
            browser.close()
    assert (artifacts / "phone-fleet.png").stat().st_size > 10000


def test_msp_morning_in_the_browser(populated_server: ServerProcess) -> None:
    """A viewer limited to one customer sees only its boxes on every page, in the CSV and the API; an
    operator accepts a finding from the device page and the counts move, then the acceptance expires (time
    injected through the server's own sweep) and they move back; the events page filtered to yesterday
    and one group shows that group's events of that day only."""
    from playwright.sync_api import sync_playwright
    from sqlalchemy import text

    from exposure_guard_server.db import make_engine
    from exposure_guard_server.db.lock import WriteLock
    from exposure_guard_server.services.acceptances import Acceptances

    db, url = populated_server.db_url, populated_server.url
    cli("group", "create", "Reception", "--db", db)
    for device_id in ("qnap-b-001", "qnap-b-003"):
        cli("group", "move", device_id, "Reception", "--db", db)
    password_file = ROOT / "artifacts" / "pw.txt"
    password_file.parent.mkdir(exist_ok=True)
    password_file.write_text(ADMIN_PASSWORD)
    cli("user", "frontdesk", "--role", "viewer", "--groups", "Reception", "--password-file", str(password_file),
        "--db", db)
    cli("user", "ops", "--role", "operator", "--password-file", str(password_file), "--db", db)
    engine = make_engine(db)
    yesterday = time.time() - 86400
    with engine.begin() as conn:  # qnap-b-001's events happened yesterday; the others' today
        conn.execute(text("UPDATE transitions SET at = :t WHERE device_pk = (SELECT id FROM devices "
                          "WHERE device_id = 'qnap-b-001')"), {"t": yesterday})
    day = time.strftime("%Y-%m-%d", time.gmtime(yesterday))
    with sync_playwright() as p:
        browser = launch(p)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            _log_in(page, url, "frontdesk")
            assert page.inner_text("[data-count=total]") == "2"
            hosts = page.locator("#devices tbody tr td:first-child a").all_inner_texts()
            assert sorted(hosts) == ["accounting", "reception-nas"]
            assert page.locator("text=Admin").count() == 0  # a viewer has no Admin page link
            for path in ("/events", "/groups", "/devices.csv", "/api/v1/devices", "/api/v1/summary"):
                body = page.request.get(url + path).text()
                assert "backup-1" not in body and "qnap-b-004" not in body, path
            assert page.request.get(url + "/devices/qnap-b-004").status == 404
            page.goto(url + "/events?since=%s&until=%s&group=Reception" % (day, day))
            kinds = page.locator("#events [data-kind]").all_inner_texts()
            hosts = page.locator("#events tbody td:nth-child(2)").all_inner_texts()
            assert kinds and set(hosts) == {"reception-nas"}, (kinds, hosts)

            ops = browser.new_page(viewport={"width": 1280, "height": 900})
            _log_in(ops, url, "ops")
            before = ops.inner_text("[data-count=exposed]")
            ops.goto(url + "/devices/qnap-b-002")  # exposed by router.upnp-mappings alone
            ops.click("tr.status-fail >> text=Accept this risk…")
            form = ops.locator("tr.status-fail form[action$='/accept']").first
            form.locator("input[name=reason]").fill("the kiosk VPN box")
            form.locator("input[name=until]").fill(time.strftime("%Y-%m-%d", time.gmtime(time.time() + 86400)))
            form.locator("button[type=submit]").click()
            ops.wait_for_selector("#acceptances")
            ops.goto(url + "/")
            assert int(ops.inner_text("[data-count=exposed]")) == int(before) - 1
            assert "1 risk accepted" in ops.inner_text("#devices-card, main")
            # Two days later the sweep ends it: exposed again, and the event says why.
            Acceptances(engine, WriteLock(engine)).expire(now=time.time() + 3 * 86400)
            ops.goto(url + "/")
            assert ops.inner_text("[data-count=exposed]") == before
            ops.goto(url + "/events?kind=acceptance_expired")
            assert ops.locator("#events [data-kind=acceptance_expired]").count() == 1
            ops.screenshot(path=str(ROOT / "artifacts" / "events-acceptance-expired.png"), full_page=True)
        finally:
            browser.close()
            engine.dispose()
