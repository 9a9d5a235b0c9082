"""HTTP for hostile peers (LAN devices answering SSDP, the router's IGD, the callback prober): requests
with a size cap and a TOTAL deadline per exchange.

requests' ``timeout`` only bounds each socket read, so a device dripping one byte per second (in the
headers or the body) could hold the agent for hours. Here every exchange gets a watchdog that shuts the
connection's socket down when the deadline passes, whatever phase it is in; bodies are read in chunks
against the same deadline and refused past :data:`MAX_BODY`. No redirects, no proxies from the
environment, no content decoding (no decompression bombs), http and https only.
"""

from __future__ import annotations

import heapq
import socket
import threading
import time
import warnings
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple, Union
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import InsecureRequestWarning

from exposure_guard.errors import ConnectFailed, HostileResponse, PeerError, TlsFailed, TooLarge, TooSlow

MAX_BODY = 256 * 1024  # bytes: descriptions and SOAP answers are a few KiB; lists are paged below this
DEFAULT_DEADLINE = 5.0  # seconds for one whole exchange (connect + headers + body)
CONNECT_TIMEOUT = 3.0
USER_AGENT = "ExposureGuard/1.0 UPnP/1.1"
_CHUNK = 16 * 1024

_local = threading.local()
# LAN devices and QTS itself (on loopback) serve self-signed certificates: not verifying them is deliberate
# (fetch's ``verify``), so urllib3's warning for each such request would only fill logs.
warnings.filterwarnings("ignore", category=InsecureRequestWarning)


class _Watchdog:
    """Shuts down the sockets of one exchange when its deadline passes (see :class:`_Reaper`)."""

    def __init__(self, seconds: float) -> None:
        self.fired = False
        self.done = False
        self.due = time.monotonic() + max(seconds, 0.0)
        self._sockets: List[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        _REAPER.add(self)

    def register(self, sock: Optional[socket.socket]) -> None:
        if sock is None:
            return
        with self._lock:
            self._sockets.append(sock)
            fired = self.fired
        if fired:
            self._shutdown(sock)

    def fire(self) -> None:
        with self._lock:
            if self.done:
                return
            self.fired = True
            sockets = list(self._sockets)
        for sock in sockets:
            self._shutdown(sock)

    @staticmethod
    def _shutdown(sock: socket.socket) -> None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def cancel(self) -> None:
        with self._lock:
            self.done = True


class _Reaper:
    """One daemon thread for all watchdogs: starting a thread per request would cost more than the request."""

    def __init__(self) -> None:
        self._heap: List[Tuple[float, int, _Watchdog]] = []
        self._cond = threading.Condition()
        self._thread: Optional[threading.Thread] = None
        self._count = 0

    def add(self, watchdog: _Watchdog) -> None:
        with self._cond:
            self._count += 1
            heapq.heappush(self._heap, (watchdog.due, self._count, watchdog))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="http-deadlines", daemon=True)
                self._thread.start()
            elif self._heap[0][2] is watchdog:
                self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._heap and self._heap[0][2].done:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait(5.0)
                    if not self._heap:
                        self._thread = None
                        return
                    continue
                due, _n, watchdog = self._heap[0]
                left = due - time.monotonic()
                if left > 0:
                    self._cond.wait(left)
                    continue
                heapq.heappop(self._heap)
            watchdog.fire()


_REAPER = _Reaper()


def _register_socket(sock: Optional[socket.socket]) -> None:
    watchdog = getattr(_local, "watchdog", None)
    if watchdog is not None:
        watchdog.register(sock)


class _GuardedHTTPConnection(HTTPConnection):
    def connect(self) -> None:
        super().connect()
        _register_socket(getattr(self, "sock", None))


class _GuardedHTTPSConnection(HTTPSConnection):
    def connect(self) -> None:
        super().connect()
        _register_socket(getattr(self, "sock", None))


class _NoReuse:
    """Every exchange sends ``Connection: close``, yet urllib3 keeps a socket for the next request unless the
    *answer* says close. Devices that close without saying so then reset the next request sent on the dead
    socket (an intermittent failure in the middle of a mapping walk), so a socket is never reused."""

    def _put_conn(self, conn: Any) -> None:
        if conn is not None:
            conn.close()
        super()._put_conn(None)  # type: ignore[misc]


class _GuardedHTTPPool(_NoReuse, HTTPConnectionPool):
    ConnectionCls = _GuardedHTTPConnection


class _GuardedHTTPSPool(_NoReuse, HTTPSConnectionPool):
    ConnectionCls = _GuardedHTTPSConnection


class _GuardedAdapter(HTTPAdapter):
    """Connections whose sockets the exchange's watchdog can shut down; optionally bound to one address
    family (binding the wildcard address of a family makes every address of the other family fail, so
    urllib3 moves on to the next one)."""

    def __init__(self, source_address: Optional[str] = None) -> None:
        self._source = source_address
        super().__init__(max_retries=0)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        if self._source is not None:
            kwargs["source_address"] = (self._source, 0)
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _GuardedHTTPPool, "https": _GuardedHTTPSPool}


def new_session(family: Optional[str] = None) -> requests.Session:
    """A session for hostile peers; ``family`` ("ipv4"/"ipv6") connects over that address family only."""
    session = requests.Session()
    session.trust_env = False  # never send this traffic through a proxy from the environment
    source = None if family is None else ("::" if family == "ipv6" else "0.0.0.0")
    adapter = _GuardedAdapter(source)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


@dataclass(frozen=True)
class HttpAnswer:
    status: int
    headers: Dict[str, str]
    body: bytes
    url: str
    elapsed: float


def check_url(url: str) -> str:
    """Only http(s) URLs with a host; returns the URL. Other schemes (file:, ftp:, gopher:) are refused, and
    so is a URL holding a control character, a space or another non-printable character (a device's URL
    ends up in the fix plan, the journal and the terminal)."""
    if not all(char.isprintable() and not char.isspace() for char in url):
        raise HostileResponse("refused URL %r: it holds control characters, spaces or other non-printable "
                              "characters" % url[:200])
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a garbage port
    except ValueError:
        raise HostileResponse("refused URL %r: it is not a valid URL" % url[:200]) from None
    if parts.scheme.lower() not in ("http", "https"):
        raise HostileResponse("refused URL %r: only http and https are followed" % url[:200])
    if not parts.hostname:
        raise HostileResponse("refused URL %r: no host" % url[:200])
    return url


def fetch(url: str, *, method: str = "GET", data: Optional[bytes] = None,
          headers: Optional[Dict[str, str]] = None, deadline: float = DEFAULT_DEADLINE,
          max_bytes: int = MAX_BODY, session: Optional[requests.Session] = None,
          verify: Union[bool, str] = False, connect_timeout: float = CONNECT_TIMEOUT) -> HttpAnswer:
    """One HTTP exchange finished within ``deadline`` seconds in total, body at most ``max_bytes``.

    ``verify`` is off by default: LAN devices serve self-signed certificates and we trust what they
    say no more over https than over http; the prober client passes True or its CA file."""
    check_url(url)
    own_session = session is None
    session = session or new_session()
    started = time.monotonic()
    watchdog = _Watchdog(deadline)
    previous = getattr(_local, "watchdog", None)
    _local.watchdog = watchdog
    watchdog.start()
    sent = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity", "Connection": "close"}
    sent.update(headers or {})
    response = None
    try:
        try:
            response = session.request(method, url, data=data, headers=sent, stream=True, allow_redirects=False,
                                       timeout=(min(connect_timeout, deadline), deadline), verify=verify)
            encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
            if encoding not in ("", "identity"):
                raise HostileResponse("%s answered with Content-Encoding %r although we asked for identity; "
                                      "refused (decompression bomb risk)" % (url, encoding[:40]))
            declared = response.headers.get("Content-Length", "").strip()
            if declared.isdigit() and int(declared) > max_bytes:
                raise TooLarge("%s announced a %s-byte answer; refused (limit %d bytes)"
                                      % (url, declared, max_bytes))
            body = _read_capped(response, url, max_bytes, started, deadline)
        except (requests.RequestException, Urllib3Error, OSError, ValueError) as exc:
            # The body is read from response.raw, so urllib3's own errors (a reset mid-body is its ProtocolError)
            # arrive unwrapped. requests' own read timeout equals the deadline: whichever fires first, past the deadline it is
            # "too slow", never a plain connection problem.
            if watchdog.fired or time.monotonic() >= watchdog.due:
                raise TooSlow("%s did not finish answering within %.1f s (slow or stalled device); "
                              "gave up" % (url, deadline)) from None
            if isinstance(exc, requests.exceptions.SSLError):
                raise TlsFailed("TLS to %s failed: %s" % (url, _reason(exc))) from None
            if response is None and isinstance(exc, requests.exceptions.ConnectionError):
                raise ConnectFailed("cannot talk to %s: %s" % (url, _reason(exc))) from None
            raise PeerError("cannot talk to %s: %s" % (url, _reason(exc))) from None
        if watchdog.fired:
            raise TooSlow("%s did not finish answering within %.1f s; gave up" % (url, deadline))
        return HttpAnswer(response.status_code, {k: v for k, v in response.headers.items()}, body,
                          url, time.monotonic() - started)
    finally:
        watchdog.cancel()
        _local.watchdog = previous
        if response is not None:
            response.close()
        if own_session:
            session.close()


def _read_capped(response: requests.Response, url: str, max_bytes: int, started: float, deadline: float) -> bytes:
    chunks: List[bytes] = []
    total = 0
    raw = response.raw
    while True:
        if time.monotonic() - started > deadline:
            raise TooSlow("%s did not finish answering within %.1f s; gave up" % (url, deadline))
        chunk = raw.read(_CHUNK, decode_content=False)
        if not chunk:
            break
        total += len(chunk)
        if total > max_bytes:
            raise TooLarge("%s sent more than %d bytes; refused" % (url, max_bytes))
        chunks.append(chunk)
    return b"".join(chunks)


_REASONS = (
    ("Connection refused", "connection refused (nothing listens there)"),
    ("timed out", "timed out"),
    ("No route to host", "no route to host"),
    ("Name or service not known", "unknown host name"),
    ("Network is unreachable", "network unreachable"),
    ("Connection reset", "the device reset the connection"),
    ("RemoteDisconnected", "the device closed the connection without answering"),
    ("BadStatusLine", "the device did not answer HTTP (bad status line)"),
    ("LineTooLong", "the device sent an over-long header line"),
    ("got more than 100 headers", "the device sent more than 100 headers"),
)


def _reason(exc: BaseException) -> str:
    text = "%s %r" % (exc, exc)
    for marker, reason in _REASONS:
        if marker in text:
            return reason
    return str(exc)[:300] or type(exc).__name__
