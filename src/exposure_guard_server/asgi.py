"""The ASGI entry point. ``POST /api/v1/checkin`` is served here as plain ASGI: the busiest route skips the
framework's middleware, routing and request objects (a third of a check-in's CPU otherwise); the body is
decoded and validated in the event loop (or a small thread pool) and stored by the ingest's writer thread
with the check-ins that arrive meanwhile (services/ingest.py). Everything else goes to the FastAPI app
(app.py). Also the security-headers middleware both share."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict

from fastapi import FastAPI
from starlette.requests import ClientDisconnect

from exposure_guard_server.deps import read_capped
from exposure_guard_server.errors import ApiError
from exposure_guard_server.server import Server

CHECKIN_PATH = "/api/v1/checkin"
_CHECKIN_HEADERS = frozenset([b"authorization", b"content-encoding", b"content-length", b"x-exposureguard-interval"])
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"content-security-policy",
     b"default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; "
     b"base-uri 'none'"),
]


class SecurityHeaders:
    """Pure ASGI middleware (cheap): hardening headers and ``Cache-Control: no-store`` on every response."""

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


def _nul_in_url(scope: Dict[str, Any]) -> bool:
    """NUL cannot reach any query (PostgreSQL refuses it in text) and has no use in a URL."""
    query = scope.get("query_string", b"")
    return "\x00" in scope["path"] or b"%00" in query or b"\x00" in query


async def _answer(send: Any, status: int, body: Dict[str, Any]) -> None:
    payload = json.dumps(body).encode("utf-8")
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers + SECURITY_HEADERS})
    await send({"type": "http.response.body", "body": payload})


class ExposureGuardApp:
    def __init__(self, app: FastAPI, server: Server) -> None:
        self.app = app
        self.server = server
        self.state = app.state
        # For the check-ins that need a query before their body is read (a node key this process has not
        # seen yet) or carry a large body; the others are decoded in the event loop. Either way the ingest's
        # writer thread stores them (services/ingest.py).
        self.pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="eg-checkin")

    def close(self) -> None:
        self.server.ingest.close()
        self.pool.shutdown(wait=False)

    async def __call__(self, scope: Dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and _nul_in_url(scope):
            await _answer(send, 400, {"detail": "the URL holds a NUL character"})
            return
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
            body = await read_capped(receive, headers.get(b"content-length"), cap)
            result = await ingest.checkin_async(key, body, headers.get(b"content-encoding", ""),
                                                headers.get(b"x-exposureguard-interval"), cap, self.pool)
            status = 200 if result["duplicate"] else 201
            handoff = self.server.settings.prober_handoff()
            if handoff:  # a prober set (or changed) after enrollment reaches the agent at its next check-in
                result["prober"] = handoff
            payload = json.dumps(result).encode("utf-8")
        except ClientDisconnect:
            return
        except ApiError as exc:
            if exc.status in (401, 405, 413, 400) and not exc.counted:
                self.server.counters.count("checkins_rejected_%d" % exc.status)
            status, payload = exc.status, json.dumps({"detail": exc.detail}).encode("utf-8")
            extra.update(exc.headers)
        out = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
               (b"cache-control", b"no-store")]
        out.extend(SECURITY_HEADERS)
        out.extend((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in extra.items())
        await send({"type": "http.response.start", "status": status, "headers": out})
        await send({"type": "http.response.body", "body": payload})
