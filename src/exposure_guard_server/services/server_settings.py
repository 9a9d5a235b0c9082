"""Settings an admin changes while the server runs, kept in the database so every server process sees
them: ``public_url`` (the dashboard's address, for links in alerts)."""

from __future__ import annotations

from typing import Dict, Optional
from urllib.parse import urlsplit

from sqlalchemy import Connection, Engine, delete, insert, select

from exposure_guard_server.db import models as m
from exposure_guard_server.db.engine import WRITE
from exposure_guard_server.errors import ApiError
from exposure_guard_server.roles import Caller
from exposure_guard_server.services.audit import actor_name, record

KNOWN = {"public_url": "the dashboard's address, for links in webhooks and emails (https://…)"}


def check_public_url(value: str) -> str:
    value = value.strip().rstrip("/")
    if not value:
        return ""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment \
            or len(value) > 300 or any(ord(c) <= 0x20 or ord(c) >= 0x7F for c in value):
        raise ApiError(400, "public_url must be the dashboard's http(s) address, e.g. https://eg.example.com")
    return value


CHECKS = {"public_url": check_public_url}


def read(conn: Connection, name: str) -> str:
    return str(conn.execute(select(m.server_settings.c.value).where(m.server_settings.c.name == name)).scalar() or "")


class ServerSettings:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.writer = engine.execution_options(**WRITE)

    def all(self) -> Dict[str, str]:
        with self.engine.connect() as conn:
            stored = {r.name: r.value for r in conn.execute(select(m.server_settings))}
        return {name: stored.get(name, "") for name in KNOWN}

    def set(self, name: str, value: str, caller: Optional[Caller] = None) -> str:
        if name not in KNOWN:
            raise ApiError(400, "unknown setting %r; known: %s" % (name[:40], ", ".join(KNOWN)))
        value = CHECKS[name](value)
        with self.writer.begin() as conn:
            conn.execute(delete(m.server_settings).where(m.server_settings.c.name == name))
            if value:
                conn.execute(insert(m.server_settings).values(name=name, value=value))
            record(conn, actor_name(caller), "setting.change", "setting:" + name, value=value)
        return value
