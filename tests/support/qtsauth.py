"""A test double of QTS's ``/cgi-bin/authLogin.cgi`` on loopback: answers the ``sid=`` / ``qtoken=&user=``
queries from a table of sessions the way QTS does (a ``<QDocRoot>`` with CDATA values), and records every
query it got."""

from __future__ import annotations

import ssl
from http.server import BaseHTTPRequestHandler
from typing import Dict, List, Optional, Tuple
from urllib.parse import parse_qs, urlsplit

from tests.support.net import HttpServer

ANSWER = ('<?xml version="1.0" encoding="UTF-8" ?><QDocRoot version="1.0"><doQuick><![CDATA[]]></doQuick>'
          "<is_booting><![CDATA[0]]></is_booting><authPassed><![CDATA[%d]]></authPassed>"
          "<username><![CDATA[%s]]></username><isAdmin><![CDATA[%d]]></isAdmin><authSid><![CDATA[%s]]></authSid>"
          "</QDocRoot>")


class FakeQtsAuth:
    """``sessions``: sid or qtoken -> (user, is_admin)."""

    def __init__(self, sessions: Dict[str, Tuple[str, bool]], port: int = 0, tls: Optional[ssl.SSLContext] = None,
                 redirect_to: str = "") -> None:
        self.sessions = dict(sessions)
        self.redirect_to = redirect_to  # answer every query with a 302 there (an admin port that is HTTPS-only)
        self.queries: List[Dict[str, str]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                parts = urlsplit(self.path)
                if parts.path != "/cgi-bin/authLogin.cgi":
                    self.send_error(404)
                    return
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                fake.queries.append(query)
                if fake.redirect_to:
                    self.send_response(302)
                    self.send_header("Location", fake.redirect_to)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                key = query.get("sid") or query.get("qtoken") or ""
                user, admin = fake.sessions.get(key, ("", False))
                if query.get("user") and query["user"] != user:
                    user, admin, key = "", False, ""
                body = (ANSWER % (1 if user else 0, user, 1 if admin else 0, key if user else "")).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = HttpServer(Handler, port=port, tls=tls)

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def url(self) -> str:
        return "%s://127.0.0.1:%d/cgi-bin/authLogin.cgi" % (self.server.scheme, self.port)

    def __enter__(self) -> FakeQtsAuth:
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.close()
