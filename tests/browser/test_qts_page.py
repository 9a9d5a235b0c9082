"""The page inside QTS in headless Debian Chromium (Playwright, no downloaded browser): served by
``exposure-guard web`` on loopback for the simulated QTS of the unit tests, with a double of QTS's
authLogin.cgi. No session or a non-admin one sees nothing; an administrator sees the verdict, opens a
finding, fixes it (the config file changes, journaled) and undoes it (byte-identical), at the QTS desktop
window size and at a phone's width. Screenshots go to artifacts/ (and, with EG_UPDATE_DOCS=1, the desktop
one to docs/img/qts-page.png for the README). A device name carrying HTML must show as text and never run."""

from __future__ import annotations

import os
import re
import shutil
import threading
from pathlib import Path
from typing import List

import pytest
from tests.support.browser import launch, require_chromium
from tests.support.paths import QTS_TREES, REPO
from tests.support.qts import tree_bytes
from tests.support.qtsauth import FakeQtsAuth

from exposure_guard.qts.root import QtsRoot
from exposure_guard.settings import load_settings
from exposure_guard.web.app import WebApp, make_server

XSS_NAME = '<img src=x onerror="alert(1)">NAS-OFFICE'

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture
def served(tmp_path: Path):
    require_chromium()
    root = tmp_path / "nas"
    shutil.copytree(str(QTS_TREES / "exposed"), str(root), symlinks=True)
    with FakeQtsAuth({"adminsid1": ("admin", True), "usersid1": ("bob", False)}) as auth:
        conf = root / "etc/config/uLinux.conf"
        text = re.sub(rb"Web Access Port = \d+", b"Web Access Port = %d" % auth.port, conf.read_bytes())
        conf.write_bytes(text.replace(b"Server Name = NAS-OFFICE", b"Server Name = " + XSS_NAME.encode()))
        app = WebApp(QtsRoot(root), load_settings(None, environ={}), root / "var/exposure-guard", offline=True)
        server = make_server(app, "127.0.0.1", 0)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        try:
            yield root, "http://127.0.0.1:%d/cgi-bin/qpkg/ExposureGuard/index.cgi" % server.server_address[1]
        finally:
            server.shutdown()
            server.server_close()


def session(context, sid: str) -> None:
    context.add_cookies([{"name": "NAS_SID", "value": sid, "domain": "127.0.0.1", "path": "/"}])


@pytest.mark.parametrize("size,name", [((1100, 600), "desktop"), ((390, 844), "phone")])
def test_admin_fixes_and_undoes_from_the_page(served, size, name) -> None:
    from playwright.sync_api import sync_playwright

    root, url = served
    original = tree_bytes(root)
    artifacts = REPO / "artifacts"
    artifacts.mkdir(exist_ok=True)
    dialogs: List[str] = []
    with sync_playwright() as p:
        browser = launch(p)
        try:
            # nobody logged in, and a user who is not an administrator: nothing of the NAS is shown
            anonymous = browser.new_context(viewport={"width": size[0], "height": size[1]})
            page = anonymous.new_page()
            answer = page.goto(url)
            assert answer is not None and answer.status == 401
            assert "Log in to QTS" in page.content() and "NAS-OFFICE" not in page.content()
            session(anonymous, "usersid1")
            answer = page.goto(url)
            assert answer is not None and answer.status == 403 and "service.telnet" not in page.content()
            anonymous.close()

            context = browser.new_context(viewport={"width": size[0], "height": size[1]})
            session(context, "adminsid1")
            page = context.new_page()
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.goto(url)
            assert page.locator(".verdict strong").inner_text() == "AT RISK"
            assert XSS_NAME in page.locator(".verdict").inner_text()  # shown as text
            telnet = page.locator(".card", has=page.locator("code", has_text="service.telnet"))
            telnet.locator("summary").click()
            assert "What to do" in telnet.inner_text()
            page.screenshot(path=str(artifacts / ("qts-page-%s.png" % name)), full_page=name == "desktop")

            telnet.get_by_role("button", name="Fix…").click()
            assert "Apply 1 change?" in page.content()
            page.screenshot(path=str(artifacts / ("qts-page-%s-plan.png" % name)))
            page.get_by_role("button", name="Apply").click()
            assert "Applied 1 change(s)" in page.locator(".msg").inner_text()
            assert b"TELNET Enable = FALSE" in (root / "etc/config/uLinux.conf").read_bytes()
            assert '"event": "applied"' in (root / "var/exposure-guard/journal.jsonl").read_text()

            page.get_by_role("button", name="Undo").first.click()
            assert "restored the exact original bytes" in page.locator(".msg").inner_text()
            assert tree_bytes(root) == original
            if name == "desktop" and os.environ.get("EG_UPDATE_DOCS"):  # the README's picture, with a plain name
                conf = root / "etc/config/uLinux.conf"
                conf.write_bytes(conf.read_bytes().replace(XSS_NAME.encode(), b"NAS-OFFICE"))
                page.get_by_role("button", name="Check now").click()
                page.screenshot(path=str(REPO / "docs/img/qts-page.png"))
        finally:
            browser.close()
    assert dialogs == []  # the device name's HTML never ran
    width = page.viewport_size["width"] if page.viewport_size else size[0]
    assert width == size[0]
