"""A lean asyncio HTTP/1.1 server for the three endpoints (POST /v1/probe, GET /healthz, GET /metrics).

Why not FastAPI/uvicorn: the prober faces the internet and its whole job is bounding what strangers can
make it do. Here every byte read is capped (8 KiB head, 4 KiB body, Content-Length only, one request per
connection), every wait has a deadline, connections are counted (in total and per source) at accept time
before any TLS handshake, rate/concurrency limits apply before any body is parsed, and the probing engine
shares the same event loop. It needs nothing beyond the standard library.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import hmac
import json
import socket
import ssl
import sys
import time
from typing import IO, Any, Dict, List, Optional, Set, Tuple

from exposure_guard.contracts import utc_now
from exposure_guard_prober import API_SCHEMA, __version__
from exposure_guard_prober.api import encode, error_document, parse_probe_request
from exposure_guard_prober.config import ProberConfig
from exposure_guard_prober.connector import Connector
from exposure_guard_prober.engine import run_job
from exposure_guard_prober.httphead import HttpError, Request, body_length, parse_head
from exposure_guard_prober.limits import FD_RESERVE, ConnectionGate, fit_to_fd_limit, raise_fd_limit
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
__all__ = ["AccessLog", "HttpError", "ProberServer", "Request"]
# accept() failures that mean "no descriptor or memory right now": the connection waits in the backlog
_OUT_OF_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
UPNP_DISABLED = "the WAN-side UPnP test is disabled on this prober (--no-upnp)"
REFUSAL_LOG_INTERVAL = 10.0  # refused connections are logged as one summary per interval, not one line each


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
        self.gate = ConnectionGate(config.max_connections, config.max_connections_per_source,
                                   config.trusted_proxies)
        self.listeners: List[socket.socket] = []
        self.tasks: Set[asyncio.Future[None]] = set()  # accept loops and open connections
        self.refused: Dict[str, int] = {}  # refused connections not yet logged, by reason
        self.refusals_logged = 0.0
        self.inflight = 0
        self.client_inflight: Dict[str, int] = {}
        self.started = time.time()

    @property
    def connections(self) -> int:
        return self.gate.total

    @property
    def _head_timeout(self) -> float:
        """The TLS handshake and the head must both be in before the request's own deadline too."""
        return min(self.config.head_timeout, self.config.request_timeout)

    # ------------------------------------------------------------------ lifecycle
    def ssl_context(self) -> Optional[ssl.SSLContext]:
        if not self.config.tls_cert:
            return None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.config.tls_cert, self.config.tls_key or None)
        return context

    def _fit_descriptor_limit(self) -> Dict[str, Any]:
        """Raise the soft descriptor limit toward what the caps need, and lower the caps to fit below it;
        what was done, for the log."""
        wanted = self.config.max_connections + self.config.max_outbound + FD_RESERVE
        limits = raise_fd_limit(wanted)
        if limits is None:
            return {}
        before, soft, hard = limits
        self.config = fit_to_fd_limit(self.config, soft)
        self.gate.total_cap = self.config.max_connections
        return {"soft_before": before, "soft": soft, "hard": hard, "max_connections": self.config.max_connections,
                "max_outbound": self.config.max_outbound}

    async def start(self) -> List[Tuple[str, int]]:
        """Bind every --listen address; returns the bound (host, port) pairs (port 0 = any free port)."""
        fd_limit = self._fit_descriptor_limit()
        self.jobs = asyncio.Semaphore(self.config.max_concurrent)
        self.connector = Connector(self.config, self.log,
                                   lambda proto: self.metrics.inc("exposure_guard_prober_outbound_total", proto=proto))
        context = self.ssl_context()
        bound: List[Tuple[str, int]] = []
        for listen in self.config.listen:
            for sock in await _bind(listen.host, listen.port, max(100, min(4096, self.config.max_connections))):
                self.listeners.append(sock)
                self._track(asyncio.ensure_future(self._accept_loop(sock, context)))
                name = sock.getsockname()
                bound.append((name[0], name[1]))
        self.log({"event": "listening", "addresses": ["%s:%d" % b if ":" not in b[0] else "[%s]:%d" % b
                                                       for b in bound],
                  "tls": context is not None, "auth": bool(self.config.tokens),
                  "lab_allow": [str(n) for n in self.config.lab_allow],
                  "trusted_proxies": [str(n) for n in self.config.trusted_proxies], "fd_limit": fd_limit,
                  "version": __version__})
        return bound

    async def close(self) -> None:
        """Stop accepting and end the open connections (their tasks are cancelled, the counts released)."""
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for sock in self.listeners:
            sock.close()
        self._log_refusals(force=True)

    def _track(self, task: asyncio.Future[None]) -> None:
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # ------------------------------------------------------------------ accepting
    async def _accept_loop(self, listener: socket.socket, context: Optional[ssl.SSLContext]) -> None:
        """Accept, count and admit (or refuse) each connection here, before any byte or TLS handshake."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, peer = await loop.sock_accept(listener)
            except OSError as exc:
                if listener.fileno() == -1:
                    return  # closed
                if exc.errno in _OUT_OF_RESOURCES:
                    self._refuse_connection(None, "descriptors")
                    await asyncio.sleep(0.1)  # the connection waits in the backlog meanwhile
                continue
            reason, key = self.gate.admit(str(peer[0]))
            if reason:
                self._refuse_connection(conn, reason, plain=context is None)
                continue
            self.metrics.set("exposure_guard_prober_connections", self.gate.total)
            self._track(asyncio.ensure_future(self._serve(conn, str(peer[0]), key, context)))

    def _refuse_connection(self, conn: Optional[socket.socket], reason: str, plain: bool = False) -> None:
        """Close a connection over a cap at once. Over plain HTTP it gets a short answer first (best effort,
        never waited for); over TLS it is closed without a handshake (that is what the cap saves)."""
        self.metrics.inc("exposure_guard_prober_connections_refused_total", reason=reason)
        self.refused[reason] = self.refused.get(reason, 0) + 1
        self._log_refusals()
        if conn is not None:
            if plain:
                status, whose = (429, "from your address") if reason == "per_source" else (503, "in all")
                payload = encode(error_document("busy", "too many connections %s; retry later" % whose))
                try:
                    conn.setblocking(False)
                    conn.send(_head(status, len(payload), "application/json", {"Retry-After": "5"}) + payload)
                except OSError:
                    pass
            conn.close()

    def _log_refusals(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.refused and (force or now - self.refusals_logged >= REFUSAL_LOG_INTERVAL):
            self.log({"event": "connections_refused", **self.refused})
            self.refused, self.refusals_logged = {}, now

    async def _serve(self, conn: socket.socket, peer: str, key: str, context: Optional[ssl.SSLContext]) -> None:
        """One admitted connection, from accept to close: TLS handshake (within the head timeout), then the
        request."""
        loop = asyncio.get_running_loop()
        accepted = loop.time()
        try:
            conn.setblocking(False)
            reader = asyncio.StreamReader(limit=self.config.header_cap)
            streams: List[asyncio.StreamWriter] = []
            protocol = asyncio.StreamReaderProtocol(reader, lambda _r, writer: streams.append(writer))
            try:
                await loop.connect_accepted_socket(lambda: protocol, conn, ssl=context,
                                                   ssl_handshake_timeout=self._head_timeout if context else None)
            except (OSError, ssl.SSLError) as exc:  # handshake timed out (no ClientHello) or failed
                conn.close()
                timed_out = loop.time() - accepted >= self._head_timeout or "longer" in str(exc)
                self.metrics.inc("exposure_guard_prober_connections_closed_total",
                                 reason="head_timeout" if timed_out else "tls_failed")
                return
            await self._handle(reader, streams[0], peer, accepted)
        finally:
            self.gate.release(key)
            self.metrics.set("exposure_guard_prober_connections", self.gate.total)

    # ------------------------------------------------------------------ one request
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer_text: str,
                      accepted: float) -> None:
        started = time.monotonic()
        record: Dict[str, Any] = {"event": "request", "peer": peer_text}
        try:
            head = await self._read_within(reader.readuntil(b"\r\n\r\n"), accepted + self._head_timeout,
                                           "head_timeout", "the request head was not received in time")
            request = parse_head(head)
            record.update(method=request.method, path=request.path)
            length = body_length(request, self.config.body_cap)
            body = await self._read_within(reader.readexactly(length), accepted + self.config.request_timeout,
                                           "body_timeout", "the request body was not received in time")
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
            self.metrics.inc("exposure_guard_prober_requests_total", path=_metric_path(record.get("path")),
                             status=str(status))
            self.log(record)

    async def _read_within(self, read: Any, deadline: float, reason: str, message: str) -> Any:
        """Await one read of the request before ``deadline`` (loop time); its failures as HTTP errors."""
        left = deadline - asyncio.get_running_loop().time()
        try:
            return await asyncio.wait_for(read, max(left, 0.001))
        except asyncio.TimeoutError:
            self.metrics.inc("exposure_guard_prober_connections_closed_total", reason=reason)
            raise HttpError(408, "timeout", message) from None
        except asyncio.LimitOverrunError:
            raise HttpError(431, "header_too_large", "request head larger than %d bytes"
                            % self.config.header_cap) from None
        except asyncio.IncompleteReadError:
            raise HttpError(400, "bad_request", "connection closed before the request ended") from None

    async def _respond(self, writer: asyncio.StreamWriter, status: int, payload: bytes, headers: Dict[str, str],
                       content_type: str) -> None:
        try:
            writer.write(_head(status, len(payload), content_type, headers) + payload)
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
        upnp_disabled = upnp and not config.upnp  # --no-upnp: the request's "upnp": true is not honoured
        upnp = upnp and config.upnp
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
        if upnp_disabled:
            upnp_result = {"ssdp": None, "igd": None, "exposed": False, "error": UPNP_DISABLED}
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


def _head(status: int, length: int, content_type: str, headers: Dict[str, str]) -> bytes:
    lines = ["HTTP/1.1 %d %s" % (status, REASONS.get(status, "Unknown")),
             "Content-Type: %s" % content_type, "Content-Length: %d" % length, "Connection: close",
             "Cache-Control: no-store", "X-Content-Type-Options: nosniff", "Server: exposure-guard-prober"]
    lines += ["%s: %s" % item for item in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _bind(host: str, port: int, backlog: int) -> List[socket.socket]:
    """Listening sockets for host:port, one per address it resolves to (as asyncio.start_server binds)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: List[socket.socket] = []
    try:
        for family, kind, proto, _name, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # [::] is IPv6 only; IPv4 has its own
            sock.bind(address)
            sock.listen(backlog)
            sock.setblocking(False)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _metric_path(path: Any) -> str:
    return path if path in ("/v1/probe", "/healthz", "/metrics") else "other"
