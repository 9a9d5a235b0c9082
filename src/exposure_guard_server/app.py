"""The ASGI application: JSON API for agents and automation, server-rendered dashboard, metrics."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, AsyncIterator, Dict, List, Optional, Tuple
from urllib.parse import quote, urlencode

import jinja2
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.responses import StreamingResponse
from starlette.staticfiles import StaticFiles

from exposure_guard import __version__
from exposure_guard_server.admin import Admin
from exposure_guard_server.config import ServerConfig
from exposure_guard_server.db import make_engine
from exposure_guard_server.errors import ApiError
from exposure_guard_server.ingest import Ingest, flush_counters, read_counters
from exposure_guard_server.queries import SORTS, DeviceFilter, Reader, parse_bool
from exposure_guard_server.reportlogic import STATES, TRANSITION_KINDS, VERDICT_LABEL, format_time
from exposure_guard_server.webhooks import WebhookSender

log = logging.getLogger("exposure_guard_server")

HERE = Path(__file__).parent
CHECKIN_PATH = "/api/v1/checkin"
_CHECKIN_HEADERS = frozenset([b"authorization", b"content-encoding", b"content-length", b"x-exposureguard-interval"])
ENROLL_MAX_BODY = 64 * 1024
FORM_MAX_BODY = 64 * 1024
LOGIN_WINDOW, LOGIN_MAX_FAILURES = 600.0, 10
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"content-security-policy",
     b"default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; "
     b"base-uri 'none'"),
]


class SecurityHeaders:
    """Pure ASGI middleware (cheap on the check-in hot path): hardening headers on every response."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers.extend(h for h in SECURITY_HEADERS if h[0] not in present)
                if b"cache-control" not in present:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


class ExposureGuardApp:
    """The ASGI entry point. ``POST /api/v1/checkin`` is served here as plain ASGI: the busiest route skips
    the framework's middleware, routing and request objects (a third of a check-in's CPU otherwise) and
    runs the ingest in a small dedicated thread pool. Everything else goes to the FastAPI app."""

    def __init__(self, app: FastAPI, server: Server) -> None:
        self.app = app
        self.server = server
        self.state = app.state
        # Two threads: one can wait on the database while the other validates. More only add GIL hand-offs
        # (measured: 1 ≈ 2 > 4 > 8 on SQLite; 2 is best on PostgreSQL).
        self.pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="eg-checkin")

    async def __call__(self, scope: Dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != CHECKIN_PATH:
            await self.app(scope, receive, send)
            return
        ingest = self.server.ingest
        cap = self.server.config.max_body
        extra: Dict[str, str] = {}
        try:
            if scope["method"] != "POST":
                extra = {"allow": "POST"}
                raise ApiError(405, "use POST")
            headers = {}
            for name, value in scope["headers"]:
                if name in _CHECKIN_HEADERS:
                    headers[name] = value.decode("latin-1")
            scheme, _, key = headers.get(b"authorization", "").partition(" ")
            key = key.strip() if scheme.lower() == "bearer" else ""
            if not key:
                raise ApiError(401, "missing node key (Authorization: Bearer <node key>)", {"WWW-Authenticate": "Bearer"})
            length = headers.get(b"content-length")
            if length is not None and (not length.isdigit() or int(length) > cap):
                raise ApiError(413 if length.isdigit() else 400, "body is larger than %d bytes" % cap
                               if length.isdigit() else "bad Content-Length")
            chunks = []
            size = 0
            more = True
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > cap:
                    raise ApiError(413, "body is larger than %d bytes" % cap)
                chunks.append(chunk)
                more = message.get("more_body", False)
            result = await asyncio.get_running_loop().run_in_executor(
                self.pool, ingest.checkin, key, b"".join(chunks), headers.get(b"content-encoding", ""),
                headers.get(b"x-exposureguard-interval"), cap)
            status = 200 if result["duplicate"] else 201
            payload = json.dumps(result).encode("utf-8")
        except ApiError as exc:
            if exc.status in (401, 405, 413, 400) and not getattr(exc, "counted", False):
                ingest.count("checkins_rejected_%d" % exc.status)
            status, payload = exc.status, json.dumps({"detail": exc.detail}).encode("utf-8")
            extra.update(exc.headers)
        out = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
               (b"cache-control", b"no-store")]
        out.extend(SECURITY_HEADERS)
        out.extend((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in extra.items())
        await send({"type": "http.response.start", "status": status, "headers": out})
        await send({"type": "http.response.body", "body": payload})


class Background:
    """Per-process housekeeping thread: webhook deliveries, stale sweep, counter flush, session purge."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="eg-background", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=15)
        self._safe(self.server.flush)

    def _safe(self, func: Any) -> None:
        try:
            func()
        except Exception:  # keep housekeeping alive; the next round retries
            log.exception("background task %s failed", getattr(func, "__name__", func))

    def _run(self) -> None:
        cfg = self.server.config
        next_sweep = next_flush = next_purge = 0.0
        while not self.stop.is_set():
            now = time.monotonic()
            self._safe(self.server.webhooks.run_due)
            if now >= next_sweep:
                self._safe(self.server.ingest.sweep_stale)
                next_sweep = now + cfg.sweep_every
            if now >= next_flush:
                self._safe(self.server.flush)
                next_flush = now + 5
            if now >= next_purge:
                self._safe(self.server.admin.purge_sessions)
                next_purge = now + 600
            self.stop.wait(1.0)


class Server:
    """Everything one server process holds."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.engine = make_engine(config.db_url, pool_size=config.pool_size)
        self.ingest = Ingest(self.engine, default_interval=config.default_interval, stale_grace=config.stale_grace)
        self.admin = Admin(self.engine, session_ttl=config.session_ttl)
        self.reader = Reader(self.engine, stale_grace=config.stale_grace)
        self.webhooks = WebhookSender(self.engine, backoff_base=config.webhook_backoff)
        self.login_failures: Dict[str, List[float]] = {}
        self.templates = _template_env()

    def flush(self) -> None:
        deltas = self.ingest.take_stats()
        try:
            flush_counters(self.engine, deltas)
        except Exception:
            for name, value in deltas.items():  # keep them for the next flush
                self.ingest.count(name, value)
            raise

    def counters(self) -> Dict[str, int]:
        totals = read_counters(self.engine)
        with self.ingest._stats_lock:
            for name, value in self.ingest.stats.items():
                totals[name] = totals.get(name, 0) + value
        return totals


# -- templates -----------------------------------------------------------------------------------------

def _ago(value: Any) -> str:
    if value in (None, ""):
        return "never"
    seconds = max(0, int(time.time() - float(value)))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return "%d%s ago" % (seconds // size, unit)
    return "%ds ago" % seconds


def _template_env() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(HERE / "templates")), autoescape=True,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters["ago"] = _ago
    env.filters["ts"] = format_time
    env.filters["q"] = lambda value: quote(str(value), safe="")
    env.filters["pretty"] = lambda value: json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)
    env.filters["label"] = lambda value: VERDICT_LABEL.get(value, "STALE" if value == "stale" else str(value))
    env.globals["version"] = __version__
    env.globals["states"] = STATES
    return env


# -- helpers -------------------------------------------------------------------------------------------

def _bearer(request: Request) -> Optional[str]:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


async def _read_capped(request: Request, cap: int) -> bytes:
    length = request.headers.get("content-length")
    if length is not None:
        try:
            if int(length) > cap:
                raise ApiError(413, "body is larger than %d bytes" % cap)
        except ValueError:
            raise ApiError(400, "bad Content-Length") from None
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            raise ApiError(413, "body is larger than %d bytes" % cap)
        chunks.append(chunk)
    return b"".join(chunks)


def _filter_from(request: Request) -> DeviceFilter:
    qp = request.query_params

    def integer(name: str, default: int) -> int:
        try:
            return int(qp.get(name) or default)
        except ValueError:
            raise ApiError(400, "%s must be a whole number" % name) from None

    return DeviceFilter(
        state=qp.get("state", ""), exposed=parse_bool(qp.get("exposed"), "exposed"), check=qp.get("check", ""),
        stale=parse_bool(qp.get("stale"), "stale"), firmware=qp.get("firmware", ""), q=qp.get("q", ""),
        sort=qp.get("sort") or "risk", order=qp.get("order", ""), page=integer("page", 1),
        per_page=integer("per_page", 50),
    ).validate()


def _is_api(request: Request) -> bool:
    path = request.url.path
    return path.startswith("/api/") or path in ("/metrics", "/healthz")


def create_app(config: ServerConfig) -> ExposureGuardApp:
    server = Server(config)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        background = Background(server) if config.background else None
        if background:
            background.start()
        try:
            yield
        finally:
            if background:
                background.close()
            else:
                with contextlib.suppress(Exception):
                    server.flush()
            entry.pool.shutdown(wait=False)
            server.engine.dispose()

    app = FastAPI(title="ExposureGuard server", version=__version__, lifespan=lifespan, docs_url=None,
                  redoc_url=None, openapi_url=None)
    app.state.server = server
    app.add_middleware(SecurityHeaders)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    # -- errors ----------------------------------------------------------------------------------------
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> Response:
        if _is_api(request):
            return JSONResponse({"detail": exc.detail}, status_code=exc.status, headers=exc.headers)
        if exc.status == 401:
            return RedirectResponse("/login?next=" + quote(request.url.path, safe="/"), status_code=303)
        return _page(request, "error.html", {"status": exc.status, "detail": exc.detail}, status=exc.status)

    # -- auth ------------------------------------------------------------------------------------------
    def cookie_name(request: Request) -> str:
        return "__Host-eg_session" if _secure(request) else "eg_session"

    def _secure(request: Request) -> bool:
        return config.cookie_secure == "always" or (config.cookie_secure == "auto" and request.url.scheme == "https")

    def current_session(request: Request) -> Optional[Dict[str, Any]]:
        if "eg_session_row" in request.scope:
            return request.scope["eg_session_row"]
        token = request.cookies.get("__Host-eg_session") or request.cookies.get("eg_session")
        row = server.admin.session(token)
        request.scope["eg_session_row"] = row
        return row

    def require_user(request: Request) -> Dict[str, Any]:
        row = current_session(request)
        if row is None:
            raise ApiError(401, "log in first")
        return row

    def require_api(request: Request, *, write: bool = False) -> str:
        """An API token (Bearer) or, for reads and with the CSRF header for writes, a dashboard session."""
        token = _bearer(request)
        if token is not None:
            if server.admin.api_token_valid(token):
                return "token"
            raise ApiError(401, "invalid or revoked API token", {"WWW-Authenticate": "Bearer"})
        row = current_session(request)
        if row is None:
            raise ApiError(401, "authentication required: Authorization: Bearer <API token>",
                           {"WWW-Authenticate": "Bearer"})
        if write and not hmac.compare_digest(request.headers.get("x-csrf-token", ""), row["csrf_token"]):
            raise ApiError(403, "missing or wrong X-CSRF-Token header")
        return "session"

    async def form_with_csrf(request: Request) -> Tuple[Dict[str, Any], Dict[str, str]]:
        session = require_user(request)
        form = await _form(request)
        if not hmac.compare_digest(form.get("csrf", ""), session["csrf_token"]):
            raise ApiError(403, "the form expired or did not come from this site (CSRF check failed); reload and retry")
        return session, form

    async def _form(request: Request) -> Dict[str, str]:
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "application/x-www-form-urlencoded":
            raise ApiError(415, "forms must be application/x-www-form-urlencoded")
        raw = await _read_capped(request, FORM_MAX_BODY)
        from urllib.parse import parse_qsl

        try:
            pairs = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, max_num_fields=100)
        except (UnicodeDecodeError, ValueError):
            raise ApiError(400, "malformed form") from None
        out: Dict[str, str] = {}
        for key, value in pairs:
            out[key] = value if key not in out else out[key] + "," + value
        return out

    def _page(request: Request, name: str, context: Dict[str, Any], status: int = 200) -> HTMLResponse:
        session = request.scope.get("eg_session_row")
        base = {"request_path": request.url.path, "user": session["username"] if session else None,
                "csrf": session["csrf_token"] if session else "", "now": time.time()}
        base.update(context)
        html = server.templates.get_template(name).render(**base)
        return HTMLResponse(html, status_code=status)

    # -- agent API -------------------------------------------------------------------------------------
    @app.post("/api/v1/enroll")
    async def enroll(request: Request) -> Response:
        raw = await _read_capped(request, ENROLL_MAX_BODY)
        try:
            body = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise ApiError(400, "body must be JSON: {\"enroll_secret\": ..., \"device\": {...}}") from None
        result = await run_in_threadpool(server.ingest.enroll, body)
        return JSONResponse(result, status_code=200 if result["re_enrolled"] else 201)

    # -- health and metrics ----------------------------------------------------------------------------
    @app.get("/healthz")
    def healthz() -> Response:
        from sqlalchemy import text

        try:
            with server.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as exc:
            return JSONResponse({"status": "error", "database": str(exc)[:200]}, status_code=503)
        return JSONResponse({"status": "ok", "version": __version__})

    @app.get("/metrics")
    def metrics(request: Request) -> Response:
        if not config.public_metrics:
            require_api(request)
        return PlainTextResponse(server.reader.metrics(server.counters()),
                                 media_type="text/plain; version=0.0.4; charset=utf-8")

    # -- read API --------------------------------------------------------------------------------------
    @app.get("/api/v1/summary")
    def api_summary(request: Request) -> Response:
        require_api(request)
        return JSONResponse(server.reader.summary())

    @app.get("/api/v1/devices")
    def api_devices(request: Request) -> Response:
        require_api(request)
        return JSONResponse(server.reader.devices(_filter_from(request)))

    @app.get("/api/v1/devices.csv")
    def api_devices_csv(request: Request) -> Response:
        require_api(request)
        return _csv(_filter_from(request))

    def _csv(flt: DeviceFilter) -> Response:
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        return StreamingResponse(server.reader.iter_csv(flt), media_type="text/csv; charset=utf-8",
                                 headers={"content-disposition": 'attachment; filename="devices-%s.csv"' % stamp})

    @app.get("/api/v1/devices/{device_id:path}")
    def api_device(request: Request, device_id: str) -> Response:
        require_api(request)
        history = request.query_params.get("history", "50")
        page = request.query_params.get("history_page", "1")
        if not history.isdigit() or not page.isdigit() or not 1 <= int(history) <= 500 or int(page) < 1:
            raise ApiError(400, "history must be 1..500 and history_page ≥ 1")
        return JSONResponse(server.reader.device(device_id, history=int(history), history_page=int(page)))

    @app.get("/api/v1/reports/{report_id}")
    def api_report(request: Request, report_id: str) -> Response:
        require_api(request)
        return JSONResponse(server.reader.report(report_id))

    @app.get("/api/v1/transitions")
    def api_transitions(request: Request) -> Response:
        require_api(request)
        kind = request.query_params.get("kind", "")
        if kind and kind not in TRANSITION_KINDS:
            raise ApiError(400, "kind must be one of: " + ", ".join(TRANSITION_KINDS))
        limit = request.query_params.get("limit", "100")
        if not limit.isdigit() or not 1 <= int(limit) <= 1000:
            raise ApiError(400, "limit must be 1..1000")
        return JSONResponse({"transitions": server.reader.transitions(int(limit), kind)})

    @app.get("/api/v1/enroll-secrets")
    def api_secrets(request: Request) -> Response:
        require_api(request)
        return JSONResponse({"enroll_secrets": server.admin.list_enroll_secrets()})

    @app.post("/api/v1/enroll-secrets")
    async def api_secret_create(request: Request) -> Response:
        require_api(request, write=True)
        raw = await _read_capped(request, FORM_MAX_BODY)
        try:
            body = json.loads(raw.decode("utf-8") or "{}")
        except (UnicodeDecodeError, ValueError):
            raise ApiError(400, "body must be JSON") from None
        name = body.get("name", "") if isinstance(body, dict) else ""
        secret_id, secret = await run_in_threadpool(server.admin.create_enroll_secret, str(name))
        return JSONResponse({"id": secret_id, "secret": secret}, status_code=201)

    @app.delete("/api/v1/enroll-secrets/{secret_id}")
    def api_secret_revoke(request: Request, secret_id: int) -> Response:
        require_api(request, write=True)
        if not server.admin.revoke_enroll_secret(str(secret_id)):
            raise ApiError(404, "no active enrollment secret %d" % secret_id)
        return JSONResponse({"revoked": secret_id})

    @app.get("/api/v1/webhooks")
    def api_webhooks(request: Request) -> Response:
        require_api(request)
        return JSONResponse({"webhooks": server.admin.list_webhooks(),
                             "deliveries": server.admin.deliveries(100)})

    # -- dashboard -------------------------------------------------------------------------------------
    @app.get("/login")
    def login_form(request: Request) -> Response:
        token = secrets.token_urlsafe(24)
        response = _page(request, "login.html", {"login_csrf": token, "error": "",
                                                 "next": _safe_next(request.query_params.get("next", "/"))})
        response.set_cookie("eg_login", token, max_age=1800, httponly=True, samesite="strict",
                            secure=_secure(request), path="/login")
        return response

    @app.post("/login")
    async def login(request: Request) -> Response:
        form = await _form(request)
        target = _safe_next(form.get("next", "/"))
        expected = request.cookies.get("eg_login", "")
        if not expected or not hmac.compare_digest(form.get("csrf", ""), expected):
            raise ApiError(403, "the login form expired (CSRF check failed); reload the page and log in again")
        client = request.client.host if request.client else "?"
        now = time.time()
        recent = [t for t in server.login_failures.get(client, []) if now - t < LOGIN_WINDOW]
        if len(recent) >= LOGIN_MAX_FAILURES:
            raise ApiError(429, "too many failed logins from this address; wait 10 minutes")
        user_id = await run_in_threadpool(server.admin.check_login, form.get("username", ""),
                                          form.get("password", ""))
        if user_id is None:
            recent.append(now)
            if len(server.login_failures) > 10000:  # bounded memory under a spray of addresses
                server.login_failures = {k: v for k, v in server.login_failures.items() if now - v[-1] < LOGIN_WINDOW}
            server.login_failures[client] = recent
            response = _page(request, "login.html", {"login_csrf": expected, "error": "Wrong user name or password.",
                                                     "next": target}, status=401)
            return response
        server.login_failures.pop(client, None)
        token, _csrf = await run_in_threadpool(server.admin.create_session, user_id)
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(cookie_name(request), token, max_age=int(config.session_ttl), httponly=True,
                            samesite="lax", secure=_secure(request), path="/")
        response.delete_cookie("eg_login", path="/login")
        return response

    @app.post("/logout")
    async def logout(request: Request) -> Response:
        await form_with_csrf(request)
        server.admin.end_session(request.cookies.get("__Host-eg_session") or request.cookies.get("eg_session"))
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(cookie_name(request), path="/")
        return response

    @app.get("/")
    def fleet(request: Request) -> Response:
        require_user(request)
        flt = _filter_from(request)
        summary = server.reader.summary()
        listing = server.reader.devices(flt)
        return _page(request, "fleet.html", {
            "summary": summary, "listing": listing, "flt": flt, "sorts": list(SORTS),
            "firmwares": server.reader.firmware_versions(), "link": lambda **kw: "/?" + urlencode(flt.query_args(**kw)),
            "csv_link": "/devices.csv?" + urlencode(flt.query_args(page=None)),
        })

    @app.get("/devices.csv")
    def devices_csv(request: Request) -> Response:
        require_user(request)
        return _csv(_filter_from(request))

    @app.get("/devices/{device_id:path}")
    def device_page(request: Request, device_id: str) -> Response:
        require_user(request)
        page = request.query_params.get("page", "1")
        if not page.isdigit() or int(page) < 1:
            raise ApiError(400, "page must be a whole number ≥ 1")
        device = server.reader.device(device_id, history=25, history_page=int(page))
        return _page(request, "device.html", {"d": device})

    @app.get("/reports/{report_id}")
    def report_page(request: Request, report_id: str) -> Response:
        require_user(request)
        return _page(request, "report.html", {"r": server.reader.report(report_id)})

    @app.get("/events")
    def events_page(request: Request) -> Response:
        require_user(request)
        return _page(request, "events.html", {"events": server.reader.transitions(200)})

    @app.get("/admin")
    def admin_page(request: Request) -> Response:
        require_user(request)
        return _admin_page(request, {})

    def _admin_page(request: Request, extra: Dict[str, Any], status: int = 200) -> Response:
        context = {"secrets": server.admin.list_enroll_secrets(), "tokens": server.admin.list_api_tokens(),
                   "webhooks": server.admin.list_webhooks(), "deliveries": server.admin.deliveries(50),
                   "kinds": TRANSITION_KINDS, "new_secret": "", "new_token": "", "new_webhook_secret": "",
                   "message": ""}
        context.update(extra)
        return _page(request, "admin.html", context, status=status)

    @app.post("/admin/enroll-secrets")
    async def admin_secret_create(request: Request) -> Response:
        _session, form = await form_with_csrf(request)
        _id, secret = await run_in_threadpool(server.admin.create_enroll_secret, form.get("name", ""))
        return _admin_page(request, {"new_secret": secret, "message": "Enrollment secret created."})

    @app.post("/admin/enroll-secrets/{secret_id}/revoke")
    async def admin_secret_revoke(request: Request, secret_id: int) -> Response:
        await form_with_csrf(request)
        server.admin.revoke_enroll_secret(str(secret_id))
        return RedirectResponse("/admin", status_code=303)

    @app.post("/admin/api-tokens")
    async def admin_token_create(request: Request) -> Response:
        _session, form = await form_with_csrf(request)
        _id, token = await run_in_threadpool(server.admin.create_api_token, form.get("name", ""))
        return _admin_page(request, {"new_token": token, "message": "API token created."})

    @app.post("/admin/api-tokens/{token_id}/revoke")
    async def admin_token_revoke(request: Request, token_id: int) -> Response:
        await form_with_csrf(request)
        server.admin.revoke_api_token(token_id)
        return RedirectResponse("/admin", status_code=303)

    @app.post("/admin/webhooks")
    async def admin_webhook_create(request: Request) -> Response:
        _session, form = await form_with_csrf(request)
        events = [e for e in form.get("events", "").split(",") if e]
        _id, secret = await run_in_threadpool(server.admin.create_webhook, form.get("name", ""),
                                              form.get("url", ""), events, form.get("secret", ""))
        return _admin_page(request, {"new_webhook_secret": secret, "message": "Webhook added."})

    @app.post("/admin/webhooks/{hook_id}/delete")
    async def admin_webhook_delete(request: Request, hook_id: int) -> Response:
        await form_with_csrf(request)
        server.admin.delete_webhook(hook_id)
        return RedirectResponse("/admin", status_code=303)

    entry = ExposureGuardApp(app, server)
    return entry


def _safe_next(target: str) -> str:
    """Only same-site paths after login (no open redirect)."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target or "\n" in target:
        return "/"
    return target


def app_from_env() -> ExposureGuardApp:
    """uvicorn factory for ``serve --workers N`` (each worker process builds its own app)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return create_app(ServerConfig.from_env())
