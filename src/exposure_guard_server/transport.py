"""The server's own HTTP transport limits, enforced where uvicorn reads the sockets (its httptools protocol,
subclassed): slow or greedy clients cannot hold the connections and descriptors legitimate clients need.

- Connections per source address (an IPv6 client by its /64) and in total, counted when the connection is
  accepted; one over a cap gets ``503`` and is closed at once. Addresses of trusted proxies (``--proxy``)
  are exempt from the per-source cap: behind a proxy every client shares its address, the proxy enforces it.
- A request head (request line and headers) must be complete within ``header_timeout`` seconds of the
  connection (or of its first byte on a kept-alive connection) and stay under ``max_header_bytes``;
  otherwise ``408`` / ``431`` and the connection is closed.
- A request body must be complete within ``body_timeout`` seconds of its head.
- With ``--tls-cert`` the TLS handshake is done here too (``loop.start_tls``), after the connection was
  counted and under the header timeout: a client that never sends its ClientHello meets the same limits.

The limits hold per server process (each ``--workers`` process counts its own connections). uvicorn's own
``limit_concurrency`` is not used: it counts idle and half-sent connections too, so a flood of them would
turn every legitimate request into a 503."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import resource
import ssl
import time
from typing import Any, Dict, List, Optional

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.utils import get_remote_addr

from exposure_guard_server.addresses import parse_networks
from exposure_guard_server.config import ServerConfig

log = logging.getLogger("exposure_guard_server.transport")

RESERVED_FDS = 100  # descriptors kept for the database, log and template files, and the listening sockets
LOG_EVERY = 60.0  # seconds between two summaries of what the limits refused or closed
CLOSE_GRACE = 2.0  # seconds a connection we closed may take to read our answer before it is cut


def _answer(status: bytes, text: bytes) -> bytes:
    return (b"HTTP/1.1 " + status + b"\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: "
            + str(len(text)).encode() + b"\r\nconnection: close\r\n"
            + (b"retry-after: 10\r\n" if status.startswith(b"503") else b"") + b"\r\n" + text)


TOO_MANY = _answer(b"503 Service Unavailable", b"too many connections from this address\n")
SERVER_FULL = _answer(b"503 Service Unavailable", b"too many connections\n")
HEAD_TIMEOUT = _answer(b"408 Request Timeout", b"request head not received in time\n")
BODY_TIMEOUT = _answer(b"408 Request Timeout", b"request body not received in time\n")
HEAD_TOO_LARGE = _answer(b"431 Request Header Fields Too Large", b"request head too large\n")


def raise_fd_limit() -> int:
    """Raise this process's soft descriptor limit to its hard limit (worker processes inherit it); the
    resulting soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1 << 20) if soft != resource.RLIM_INFINITY else soft
    if soft != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    """The server's TLS settings (TLS 1.2 or later); OSError / ssl.SSLError for unusable files."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    context.set_alpn_protocols(["http/1.1"])
    return context


def source_key(host: Optional[str]) -> str:
    """What the per-source cap counts by: an IPv4 address (also IPv4-mapped IPv6), or an IPv6 /64 (one
    client typically has the whole /64)."""
    if not host:
        return ""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class ConnectionLimits:
    """This process's connection counts (touched only from its event loop thread)."""

    def __init__(self, config: ServerConfig, fd_limit: int) -> None:
        self.config = config
        self.max_total = config.max_connections
        if fd_limit != resource.RLIM_INFINITY and fd_limit - RESERVED_FDS < self.max_total:
            self.max_total = max(1, fd_limit - RESERVED_FDS)
            log.warning("max connections lowered from %d to %d: this process may open only %d files",
                        config.max_connections, self.max_total, fd_limit)
        self.exempt = parse_networks(config.proxy)
        self.tls = tls_context(config.tls_cert, config.tls_key) if config.tls_cert else None
        self.total = 0
        self.per_source: Dict[str, int] = {}
        self.events: Dict[str, int] = {}
        self.last_log = 0.0

    def _exempt(self, host: Optional[str]) -> bool:
        try:
            address = ipaddress.ip_address((host or "").split("%", 1)[0])
        except ValueError:
            return False
        return any(address in network for network in self.exempt)

    def admit(self, host: Optional[str]) -> Optional[bytes]:
        """None when a connection from ``host`` may stay, else the answer that refuses it."""
        key = source_key(host)
        if self.total >= self.max_total:
            self.note("refused: server full")
            return SERVER_FULL
        if key and self.per_source.get(key, 0) >= self.config.max_connections_per_source and not self._exempt(host):
            self.note("refused: over the per-source cap")
            return TOO_MANY
        self.total += 1
        self.per_source[key] = self.per_source.get(key, 0) + 1
        return None

    def release(self, host: Optional[str]) -> None:
        key = source_key(host)
        self.total -= 1
        left = self.per_source.get(key, 1) - 1
        if left > 0:
            self.per_source[key] = left
        else:
            self.per_source.pop(key, None)

    def note(self, event: str) -> None:
        """Count what the limits did; log a summary at most once a minute (an attack is one line, not one per
        connection)."""
        self.events[event] = self.events.get(event, 0) + 1
        now = time.monotonic()
        if now - self.last_log >= LOG_EVERY:
            log.warning("connection limits since the last report: %s (open now %d)", ", ".join(
                "%s %d" % item for item in sorted(self.events.items())), self.total)
            self.events = {}
            self.last_log = now


_limits: Optional[ConnectionLimits] = None


def process_limits() -> ConnectionLimits:
    """This process's limits, from the settings ``serve`` passed in the environment."""
    global _limits
    if _limits is None:
        _limits = ConnectionLimits(ServerConfig.from_env(), resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    return _limits


class HeadTooLarge(Exception):
    """Raised from a parser callback: the request head passed ``max_header_bytes``."""


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits above (``serve`` passes it as ``http=``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.guard = process_limits()
        self.admitted = False
        self.ready = False  # uvicorn's connection_made done (for TLS: after the handshake)
        self.early: List[bytes] = []  # decrypted bytes that came before that
        self.head_bytes = 0
        self.head_too_large = False
        self.head_timer: Optional[asyncio.TimerHandle] = None
        self.body_timer: Optional[asyncio.TimerHandle] = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Counted on accept, before any TLS handshake: a client that never sends its ClientHello holds a
        connection and a descriptor like any other, so it meets the same caps and the header timeout."""
        self.transport = transport
        self.client = get_remote_addr(transport)
        refusal = self.guard.admit(self.client[0] if self.client else None)
        if refusal is not None:
            if self.guard.tls is None:
                transport.write(refusal)  # over TLS there is no way to say it before the handshake
            self._close(transport)
            return
        self.admitted = True
        self.connections.add(self)  # so that a shutdown reaches a connection still in its handshake
        self._arm_head_timer()  # bounds the TLS handshake too
        if self.guard.tls is None:
            self._ready(transport)
        else:
            transport.pause_reading()  # nothing may reach the HTTP parser before TLS takes over
            self.loop.create_task(self._start_tls(transport))

    async def _start_tls(self, raw: asyncio.Transport) -> None:
        try:
            secure = await self.loop.start_tls(raw, self, self.guard.tls, server_side=True,  # type: ignore[arg-type]
                                               ssl_handshake_timeout=self.guard.config.header_timeout)
        except (OSError, ssl.SSLError, asyncio.TimeoutError, ConnectionError, RuntimeError):
            secure = None
        if secure is None or not self.admitted:  # failed, timed out, or the connection went meanwhile
            raw.abort()
            self._release()
            return
        self._ready(secure)  # type: ignore[arg-type]

    def _ready(self, transport: asyncio.Transport) -> None:
        self.ready = True
        super().connection_made(transport)
        early, self.early = self.early, []
        for data in early:
            self.data_received(data)

    def _release(self) -> None:
        if self.admitted:
            self.admitted = False
            self.guard.release(self.client[0] if self.client else None)
        self.connections.discard(self)
        self._cancel_timers()

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self._release()
        super().connection_lost(exc)

    def shutdown(self) -> None:
        if not self.ready:
            self.transport.abort()  # still in its TLS handshake
            return
        super().shutdown()

    def data_received(self, data: bytes) -> None:
        if not self.admitted:
            return  # refused: its answer is on the way, nothing it sends is read
        if not self.ready:
            # TLS hands over the first bytes as soon as the handshake is done, before start_tls returns.
            self.early.append(data)
            return
        if self.cycle is None or self.cycle.response_complete:
            # Bytes on an idle connection end uvicorn's keep-alive wait: from now on a head is due (blank
            # lines, which start no request, would otherwise keep the connection forever).
            self._arm_head_timer()
        super().data_received(data)

    # -- the request head ------------------------------------------------------------------------------
    def _arm_head_timer(self) -> None:
        if self.head_timer is None:
            self.head_timer = self.loop.call_later(self.guard.config.header_timeout, self._head_timed_out)

    def _head_timed_out(self) -> None:
        self.head_timer = None
        if not self.ready:
            self.guard.note("closed: TLS handshake not complete in time")
            self.transport.abort()
            return
        if not self.transport.is_closing():
            self.guard.note("closed: request head not complete in time")
            if self.cycle is None or self.cycle.response_complete:  # nothing of ours is being written
                self.transport.write(HEAD_TIMEOUT)
            self._close(self.transport)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.head_bytes = 0
        self._arm_head_timer()

    def _count_head(self, size: int) -> None:
        self.head_bytes += size
        if self.head_bytes > self.guard.config.max_header_bytes:
            self.head_too_large = True
            raise HeadTooLarge()

    def on_url(self, url: bytes) -> None:
        self._count_head(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value) + 4)
        super().on_header(name, value)

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a parser error, which is also how a too-large head ends the parse."""
        if self.head_too_large:
            self.guard.note("refused: request head too large")
            self.transport.write(HEAD_TOO_LARGE)
            self._close(self.transport)
            return
        super().send_400_response(msg)

    # -- the request body ------------------------------------------------------------------------------
    def on_headers_complete(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None
        super().on_headers_complete()
        if self.body_timer is None and not self.transport.is_closing():
            self.body_timer = self.loop.call_later(self.guard.config.body_timeout, self._body_timed_out)

    def on_message_complete(self) -> None:
        if self.body_timer is not None:
            self.body_timer.cancel()
            self.body_timer = None
        super().on_message_complete()

    def _body_timed_out(self) -> None:
        self.body_timer = None
        if not self.transport.is_closing():
            self.guard.note("closed: request body not complete in time")
            if self.cycle is not None and not self.cycle.response_started:
                self.transport.write(BODY_TIMEOUT)
            self._close(self.transport)  # the application's receive() sees a disconnect

    def _close(self, transport: asyncio.BaseTransport) -> None:
        """Close after our last words; abort if the client will not take them (a full window) or, over
        TLS, will not finish the shutdown (asyncio would wait 30 s for its close_notify)."""
        transport.close()
        self.loop.call_later(CLOSE_GRACE, transport.abort)  # type: ignore[attr-defined]

    def _cancel_timers(self) -> None:
        for timer in (self.head_timer, self.body_timer):
            if timer is not None:
                timer.cancel()
        self.head_timer = self.body_timer = None
