"""Loopback networking for tests: free ports, self-signed certificates, toy HTTP and TCP servers.

Everything binds 127.0.0.0/8 or ::1 only (the network rule: tests talk to loopback or to namespaces they
created). Standard library only, Python 3.8."""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Callable, Optional, Tuple, TypeVar

LOOPBACK = "127.0.0.1"


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def free_port(host: str = LOOPBACK, kind: int = socket.SOCK_STREAM) -> int:
    """A port nothing listens on (bound and released: a TCP connect gets RST, a UDP datagram is dropped)."""
    with socket.socket(_family(host), kind) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def established_to(port: int) -> int:
    """IPv4 connections held open on the local side of ``port`` (ESTABLISHED in /proc/net/tcp with local port
    ``port``): what a server on that port has not closed, whether or not it has read from them."""
    held = 0
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            if fields[3] == "01" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                held += 1
    return held


def make_cert(directory: Path, name: str, subject: str, san: str = "") -> Tuple[str, str]:
    """Self-signed EC certificate + key files ``name``.crt/.key in ``directory`` with ``subject``
    (e.g. "/C=TW/O=QNAP Systems Inc./CN=QNAP NAS") and optionally a subjectAltName (e.g. "IP:127.0.0.1")."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / (name + ".crt"), directory / (name + ".key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "2", "-subj", subject, "-keyout", str(key), "-out", str(cert)]
                   + (["-addext", "subjectAltName=" + san] if san else []),
                   check=True, capture_output=True)
    return str(cert), str(key)


class _ThreadingHTTPServer(ThreadingMixIn, HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256  # the benches send hundreds of requests at once


class _ThreadingHTTPServer6(_ThreadingHTTPServer):
    address_family = socket.AF_INET6


class HttpServer:
    """``handler`` (a BaseHTTPRequestHandler class) served on ``host``:``port`` (0: any free port) by a
    daemon thread, over TLS when ``tls`` is given; ``close()`` (or leaving ``with``) stops it."""

    def __init__(self, handler: Callable[..., BaseHTTPRequestHandler], host: str = LOOPBACK, port: int = 0,
                 tls: Optional[ssl.SSLContext] = None) -> None:
        server_class = _ThreadingHTTPServer6 if ":" in host else _ThreadingHTTPServer
        self.httpd = server_class((host, port), handler)
        self.host = host
        self.scheme = "http"
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
            self.scheme = "https"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    @property
    def url(self) -> str:
        return "%s://%s:%d" % (self.scheme, "[%s]" % self.host if ":" in self.host else self.host, self.port)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> HttpServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_Server = TypeVar("_Server", bound="TcpServer")


class TcpServer:
    """A raw TCP listener on ``host`` (any free port) that runs ``handle(conn)`` for every connection in a
    thread of its own and closes the connection afterwards; ``hits`` counts connections, ``stop`` is set by
    ``close()`` (for handlers that loop). ``handle=None`` accepts and closes at once."""

    def __init__(self, handle: Optional[Callable[[socket.socket], None]] = None, host: str = LOOPBACK,
                 backlog: int = 64) -> None:
        self.handle = handle
        self.sock = socket.socket(_family(host), socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.sock.listen(backlog)
        self.host, self.port = host, self.sock.getsockname()[1]
        self.hits = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._accept_loop, daemon=True)
        self.thread.start()

    def _accept_loop(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _peer = self.sock.accept()
            except OSError:
                return  # closed
            self.hits += 1
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        try:
            if self.handle is not None:
                self.handle(conn)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self.stop.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        except OSError:
            pass
        self.sock.close()
        self.thread.join(5)

    def __enter__(self: _Server) -> _Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
