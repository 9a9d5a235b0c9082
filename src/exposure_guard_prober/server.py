"""A lean asyncio HTTP/1.1 server for the three endpoints (POST /v1/probe, GET /healthz, GET /metrics).

Why not FastAPI/uvicorn: the prober faces the internet and its whole job is bounding what strangers can
make it do. Here every byte read is capped (8 KiB head, 4 KiB body, Content-Length only, one request per
connection), every wait has a deadline, connection/rate/concurrency limits apply before any body is
parsed, and the probing engine shares the same event loop. It needs nothing beyond the standard library.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import ssl
import sys
import time
from typing import IO, Any, Dict, List, Optional, Tuple

from exposure_guard.contracts import utc_now
from exposure_guard_prober import API_SCHEMA, __version__
from exposure_guard_prober.api import encode, error_document, parse_probe_request
from exposure_guard_prober.config import ProberConfig
from exposure_guard_prober.connector import Connector
from exposure_guard_prober.engine import run_job
from exposure_guard_prober.metrics import Metrics
from exposure_guard_prober.policy import (
    PolicyError,
    RateLimiter,
    client_address,
    in_networks,
    parse_address,
    rate_key,
    refusal,
)

REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
           405: "Method Not Allowed", 408: "Request Timeout", 411: "Length Required", 413: "Payload Too Large",
           415: "Unsupported Media Type", 429: "Too Many Requests", 431: "Request Header Fields Too Large",
           500: "Internal Server Error", 501: "Not Implemented", 503: "Service Unavailable"}
_TOKEN_CHARS = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


class HttpError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: Optional[Dict[str, str]] = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


class Request:
    def __init__(self, method: str, target: str, headers: Dict[str, str]) -> None:
        self.method, self.target, self.headers = method, target, headers
        self.path = target.split("?", 1)[0]


def token_id(token: str) -> str:
    """What the log may say about a token: a short hash, never the token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()[:8]


class AccessLog:
    """One JSON object per line; never secrets (no Authorization header, no body)."""

    def __init__(self, stream: Optional[IO[str]] = None) -> None:
        self.stream = stream if stream is not None else sys.stderr

    def __call__(self, record: Dict[str, Any]) -> None:
        record = dict(record)
        record.setdefault("ts", utc_now("s"))
        try:
            self.stream.write(json.dumps(record, sort_keys=True, default=str) + "\n")
            self.stream.flush()
        except (OSError, ValueError):
            pass


class ProberServer:
    def __init__(self, config: ProberConfig, log: Optional[AccessLog] = None) -> None:
        self.config = config
        self.log = log or AccessLog()
        self.metrics = Metrics()
        self.limiter = RateLimiter(config.rate_per_minute, config.burst)
        self.jobs: Optional[asyncio.Semaphore] = None
        self.connector: Optional[Connector] = None
        self.servers: List[asyncio.AbstractServer] = []
        self.connections = 0
        self.inflight = 0
        self.client_inflight: Dict[str, int] = {}
        self.started = time.time()

    # ------------------------------------------------------------------ lifecycle
    def ssl_context(self) -> Optional[ssl.SSLContext]:
        if not self.config.tls_cert:
            return None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.config.tls_cert, self.config.tls_key or None)
        return context

    async def start(self) -> List[Tuple[str, int]]:
        """Bind every --listen address; returns the bound (host, port) pairs (port 0 = any free port)."""
        self.jobs = asyncio.Semaphore(self.config.max_concurrent)
        self.connector = Connector(self.config, self.log,
                                   lambda proto: self.metrics.inc("exposure_guard_prober_outbound_total", proto=proto))
        context = self.ssl_context()
        bound: List[Tuple[str, int]] = []
        for listen in self.config.listen:
            server = await asyncio.start_server(
                self._handle, listen.host, listen.port, ssl=context, limit=self.config.header_cap,
                ssl_handshake_timeout=self.config.request_timeout if context else None, reuse_address=True,
                backlog=max(100, min(4096, self.config.max_connections)))
            self.servers.append(server)
            for sock in server.sockets:
                name = sock.getsockname()
                bound.append((name[0], name[1]))
        self.log({"event": "listening", "addresses": ["%s:%d" % b if ":" not in b[0] else "[%s]:%d" % b
                                                       for b in bound],
                  "tls": context is not None, "auth": bool(self.config.tokens),
                  "lab_allow": [str(n) for n in self.config.lab_allow],
                  "trusted_proxies": [str(n) for n in self.config.trusted_proxies], "version": __version__})
        return bound

    async def close(self) -> None:
        for server in self.servers:
            server.close()
        for server in self.servers:
            await server.wait_closed()

    # ------------------------------------------------------------------ connection handling
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        peer_text = str(peer[0]) if peer else "?"
        started = time.monotonic()
        record: Dict[str, Any] = {"event": "request", "peer": peer_text}
        self.connections += 1
        self.metrics.set("exposure_guard_prober_connections", self.connections)
        try:
            if self.connections > self.config.max_connections:
                raise HttpError(503, "busy", "too many connections", {"Retry-After": "5"})
            try:
                request, body = await asyncio.wait_for(self._read_request(reader), self.config.request_timeout)
            except asyncio.TimeoutError:
                raise HttpError(408, "timeout", "the request was not received in time") from None
            record.update(method=request.method, path=request.path)
            status, document, headers, content_type = await self._route(request, body, peer_text, record)
        except HttpError as exc:
            status, headers, content_type = exc.status, exc.headers, "application/json"
            document = error_document(exc.code, exc.message)
            record["code"] = exc.code
        except PolicyError as exc:
            status, headers, content_type = exc.status, {}, "application/json"
            document = error_document(exc.code, exc.message)
            record["code"] = exc.code
        except Exception as exc:  # a bug must answer 500 and leave the server running
            status, headers, content_type = 500, {}, "application/json"
            document = error_document("internal", "internal error")
            record["error"] = "%s: %s" % (type(exc).__name__, exc)
        record["status"] = status
        record["duration_ms"] = round((time.monotonic() - started) * 1000, 1)
        payload = document if isinstance(document, bytes) else encode(document)
        try:
            await self._respond(writer, status, payload, headers, content_type)
        finally:
            self.connections -= 1
            self.metrics.set("exposure_guard_prober_connections", self.connections)
            self.metrics.inc("exposure_guard_prober_requests_total", path=_metric_path(record.get("path")),
                             status=str(status))
            self.log(record)

    async def _read_request(self, reader: asyncio.StreamReader) -> Tuple[Request, bytes]:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            raise HttpError(431, "header_too_large", "request head larger than %d bytes"
                            % self.config.header_cap) from None
        except asyncio.IncompleteReadError:
            raise HttpError(400, "bad_request", "connection closed before the request head ended") from None
        lines = head[:-4].split(b"\r\n")
        try:
            method, target, version = lines[0].decode("ascii").split(" ")
        except (UnicodeDecodeError, ValueError):
            raise HttpError(400, "bad_request", "malformed request line") from None
        if version not in ("HTTP/1.0", "HTTP/1.1") or not target.startswith("/") or not _TOKEN_CHARS.match(method):
            raise HttpError(400, "bad_request", "malformed request line")
        headers: Dict[str, str] = {}
        if len(lines) > 65:
            raise HttpError(431, "header_too_large", "too many header fields")
        for raw in lines[1:]:
            name, colon, value = raw.partition(b":")
            try:
                key = name.decode("ascii").lower()
                text = value.decode("latin-1").strip()
            except UnicodeDecodeError:
                raise HttpError(400, "bad_request", "malformed header field") from None
            if not colon or not _TOKEN_CHARS.match(key or " "):
                raise HttpError(400, "bad_request", "malformed header field")
            if key in headers and key in ("content-length", "authorization", "x-forwarded-for", "host",
                                          "transfer-encoding"):
                raise HttpError(400, "bad_request", "duplicate %s header" % key)
            headers[key] = text
        if "transfer-encoding" in headers:
            raise HttpError(501, "unsupported", "Transfer-Encoding is not supported; send Content-Length")
        body = b""
        if "content-length" in headers:
            try:
                length = int(headers["content-length"])
            except ValueError:
                raise HttpError(400, "bad_request", "Content-Length is not a number") from None
            if length < 0:
                raise HttpError(400, "bad_request", "Content-Length is negative")
            if length > self.config.body_cap:
                raise HttpError(413, "body_too_large", "body larger than %d bytes" % self.config.body_cap)
            try:
                body = await reader.readexactly(length)
            except asyncio.IncompleteReadError:
                raise HttpError(400, "bad_request", "connection closed before the body ended") from None
        return Request(method, target, headers), body

    async def _respond(self, writer: asyncio.StreamWriter, status: int, payload: bytes, headers: Dict[str, str],
                       content_type: str) -> None:
        head = ["HTTP/1.1 %d %s" % (status, REASONS.get(status, "Unknown")),
                "Content-Type: %s" % content_type, "Content-Length: %d" % len(payload), "Connection: close",
                "Cache-Control: no-store", "X-Content-Type-Options: nosniff",
                "Server: exposure-guard-prober"]
        head += ["%s: %s" % item for item in headers.items()]
        try:
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + payload)
            await asyncio.wait_for(writer.drain(), self.config.request_timeout)
        except (OSError, asyncio.TimeoutError, ConnectionError, ssl.SSLError):
            pass
        finally:
            try:
                writer.close()
                await asyncio.wait_for(writer.wait_closed(), 2.0)
            except (OSError, asyncio.TimeoutError, ConnectionError, ssl.SSLError):
                pass

    # ------------------------------------------------------------------ routing
    async def _route(self, request: Request, body: bytes, peer: str,
                     record: Dict[str, Any]) -> Tuple[int, Any, Dict[str, str], str]:
        if request.path == "/healthz":
            if request.method not in ("GET", "HEAD"):
                raise HttpError(405, "method_not_allowed", "use GET", {"Allow": "GET"})
            return 200, {"schema": API_SCHEMA, "status": "ok", "version": __version__,
                         "lab_mode": self.config.lab_mode}, {}, "application/json"
        if request.path == "/metrics":
            if request.method != "GET":
                raise HttpError(405, "method_not_allowed", "use GET", {"Allow": "GET"})
            if not in_networks(parse_address(peer), self.config.metrics_allow):
                raise HttpError(403, "forbidden", "metrics are served to the configured networks only")
            return 200, self.metrics.render().encode("utf-8"), {}, "text/plain; version=0.0.4; charset=utf-8"
        if request.path == "/v1/probe":
            if request.method != "POST":
                raise HttpError(405, "method_not_allowed", "use POST", {"Allow": "POST"})
            return await self._probe(request, body, peer, record)
        raise HttpError(404, "not_found", "no such endpoint; see POST /v1/probe")

    def _refuse(self, code: str) -> None:
        self.metrics.inc("exposure_guard_prober_refused_total", reason=code)

    async def _probe(self, request: Request, body: bytes, peer: str,
                     record: Dict[str, Any]) -> Tuple[int, Any, Dict[str, str], str]:
        config = self.config
        try:
            client, via_proxy, xff_ignored = client_address(peer, request.headers.get("x-forwarded-for"),
                                                            config.trusted_proxies)
        except PolicyError as exc:
            self._refuse(exc.code)
            raise
        record.update(client=str(client), via_proxy=via_proxy, xff_ignored=xff_ignored)
        key = rate_key(client)
        allowed, wait = self.limiter.allow(key)
        if not allowed:
            self._refuse("rate_limited")
            raise HttpError(429, "rate_limited", "too many probe requests from %s; retry in %d s" % (key, wait + 1),
                            {"Retry-After": str(int(wait) + 1)})
        if config.tokens:
            presented = request.headers.get("authorization", "")
            scheme, _space, token = presented.partition(" ")
            match = None
            if scheme.lower() == "bearer" and token:
                for candidate in config.tokens:
                    if hmac.compare_digest(candidate.encode("utf-8"), token.strip().encode("utf-8")):
                        match = candidate
            if match is None:
                self._refuse("unauthorized")
                raise HttpError(401, "unauthorized", "a valid bearer token is required",
                                {"WWW-Authenticate": 'Bearer realm="exposure-guard-prober"'})
            record["token"] = token_id(match)
        content_type = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
        if content_type != "application/json":
            self._refuse("unsupported_media_type")
            raise HttpError(415, "unsupported_media_type", "send application/json")
        try:
            nonce, ports, upnp, ignored = parse_probe_request(body, config.max_ports)
        except PolicyError as exc:
            self._refuse(exc.code)
            raise
        record.update(nonce=nonce, ports=[p.port for p in ports], upnp=upnp)
        if ignored:
            record["ignored_fields"] = ignored
        reason = refusal(client, config.lab_allow)
        if reason:
            self._refuse("target_refused")
            raise HttpError(403, "target_refused", "refusing to probe %s: %s address%s"
                            % (client, reason, "" if config.lab_mode else " (not in lab mode)"))
        if self.client_inflight.get(key, 0) >= config.per_client_inflight:
            self._refuse("busy_client")
            raise HttpError(429, "busy", "a probe for %s is already running" % key, {"Retry-After": "5"})
        self.client_inflight[key] = self.client_inflight.get(key, 0) + 1
        try:
            assert self.jobs is not None and self.connector is not None
            try:
                await asyncio.wait_for(self.jobs.acquire(), config.queue_wait)
            except asyncio.TimeoutError:
                self._refuse("busy")
                raise HttpError(503, "busy", "the prober is busy; retry later", {"Retry-After": "10"}) from None
            self.inflight += 1
            self.metrics.set("exposure_guard_prober_inflight", self.inflight)
            try:
                record["target"] = str(client)
                results, upnp_result, seconds = await run_job(self.connector, str(client), ports, config, upnp)
            finally:
                self.inflight -= 1
                self.metrics.set("exposure_guard_prober_inflight", self.inflight)
                self.jobs.release()
        finally:
            self.client_inflight[key] -= 1
            if not self.client_inflight[key]:
                del self.client_inflight[key]
        self.metrics.observe("exposure_guard_prober_probe_seconds", seconds)
        for result in results:
            self.metrics.inc("exposure_guard_prober_port_results_total", state=result["state"])
        if upnp_result and upnp_result.get("exposed"):
            self.metrics.inc("exposure_guard_prober_upnp_wan_exposed_total")
        record["results"] = {str(r["port"]): r["state"] for r in results}
        if upnp_result is not None:
            record["upnp_exposed"] = upnp_result["exposed"]
        document = {
            "schema": API_SCHEMA,
            "nonce": nonce,
            "observed_address": str(client),
            "family": "ipv6" if client.version == 6 else "ipv4",
            "via_proxy": via_proxy,
            "lab_mode": config.lab_mode,
            "duration_ms": int(seconds * 1000),
            "ports": results,
            "upnp": upnp_result,
            "ignored_fields": ignored,
            "prober_version": __version__,
        }
        return 200, document, {}, "application/json"


def _metric_path(path: Any) -> str:
    return path if path in ("/v1/probe", "/healthz", "/metrics") else "other"
