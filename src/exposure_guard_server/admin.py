"""Administration: admin users and sessions, API tokens, enrollment secrets, webhooks."""

from __future__ import annotations

import secrets
import time
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import urlsplit

from sqlalchemy import Engine, delete, insert, select, update

from exposure_guard_server import models as m
from exposure_guard_server.db import WRITE
from exposure_guard_server.errors import ApiError
from exposure_guard_server.reportlogic import TRANSITION_KINDS
from exposure_guard_server.security import (
    API_TOKEN_PREFIX,
    DUMMY_PASSWORD_HASH,
    ENROLL_SECRET_PREFIX,
    hash_password,
    new_token,
    token_hash,
    verify_password,
)

MIN_PASSWORD = 10


class Admin:
    def __init__(self, engine: Engine, *, session_ttl: float = 12 * 3600) -> None:
        self.engine = engine
        self.writer = engine.execution_options(**WRITE)
        self.session_ttl = session_ttl

    # -- users -----------------------------------------------------------------------------------------
    def has_users(self) -> bool:
        with self.engine.connect() as conn:
            return conn.execute(select(m.users.c.id).limit(1)).first() is not None

    def set_password(self, username: str, password: str) -> bool:
        """Create the user or change its password; True when created."""
        username = username.strip()
        if not username or len(username) > 64:
            raise ApiError(400, "user name must be 1 to 64 characters")
        if len(password) < MIN_PASSWORD:
            raise ApiError(400, "password must be at least %d characters" % MIN_PASSWORD)
        hashed = hash_password(password)
        with self.writer.begin() as conn:
            row = conn.execute(select(m.users.c.id).where(m.users.c.username == username)).first()
            if row is None:
                conn.execute(insert(m.users).values(username=username, password_hash=hashed, created_at=time.time()))
                return True
            conn.execute(update(m.users).where(m.users.c.id == row.id).values(password_hash=hashed))
            conn.execute(delete(m.sessions).where(m.sessions.c.user_id == row.id))
            return False

    def check_login(self, username: str, password: str) -> Optional[int]:
        with self.engine.connect() as conn:
            row = conn.execute(select(m.users.c.id, m.users.c.password_hash).where(
                m.users.c.username == username.strip()[:64])).first()
        if row is None:
            verify_password(password, DUMMY_PASSWORD_HASH)
            return None
        return row.id if verify_password(password, row.password_hash) else None

    # -- sessions --------------------------------------------------------------------------------------
    def create_session(self, user_id: int) -> Tuple[str, str]:
        token = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        now = time.time()
        with self.writer.begin() as conn:
            conn.execute(insert(m.sessions).values(token_hash=token_hash(token), user_id=user_id, csrf_token=csrf,
                                                   created_at=now, expires_at=now + self.session_ttl))
            conn.execute(update(m.users).where(m.users.c.id == user_id).values(last_login_at=now))
        return token, csrf

    def session(self, token: Optional[str]) -> Optional[Dict[str, Any]]:
        if not token:
            return None
        s, u = m.sessions.c, m.users.c
        with self.engine.connect() as conn:
            row = conn.execute(select(s.id, s.csrf_token, s.expires_at, u.id.label("user_id"), u.username)
                               .join_from(m.sessions, m.users, s.user_id == u.id)
                               .where(s.token_hash == token_hash(token))).first()
        if row is None or row.expires_at < time.time():
            return None
        return dict(row._mapping)

    def end_session(self, token: Optional[str]) -> None:
        if token:
            with self.writer.begin() as conn:
                conn.execute(delete(m.sessions).where(m.sessions.c.token_hash == token_hash(token)))

    def purge_sessions(self) -> int:
        with self.writer.begin() as conn:
            return conn.execute(delete(m.sessions).where(m.sessions.c.expires_at < time.time())).rowcount

    # -- API tokens ------------------------------------------------------------------------------------
    def create_api_token(self, name: str) -> Tuple[int, str]:
        name = _name(name, "API token")
        token, hashed, prefix = new_token(API_TOKEN_PREFIX)
        with self.writer.begin() as conn:
            token_id = conn.execute(insert(m.api_tokens).values(
                name=name, token_hash=hashed, prefix=prefix, created_at=time.time())).inserted_primary_key[0]
        return token_id, token

    def api_token_valid(self, token: str) -> bool:
        t = m.api_tokens.c
        with self.engine.connect() as conn:
            row = conn.execute(select(t.id, t.last_used_at).where(
                t.token_hash == token_hash(token), t.revoked_at.is_(None))).first()
        if row is None:
            return False
        now = time.time()
        if row.last_used_at is None or now - row.last_used_at > 300:  # throttle the bookkeeping write
            with self.writer.begin() as conn:
                conn.execute(update(m.api_tokens).where(t.id == row.id).values(last_used_at=now))
        return True

    def list_api_tokens(self) -> List[Dict[str, Any]]:
        t = m.api_tokens.c
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.id, t.name, t.prefix, t.created_at, t.last_used_at, t.revoked_at)
                                .order_by(t.id)).all()
        return [dict(r._mapping) for r in rows]

    def revoke_api_token(self, token_id: int) -> bool:
        t = m.api_tokens.c
        with self.writer.begin() as conn:
            return bool(conn.execute(update(m.api_tokens).where(t.id == token_id, t.revoked_at.is_(None))
                                     .values(revoked_at=time.time())).rowcount)

    # -- enrollment secrets ----------------------------------------------------------------------------
    def create_enroll_secret(self, name: str) -> Tuple[int, str]:
        name = _name(name, "enrollment secret")
        secret, hashed, prefix = new_token(ENROLL_SECRET_PREFIX)
        with self.writer.begin() as conn:
            secret_id = conn.execute(insert(m.enroll_secrets).values(
                name=name, secret_hash=hashed, prefix=prefix, created_at=time.time(),
                enrolled_count=0)).inserted_primary_key[0]
        return secret_id, secret

    def list_enroll_secrets(self) -> List[Dict[str, Any]]:
        e = m.enroll_secrets.c
        with self.engine.connect() as conn:
            rows = conn.execute(select(e.id, e.name, e.prefix, e.created_at, e.revoked_at, e.enrolled_count)
                                .order_by(e.id)).all()
        return [dict(r._mapping) for r in rows]

    def revoke_enroll_secret(self, ident: str) -> bool:
        """Revoke by numeric id, by name or by the secret's shown prefix. Enrolled devices keep working."""
        e = m.enroll_secrets.c
        ident = str(ident).strip()
        with self.writer.begin() as conn:
            if ident.isdigit():
                cond: Any = e.id == int(ident)
            elif ident.startswith(ENROLL_SECRET_PREFIX) and len(ident) > 20:
                cond = e.secret_hash == token_hash(ident)
            elif ident.startswith(ENROLL_SECRET_PREFIX):
                cond = e.prefix == ident
            else:
                cond = e.name == ident
            return bool(conn.execute(update(m.enroll_secrets).where(cond, e.revoked_at.is_(None))
                                     .values(revoked_at=time.time())).rowcount)

    # -- webhooks --------------------------------------------------------------------------------------
    def create_webhook(self, name: str, url: str, events: List[str], secret: str = "") -> Tuple[int, str]:
        name = _name(name, "webhook")
        parts = urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname or len(url) > 2000:
            raise ApiError(400, "webhook URL must be an http:// or https:// URL")
        unknown = [e for e in events if e not in TRANSITION_KINDS and e != "*"]
        if unknown:
            raise ApiError(400, "unknown webhook events %s; known: %s" % (", ".join(unknown), ", ".join(TRANSITION_KINDS)))
        chosen = "*" if (not events or "*" in events) else ",".join(sorted(set(events)))
        secret = secret.strip() or secrets.token_urlsafe(32)
        if len(secret) < 16 or len(secret) > 128:
            raise ApiError(400, "webhook secret must be 16 to 128 characters")
        with self.writer.begin() as conn:
            hook_id = conn.execute(insert(m.webhooks).values(
                name=name, url=url.strip(), secret=secret, events=chosen, enabled=True,
                created_at=time.time())).inserted_primary_key[0]
        return hook_id, secret

    def list_webhooks(self) -> List[Dict[str, Any]]:
        h = m.webhooks.c
        with self.engine.connect() as conn:
            rows = conn.execute(select(h.id, h.name, h.url, h.events, h.enabled, h.created_at).order_by(h.id)).all()
        return [dict(r._mapping) for r in rows]

    def delete_webhook(self, hook_id: int) -> bool:
        with self.writer.begin() as conn:
            return bool(conn.execute(delete(m.webhooks).where(m.webhooks.c.id == hook_id)).rowcount)

    def deliveries(self, limit: int = 50) -> List[Dict[str, Any]]:
        w, h = m.webhook_deliveries.c, m.webhooks.c
        with self.engine.connect() as conn:
            rows = conn.execute(select(w.id, w.event, w.status, w.attempts, w.last_status, w.last_error,
                                       w.created_at, w.delivered_at, w.next_attempt_at, h.name.label("webhook"))
                                .join_from(m.webhook_deliveries, m.webhooks, w.webhook_id == h.id)
                                .order_by(w.id.desc()).limit(limit)).all()
        return [dict(r._mapping) for r in rows]


def _name(name: str, what: str) -> str:
    name = (name or "").strip()
    if not name:
        name = "%s %s" % (what, time.strftime("%Y-%m-%d %H:%M"))
    if len(name) > 100:
        raise ApiError(400, "%s name must be at most 100 characters" % what)
    return name
