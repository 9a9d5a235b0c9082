"""Loopback services and a stand-in prober for the reachability tests (stdlib only, Python 3.8).

Everything binds 127.0.0.1 / ::1 only. The stand-in prober answers like the real one (it fingerprints the
asked port on loopback with the agent's own fingerprint code), unless a test overrides what it says.
"""

from __future__ import annotations

import json
import socket
import ssl
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from exposure_guard.contracts.fingerprint import fingerprint_local
from tests.support.net import HttpServer, TcpServer, free_port, make_cert
from tests.support.qts import merged, write_tree


def _page_handler(server_name: str, title: str, location: Optional[str] = None) -> type:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = ("<html><head><title>%s</title></head><body>hello</body></html>" % title).encode()
            self.send_response(302 if location else 200)
            if location:
                self.send_header("Location", "http://%s%s" % (self.headers.get("Host", "x"), location))
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def version_string(self) -> str:
            return server_name

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


class Services:
    """A NAS's services on loopback: admin HTTP (redirect like QTS), admin HTTPS, an SSH-like banner."""

    def __init__(self, tmp: Path, cert_subject: str = "/C=TW/O=QNAP Systems Inc./OU=NAS/CN=QNAP NAS",
                 host: str = "127.0.0.1") -> None:
        self.host = host
        self.cert, self.key = make_cert(tmp, "admin", cert_subject)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        self.http = HttpServer(_page_handler("http server 2.0", "QTS login", "/cgi-bin/"), host)
        self.https = HttpServer(_page_handler("http server 2.0", "QTS login (TLS)"), host, tls=context)
        self.banner = TcpServer(self._banner, host, backlog=256)
        self.closed = free_port(host)

    @staticmethod
    def _banner(conn: socket.socket) -> None:
        conn.sendall(b"SSH-2.0-OpenSSH_8.0 test-nas\r\n")
        time.sleep(0.05)

    @property
    def http_port(self) -> int:
        return self.http.port

    @property
    def https_port(self) -> int:
        return self.https.port

    @property
    def ssh_port(self) -> int:
        return self.banner.port

    def close(self) -> None:
        for server in (self.http, self.https, self.banner):
            server.close()


def nas_tree(root: Path, services: Services, **extra: Dict[str, Any]) -> Path:
    """uLinux.conf pointing the admin/SSH ports at ``services``; FTP and Web Server at closed ports."""
    closed = services.closed
    ulinux: Dict[str, Dict[str, Any]] = {
        "System": {"Web Access Port": services.http_port, "Server Name": "NAS1", "Model": "TS-453D"},
        "Stunnel": {"Enable": 1, "Port": services.https_port},
        "LOGIN": {"SSH Enable": "TRUE", "SSH Port": services.ssh_port},
        "FTP": {"Port": closed},
        "QWEB": {"Port": closed, "SSL_PORT": closed},
    }
    return write_tree(root, merged(ulinux, extra))


class FakeProber:
    """Answers POST /v1/probe like the prober: fingerprints the asked ports on loopback itself.

    ``override[port]`` replaces one port's result; ``respond`` replaces the whole answer
    (status, body bytes, delay seconds); ``upnp`` is the WAN-side UPnP result to return."""

    def __init__(self, hosts: Tuple[str, ...] = ("127.0.0.1",)) -> None:
        self.override: Dict[int, Dict[str, Any]] = {}
        self.respond: Optional[Callable[[Dict[str, Any]], Tuple[int, bytes, float]]] = None
        self.upnp: Optional[Dict[str, Any]] = {"ssdp": {"answered": False, "port": 1900},
                                                "igd": {"found": False, "tried": []}, "exposed": False, "error": None}
        self.requests: List[Dict[str, Any]] = []
        self.servers: List[HttpServer] = []
        port = 0
        for host in hosts:  # the same port on every host
            self.servers.append(HttpServer(self._handler(), host, port))
            port = self.servers[-1].port
        self.port = port

    @property
    def url(self) -> str:
        return "http://127.0.0.1:%d" % self.port

    def answer(self, request: Dict[str, Any], peer: str) -> Dict[str, Any]:
        ports = []
        for item in request["ports"]:
            port = item["port"]
            if port in self.override:
                result = dict(self.override[port], port=port)
            else:
                fp = fingerprint_local(peer, port, tls=item.get("tls", False), probe=item.get("probe", "http"))
                result = {k: fp[k] for k in ("port", "state", "http", "banner", "error")}
                result["tls"] = {"sha256": fp["tls"]["sha256"], "error": fp["tls"]["error"]} if fp["tls"] else None
            result.setdefault("connect_ms", 0.5)
            for key in ("tls", "http", "banner", "error"):
                result.setdefault(key, None)
            ports.append(result)
        return {"schema": "exposure-guard/prober/v1", "nonce": request["nonce"], "observed_address": peer,
                "family": "ipv6" if ":" in peer else "ipv4", "via_proxy": False, "lab_mode": True,
                "duration_ms": 3, "ports": ports, "upnp": self.upnp if request.get("upnp") else None,
                "ignored_fields": [], "prober_version": "test"}

    def _handler(self) -> type:
        prober = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length", "0"))
                request = json.loads(self.rfile.read(length))
                request["_authorization"] = self.headers.get("Authorization")
                prober.requests.append(request)
                peer = self.client_address[0]
                if prober.respond is not None:
                    status, body, delay = prober.respond(request)
                else:
                    status, body, delay = 200, json.dumps(prober.answer(request, peer)).encode(), 0.0
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if delay:
                    # dribble the body out slowly
                    for i in range(0, len(body), 16):
                        self.wfile.write(body[i : i + 16])
                        self.wfile.flush()
                        time.sleep(delay)
                else:
                    self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

    def close(self) -> None:
        for server in self.servers:
            server.close()


NAS_ADDRESS = "10.77.0.10"  # a NAS LAN address as data only: no test sends anything to it


def tcp_mapping(external: int, internal: int, client: str = NAS_ADDRESS, description: str = "x",
                protocol: str = "TCP", enabled: bool = True) -> Any:
    from exposure_guard.upnp.models import PortMapping

    return PortMapping("", external, protocol, internal, client, enabled, description, 0)


def router_facts(mappings: Any = (), nas: Tuple[str, ...] = (NAS_ADDRESS,),
                 external_ip: Optional[str] = "127.0.0.1") -> Any:
    """The router facts of a run whose audit read one IGD table holding ``mappings``; the IGD reports
    ``external_ip``, by default the address the stand-in prober sees (no other NAT in front)."""
    from exposure_guard.facts.router import RouterFacts
    from exposure_guard.upnp.audit import RouterAudit
    from exposure_guard.upnp.models import WANIP1, Gateway, ServiceAudit, WanService

    service = WanService(WANIP1, "http://127.0.0.1:9/ctl")
    gateway = Gateway("http://127.0.0.1:9/rootDesc.xml", "urn:schemas-upnp-org:device:InternetGatewayDevice:1",
                      "stand-in", "", "", "uuid:stand-in", (service,))
    audit = RouterAudit(source="igd_url", gateways=[gateway],
                        services=[ServiceAudit(gateway, service, external_ip, list(mappings))])
    return RouterFacts(audit, tuple(nas))
