"""``exposure-guard web``: the page inside QTS, served on loopback behind QTS's own admin web server.

Every request is checked against QTS's session (web/auth.py) before anything is shown or done; every change
is a POST with the CSRF token (web/csrf.py), re-checked, done one at a time, and journaled like the CLI's.
Answers carry a strict Content-Security-Policy (no script, nothing from another origin) and are never cached.
Standard library only: it runs under the NAS's Python 3.8 like the rest of the agent."""

from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Dict, List, Optional, Tuple
from urllib.parse import parse_qs, urlsplit

from exposure_guard.context import CheckContext
from exposure_guard.errors import ExposureGuardError, SettingsError
from exposure_guard.qts.config import QtsConfig
from exposure_guard.qts.root import QtsRoot
from exposure_guard.report import Report
from exposure_guard.settings import Settings
from exposure_guard.web import page
from exposure_guard.web.auth import Admin, AuthError, QtsAuth
from exposure_guard.web.csrf import CsrfTokens

if TYPE_CHECKING:
    from exposure_guard.fixes.apply import PlannedAction

log = logging.getLogger("exposure_guard.web")
MAX_BODY = 64 * 1024
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
                               "frame-ancestors 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
Answer = Tuple[int, Dict[str, str], bytes]


class WebApp:
    """The page's logic, independent of the HTTP server (tests call ``handle`` directly too)."""

    def __init__(self, root: QtsRoot, settings: Settings, state_dir: Path, auth_url: Optional[str] = None,
                 offline: bool = False, secret: bytes = b"") -> None:
        self.root = root
        self.settings = settings
        self.state_dir = state_dir
        self.offline = offline
        self.auth = QtsAuth(QtsConfig(root), auth_url)
        self.csrf = CsrfTokens(secret)
        self.lock = threading.Lock()  # one check or change at a time
        self.report: Optional[Report] = None

    # -- helpers ---------------------------------------------------------------------------------------
    def context(self) -> CheckContext:
        return CheckContext(self.root, self.settings, offline=self.offline, state_dir=self.state_dir)

    def _check(self) -> Report:
        from exposure_guard.core import check_once, write_last_report

        report = check_once(self.context()).report
        write_last_report(self.state_dir, report)
        self.report = report
        return report

    def _history(self) -> List[object]:
        from exposure_guard.fixes.journal import ChangeJournal

        try:
            return list(ChangeJournal(self.state_dir, self.root.root).changes())
        except ExposureGuardError as exc:
            log.warning("cannot read the change journal: %s", exc)
            return []

    def _overview(self, admin: Admin, message: str = "", error: bool = False) -> Answer:
        from exposure_guard.web.settings_form import current_values

        report = self.report or self._check()
        return 200, {}, page.overview(report, self._history(), self.csrf.token(admin.session), message, error,
                                      current_values(self.settings), self._enrollment())

    def _enrollment(self) -> str:
        from exposure_guard.checkin import ENROLLMENT_FILE

        url = self.settings.get("server", "url")
        if (self.state_dir / ENROLLMENT_FILE).exists():
            return "enrolled%s" % (" with %s" % url if url else "")
        return ("not enrolled yet (server %s; enroll with `exposure-guard enroll`)" % url) if url else \
            "none (this NAS reports only here)"

    def _plan(self, check: str) -> Tuple[List[PlannedAction], CheckContext]:
        from exposure_guard.core import check_once, plan_fixes

        ctx = self.context()
        run = check_once(ctx)
        outcomes = run.outcomes if check == "*" else {k: v for k, v in run.outcomes.items() if k == check}
        return plan_fixes(ctx, outcomes, daemon=False), ctx

    # -- requests --------------------------------------------------------------------------------------
    def handle(self, method: str, path: str, cookie: Optional[str], body: bytes) -> Answer:
        parts = urlsplit(path)
        action = parse_qs(parts.query).get("a", [""])[0]
        name = action or (parts.path.rsplit("/", 1)[-1] if not parts.path.endswith("/") else "")
        if method == "GET" and name == "style.css":
            return 200, {"Content-Type": "text/css; charset=utf-8"}, page.STYLE.encode("utf-8")
        try:
            admin = self.auth.check(cookie)
        except AuthError as exc:
            log.warning("refused %s %s: %s", method, path[:200], exc.reason)
            return exc.status, {}, page.refusal(exc.status)
        if method == "GET" and name in ("", "index", "index.cgi"):
            with self.lock:
                return self._overview(admin)
        if method != "POST" or name not in ("check", "plan", "fix", "undo", "settings"):
            return 404, {}, page.page("ExposureGuard", "<p>Not found. <a href=\"?\">Back</a></p>")
        fields = _form(body)
        if not self.csrf.valid(admin.session, fields.get("csrf", "")):
            log.warning("refused %s by %s: missing or wrong CSRF token", name, admin.user)
            return 403, {}, page.page("ExposureGuard", "<p>This form has expired. <a href=\"?\">Reload</a></p>")
        with self.lock:
            try:
                return getattr(self, "_post_" + name)(admin, fields)  # type: ignore[no-any-return]
            except ExposureGuardError as exc:
                log.warning("%s by %s failed: %s", name, admin.user, exc)
                return self._overview(admin, str(exc), error=True)

    def _post_check(self, admin: Admin, fields: Dict[str, str]) -> Answer:
        self._check()
        return self._overview(admin, "Checked again.")

    def _post_plan(self, admin: Admin, fields: Dict[str, str]) -> Answer:
        check = fields.get("check", "")
        items, _ctx = self._plan(check)
        return 200, {}, page.plan_page(items, check, self.csrf.token(admin.session))

    def _post_fix(self, admin: Admin, fields: Dict[str, str]) -> Answer:
        from exposure_guard.core import fix_once, write_last_report
        from exposure_guard.qts.root import secure_state_dir

        items, ctx = self._plan(fields.get("check", ""))
        if not items:
            return self._overview(admin, "Nothing to fix: nothing that can be fixed safely is still needed.")
        secure_state_dir(self.state_dir, self.root.root, create=True)
        run = fix_once(ctx, items)
        run.report.mode = "fix"
        write_last_report(self.state_dir, run.report)
        self.report = run.report
        log.warning("%s applied %d change(s), %d failed", admin.user, len(run.result.applied), len(run.result.failed))
        if run.result.failed:
            return self._overview(admin, "Failed: %s" % "; ".join(run.result.failed), error=True)
        return self._overview(admin, "Applied %d change(s); each can be undone below." % len(run.result.applied))

    def _post_settings(self, admin: Admin, fields: Dict[str, str]) -> Answer:
        from exposure_guard.web import settings_form

        try:
            self.settings = settings_form.apply(self.settings, fields)
        except SettingsError as exc:
            return self._overview(admin, "Settings not changed: %s" % exc, error=True)
        log.warning("%s changed the settings", admin.user)
        return self._overview(admin, "Settings saved (the previous file is kept as .bak).")

    def _post_undo(self, admin: Admin, fields: Dict[str, str]) -> Answer:
        from exposure_guard.fixes.apply import undo_changes
        from exposure_guard.fixes.journal import ChangeJournal

        journal = ChangeJournal(self.state_dir, self.root.root)
        try:
            record = journal.get(fields.get("change", ""))
        except ExposureGuardError as exc:
            return self._overview(admin, str(exc), error=True)
        lines = undo_changes(self.context(), journal, [record])
        log.warning("%s undid %s: %s", admin.user, record.change_id, "; ".join(lines))
        self._check()
        return self._overview(admin, "; ".join(lines), error=bool(lines.refused or lines.failed))


def _form(body: bytes) -> Dict[str, str]:
    try:
        parsed = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False, max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        return {}
    return {k: v[0] for k, v in parsed.items() if v}


class _Handler(BaseHTTPRequestHandler):
    app: WebApp
    timeout = 15  # a client that stalls mid-request is dropped
    server_version = "ExposureGuard"
    sys_version = ""

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        log.info("%s %s", self.address_string(), format % args)

    def _answer(self, answer: Answer) -> None:
        status, headers, body = answer
        self.send_response(status)
        for key, value in final_headers(headers).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _safely(self, method: str, body: bytes) -> None:
        self._answer(answer_safely(self.app, method, self.path, self.headers.get("Cookie"), body))

    def do_GET(self) -> None:  # noqa: N802
        self._safely("GET", b"")

    def do_POST(self) -> None:  # noqa: N802
        length = self.headers.get("Content-Length", "")
        if not length.isdigit() or int(length) > MAX_BODY:
            self._answer(refused_body(length))
            self.close_connection = True
            return
        self._safely("POST", self.rfile.read(int(length)))


def answer_safely(app: WebApp, method: str, path: str, cookie: Optional[str], body: bytes) -> Answer:
    """``app.handle``, with the last line of defence: a 500 page, never a traceback to the browser."""
    try:
        return app.handle(method, path, cookie, body)
    except Exception:
        log.exception("internal error on %s %s", method, path[:200])
        return 500, {}, page.page("ExposureGuard", "<p>Internal error; see the event log.</p>")


def refused_body(length: str) -> Answer:
    """A POST whose Content-Length is missing (411) or above MAX_BODY (413)."""
    return 413 if length.isdigit() else 411, {}, page.page("ExposureGuard", "<p>Refused.</p>")


def final_headers(headers: Dict[str, str]) -> Dict[str, str]:
    """The security headers every answer carries, then the answer's own (HTML unless it says otherwise)."""
    out = dict(SECURITY_HEADERS, **headers)
    out.setdefault("Content-Type", "text/html; charset=utf-8")
    return out


def make_server(app: WebApp, host: str, port: int) -> ThreadingHTTPServer:
    handler = type("Handler", (_Handler,), {"app": app})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def run_cgi(app: WebApp, environ: Dict[str, str], stdin: BinaryIO, stdout: BinaryIO) -> int:
    """One request as a CGI script of QTS's admin web server (no listener of our own): the request from the
    CGI environment, the answer as a CGI document on ``stdout``."""
    method = environ.get("REQUEST_METHOD", "GET").upper()
    path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
    if environ.get("QUERY_STRING"):
        path += "?" + environ["QUERY_STRING"]
    length = environ.get("CONTENT_LENGTH", "")
    if method == "POST" and (not length.isdigit() or int(length) > MAX_BODY):
        _write_cgi(refused_body(length), stdout)
        return 0
    body = stdin.read(int(length)) if method == "POST" else b""
    _write_cgi(answer_safely(app, method, path or "/", environ.get("HTTP_COOKIE"), body), stdout)
    return 0


def _write_cgi(answer: Answer, stdout: BinaryIO) -> None:
    status, headers, body = answer
    lines = ["Status: %d %s" % (status, _REASONS.get(status, "Error"))]
    lines.extend("%s: %s" % item for item in final_headers(headers).items())
    lines.append("Content-Length: %d" % len(body))
    stdout.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
    stdout.flush()


_REASONS = {200: "OK", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 413: "Payload Too Large",
            500: "Internal Server Error", 503: "Service Unavailable"}
