"""Settings an admin changes while the server runs, kept in the database so every server process sees
them: ``public_url`` (the dashboard's address, for links in alerts)."""

from __future__ import annotations

import re
import time
from typing import Callable, Dict, Optional
from urllib.parse import urlsplit

from sqlalchemy import Connection, Engine, delete, insert, select

from exposure_guard_server.db import models as m
from exposure_guard_server.db.engine import WRITE
from exposure_guard_server.errors import ApiError
from exposure_guard_server.roles import Caller
from exposure_guard_server.services.audit import actor_name, record

KNOWN = {"public_url": "the dashboard's address, for links in webhooks and emails (https://…)",
         "smtp_host": "the SMTP server emails go through", "smtp_port": "its port (587 STARTTLS, 465 TLS)",
         "smtp_security": "starttls | tls | none", "smtp_user": "login (empty: none)",
         "smtp_password": "password for the login (kept in the database; never shown again)",
         "smtp_from": "the From address", "smtp_ca_file": "CA certificates to check the SMTP server with "
                                                           "(empty: the system's)",
         "digest_hour": "the hour (UTC, 0-23) the daily digest goes out; empty: no digest",
         "prober_url": "the callback prober handed to every agent at enrollment and check-in (https://…)",
         "prober_token": "the token agents send to that prober (never shown again)"}
SECRET = {"smtp_password", "prober_token"}
HANDOFF_TTL = 30.0  # seconds a process reuses the prober settings it read (check-ins are the hot path)


def check_public_url(value: str) -> str:
    value = value.strip().rstrip("/")
    if not value:
        return ""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment \
            or len(value) > 300 or any(ord(c) <= 0x20 or ord(c) >= 0x7F for c in value):
        raise ApiError(400, "public_url must be the dashboard's http(s) address, e.g. https://eg.example.com")
    return value


def _text(limit: int, pattern: str = "") -> Callable[[str], str]:
    def check(value: str) -> str:
        value = value.strip()
        if len(value) > limit or any(ord(c) < 32 or ord(c) == 127 for c in value) or (
                value and pattern and not re.fullmatch(pattern, value)):
            raise ApiError(400, "setting value is not valid (%s)" % (pattern or "one line of at most %d characters"
                                                                     % limit))
        return value
    return check


CHECKS: Dict[str, Callable[[str], str]] = {
    "public_url": check_public_url, "smtp_host": _text(253, r"[A-Za-z0-9.:\[\]-]+"),
    "smtp_port": _text(5, r"[0-9]{1,5}"), "smtp_security": _text(8, r"starttls|tls|none"), "smtp_user": _text(254),
    "smtp_password": _text(500), "smtp_from": _text(254, r"[^@\s<>]+@[^@\s<>]+"), "smtp_ca_file": _text(500),
    "digest_hour": _text(2, r"[0-9]|1[0-9]|2[0-3]"),
    "prober_url": check_public_url, "prober_token": _text(200, r"[A-Za-z0-9._~+/=-]+"),
}


def read(conn: Connection, name: str) -> str:
    return str(conn.execute(select(m.server_settings.c.value).where(m.server_settings.c.name == name)).scalar() or "")


class ServerSettings:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.writer = engine.execution_options(**WRITE)
        self._handoff: Optional[Dict[str, str]] = None
        self._handoff_at = 0.0

    def prober_handoff(self) -> Optional[Dict[str, str]]:
        """``{"url", "token"}`` for agents when a prober is set, else None; read at most every 30 s per process,
        so a change reaches every agent at its next check-in without a query per check-in."""
        now = time.monotonic()
        if self._handoff_at == 0.0 or now - self._handoff_at > HANDOFF_TTL:
            values = self.all(secrets=True)
            self._handoff = {"url": values["prober_url"], "token": values["prober_token"]} \
                if values["prober_url"] else None
            self._handoff_at = now
        return self._handoff

    def all(self, *, secrets: bool = False) -> Dict[str, str]:
        """Every setting; a secret one only as "set" unless ``secrets``."""
        with self.engine.connect() as conn:
            stored = {r.name: r.value for r in conn.execute(select(m.server_settings))}
        return {name: ("set" if name in SECRET and stored.get(name) and not secrets else stored.get(name, ""))
                for name in KNOWN}

    def set(self, name: str, value: str, caller: Optional[Caller] = None) -> str:
        if name not in KNOWN:
            raise ApiError(400, "unknown setting %r; known: %s" % (name[:40], ", ".join(KNOWN)))
        value = CHECKS[name](value)
        with self.writer.begin() as conn:
            conn.execute(delete(m.server_settings).where(m.server_settings.c.name == name))
            if value:
                conn.execute(insert(m.server_settings).values(name=name, value=value))
            record(conn, actor_name(caller), "setting.change", "setting:" + name,
                   value="(secret)" if name in SECRET else value)
        self._handoff_at = 0.0  # this process hands out the new value at once
        return value
