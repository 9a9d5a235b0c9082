"""Administration: admin users and their sessions, and the three things an administrator creates, lists and
removes — groups, enrollment secrets, API tokens and webhooks. The JSON API, the dashboard and the CLI all
manage them through the same objects here (``Admin.groups``, ``.enroll_secrets``, ``.api_tokens``,
``.webhooks``), which share one interface: ``what``, ``fields``, ``create(**fields)``, ``list()`` and
``remove(ident)``."""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Dict, FrozenSet, List, Optional, Sequence, Tuple, Union
from urllib.parse import urlsplit

from sqlalchemy import Connection, Engine, Table, case, delete, func, insert, select, update

from exposure_guard import __version__
from exposure_guard_server.db import models as m
from exposure_guard_server.db.engine import WRITE
from exposure_guard_server.errors import ApiError
from exposure_guard_server.inputs import CONTROL_CHARACTERS, MAX_ID
from exposure_guard_server.naturalsort import hostname_key
from exposure_guard_server.reportlogic import ONBOARDING_KINDS, TRANSITION_KINDS, format_time
from exposure_guard_server.roles import Caller, check_role
from exposure_guard_server.security import (
    API_TOKEN_PREFIX,
    DUMMY_PASSWORD_HASH,
    ENROLL_SECRET_PREFIX,
    hash_password,
    new_token,
    token_hash,
    verify_password,
)
from exposure_guard_server.services.audit import actor_name, record
from exposure_guard_server.services.fleet import NO_GROUP
from exposure_guard_server.webhook_formats import FORMATS, render
from exposure_guard_server.webhook_target import BlockedTarget, check_url
from exposure_guard_server.webhooks import status_text

MIN_PASSWORD = 10


class _Managed:
    """What the three managed kinds share: the engine, a writer and their name in messages."""

    what = ""
    fields: Tuple[str, ...] = ("name",)  # what create() takes (the dashboard's form fields)

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.writer = engine.execution_options(**WRITE)

    def _name(self, name: str) -> str:
        name = (name or "").strip()
        if not name:
            name = "%s %s" % (self.what, time.strftime("%Y-%m-%d %H:%M"))
        if len(name) > 100:
            raise ApiError(400, "%s name must be at most 100 characters" % self.what)
        if CONTROL_CHARACTERS.search(name):
            raise ApiError(400, "%s name must not hold control characters" % self.what)
        return name

    def _rows(self, table: Table, columns: Sequence[str]) -> List[Dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(*[table.c[name] for name in columns]).order_by(table.c.id)).all()
        return [dict(r._mapping) for r in rows]


@dataclass(frozen=True)
class CredentialKind:
    what: str
    table: Table
    hash_column: str
    prefix: str
    listed: Tuple[str, ...]  # columns list() shows: never the hash
    initial: Dict[str, Any] = field(default_factory=dict)


ENROLL_SECRETS = CredentialKind("enrollment secret", m.enroll_secrets, "secret_hash", ENROLL_SECRET_PREFIX,
                                ("id", "name", "prefix", "created_at", "revoked_at", "enrolled_count"),
                                {"enrolled_count": 0})
API_TOKENS = CredentialKind("API token", m.api_tokens, "token_hash", API_TOKEN_PREFIX,
                            ("id", "name", "prefix", "created_at", "last_used_at", "revoked_at"), {"role": "viewer"})


class Credentials(_Managed):
    """Random secrets shown once at creation and stored only as their hash: enrollment secrets and API
    tokens. Removing one revokes it (the row stays; devices enrolled with a secret keep their node keys)."""

    def __init__(self, engine: Engine, kind: CredentialKind) -> None:
        super().__init__(engine)
        self.kind = kind
        self.what = kind.what

    def create(self, name: str = "") -> Tuple[int, str]:
        """A new secret: (id, the secret itself)."""
        name = self._name(name)
        secret, hashed, prefix = new_token(self.kind.prefix)
        values = dict(self.kind.initial, name=name, prefix=prefix, created_at=time.time())
        values[self.kind.hash_column] = hashed
        with self.writer.begin() as conn:
            new_id = conn.execute(insert(self.kind.table).values(**values).returning(self.kind.table.c.id)).scalar_one()
        return new_id, secret

    def list(self) -> List[Dict[str, Any]]:
        return self._rows(self.kind.table, self.kind.listed)

    def remove(self, ident: Union[int, str]) -> bool:
        """Revoke by numeric id, by name, by the shown prefix or by the secret itself; False when no active one
        matches."""
        c = self.kind.table.c
        ident = str(ident).strip()
        row_id = _row_id(ident)
        if row_id is not None:
            cond: Any = c.id == row_id
        elif ident.isdigit():  # digits, but no row id (too long, or not ASCII): matches nothing
            return False
        elif ident.startswith(self.kind.prefix) and len(ident) > 20:
            cond = c[self.kind.hash_column] == token_hash(ident)
        elif ident.startswith(self.kind.prefix):
            cond = c.prefix == ident
        else:
            cond = c.name == ident
        with self.writer.begin() as conn:
            return bool(conn.execute(update(self.kind.table).where(cond, c.revoked_at.is_(None))
                                     .values(revoked_at=time.time())).rowcount)


class Groups(_Managed):
    """Customers or sites. A group is named once (unique); enrollment secrets name the group their boxes land
    in, and an operator can move a box. Removing a group leaves its boxes and secrets in none."""

    what = "group"

    def _name(self, name: str) -> str:
        name = super()._name(name) if (name or "").strip() else ""
        if not name:
            raise ApiError(400, "a group needs a name")
        if name.startswith("("):
            raise ApiError(400, "a group name must not start with '(' (the filter's %s means no group)" % NO_GROUP)
        if "," in name:
            raise ApiError(400, "a group name must not hold a comma (lists of groups are comma separated)")
        return name

    def create(self, name: str = "") -> Tuple[int, str]:
        """A new group: (id, its name)."""
        name = self._name(name)
        with self.writer.begin() as conn:
            if conn.execute(select(m.groups.c.id).where(m.groups.c.name == name)).first() is not None:
                raise ApiError(409, "a group named %r exists already" % name)
            new_id = conn.execute(insert(m.groups).values(name=name, created_at=time.time())
                                  .returning(m.groups.c.id)).scalar_one()
        return new_id, name

    def list(self, allowed: Optional[FrozenSet[int]] = None) -> List[Dict[str, Any]]:
        """Groups by name (natural order) with their device and active secret counts; ``allowed``: only these."""
        g, d, e = m.groups.c, m.devices.c, m.enroll_secrets.c
        devices = select(func.count()).where(d.group_id == g.id).scalar_subquery()
        secrets_n = select(func.count()).where(e.group_id == g.id, e.revoked_at.is_(None)).scalar_subquery()
        query = select(g.id, g.name, g.created_at, devices.label("devices"), secrets_n.label("active_secrets"))
        if allowed is not None:
            query = query.where(g.id.in_(sorted(allowed)))
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return sorted((dict(r._mapping) for r in rows), key=lambda r: hostname_key(r["name"]))

    def find(self, conn: Connection, ident: Union[int, str]) -> int:
        """The id of the group named (or numbered) ``ident``; 404 when there is none."""
        text = str(ident).strip()
        row_id = _row_id(text)
        cond = m.groups.c.id == row_id if row_id is not None else m.groups.c.name == text
        found = conn.execute(select(m.groups.c.id).where(cond)).scalar()
        if found is None:
            raise ApiError(404, "no group %r" % text[:100])
        return int(found)

    def remove(self, ident: Union[int, str]) -> bool:
        with self.writer.begin() as conn:
            try:
                group_id = self.find(conn, ident)
            except ApiError:
                return False
            # Explicitly, not only by the foreign key: SQLite enforces it only with PRAGMA foreign_keys.
            conn.execute(update(m.devices).where(m.devices.c.group_id == group_id).values(group_id=None))
            conn.execute(update(m.enroll_secrets).where(m.enroll_secrets.c.group_id == group_id).values(group_id=None))
            return bool(conn.execute(delete(m.groups).where(m.groups.c.id == group_id)).rowcount)

    def move(self, device_id: str, group: str, caller: Optional[Caller] = None) -> str:
        """Put a device in ``group`` (a name or id; "" or NO_GROUP: in none); returns the group's name. A
        caller limited to groups moves only its own boxes, and only into its groups."""
        wanted = (group or "").strip()
        d = m.devices.c
        with self.writer.begin() as conn:
            row = conn.execute(select(d.id, d.group_id).where(d.device_id == device_id)).first()
            if row is None or (caller is not None and not caller.sees_group(row.group_id)):
                raise ApiError(404, "no device %r" % device_id[:128])
            group_id = None if wanted in ("", NO_GROUP) else self.find(conn, wanted)
            if caller is not None and caller.groups is not None and group_id not in caller.groups:
                raise ApiError(403, "%s may move boxes only into its own groups" % caller.name)
            conn.execute(update(m.devices).where(d.id == row.id).values(group_id=group_id))
            name = "" if group_id is None else str(
                conn.execute(select(m.groups.c.name).where(m.groups.c.id == group_id)).scalar_one())
            record(conn, actor_name(caller), "device.move", "device:" + device_id, group_id=group_id,
                   from_group=row.group_id, to_group=name)
            return name


class EnrollSecrets(Credentials):
    """Enrollment secrets: each may name the group its boxes land in."""

    fields = ("name", "group")

    def __init__(self, engine: Engine, groups: Groups) -> None:
        super().__init__(engine, ENROLL_SECRETS)
        self.groups = groups

    def create(self, name: str = "", group: str = "", caller: Optional[Caller] = None) -> Tuple[int, str]:
        """A new secret for ``group`` (a name; "" for none). A caller limited to groups must name one of its own."""
        group_id = None
        if (group or "").strip() not in ("", NO_GROUP):
            with self.engine.connect() as conn:
                group_id = self.groups.find(conn, group)
        if caller is not None and caller.groups is not None and group_id not in caller.groups:
            raise ApiError(403, "%s may create enrollment secrets only for its own groups" % caller.name)
        new_id, secret = super().create(name)
        with self.writer.begin() as conn:
            if group_id is not None:
                conn.execute(update(m.enroll_secrets).where(m.enroll_secrets.c.id == new_id).values(group_id=group_id))
            record(conn, actor_name(caller), "secret.create", "secret:%d" % new_id, group_id=group_id,
                   name=self._name(name) if name else "")
        return new_id, secret

    def list(self, allowed: Optional[FrozenSet[int]] = None) -> List[Dict[str, Any]]:
        e, g = m.enroll_secrets.c, m.groups.c
        query = (select(*[e[name] for name in self.kind.listed], e.group_id, g.name.label("group"))
                 .select_from(m.enroll_secrets.outerjoin(m.groups, e.group_id == g.id)).order_by(e.id))
        if allowed is not None:
            query = query.where(e.group_id.in_(sorted(allowed)))
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [dict(r._mapping, group=r.group or "") for r in rows]

    def remove(self, ident: Union[int, str], caller: Optional[Caller] = None) -> bool:
        if caller is not None and caller.groups is not None:
            mine = {row["id"] for row in self.list(caller.groups)}
            row_id = _row_id(str(ident).strip())
            if row_id is None or row_id not in mine:
                return False
        done = super().remove(ident)
        if done:
            with self.writer.begin() as conn:
                record(conn, actor_name(caller), "secret.revoke", "secret:%s" % str(ident)[:40])
        return done


class ApiTokens(Credentials):
    """API tokens, each with a role (viewer unless chosen) and optionally limited to some groups."""

    fields = ("name", "role", "groups")

    def __init__(self, engine: Engine, groups: Groups) -> None:
        super().__init__(engine, API_TOKENS)
        self.groups = groups

    def create(self, name: str = "", role: str = "viewer", groups: Union[str, Sequence[str]] = "") -> Tuple[int, str]:
        role = _role(role or "viewer")
        names = _names(groups)
        with self.writer.begin() as conn:  # refuse an unknown group before the token exists
            ids = [self.groups.find(conn, g) for g in names]
        new_id, secret = super().create(name)
        with self.writer.begin() as conn:
            conn.execute(update(m.api_tokens).where(m.api_tokens.c.id == new_id)
                         .values(role=role, groups_limited=bool(ids)))
            if ids:
                conn.execute(insert(m.token_groups), [{"token_id": new_id, "group_id": g} for g in sorted(set(ids))])
        return new_id, secret

    def list(self) -> List[Dict[str, Any]]:
        t = m.api_tokens.c
        with self.engine.connect() as conn:
            rows = conn.execute(select(*[t[name] for name in self.kind.listed], t.role, t.groups_limited)
                                .order_by(t.id)).all()
            limits = _limit_names(conn, m.token_groups, "token_id")
        return [dict(r._mapping, groups=limits.get(r.id, []) if r.groups_limited else []) for r in rows]

    def caller(self, token: str) -> Optional[Caller]:
        """The caller this token stands for, or None when it is unknown or revoked."""
        t = m.api_tokens.c
        with self.engine.connect() as conn:
            row = conn.execute(select(t.id, t.name, t.last_used_at, t.role, t.groups_limited).where(
                t.token_hash == token_hash(token), t.revoked_at.is_(None))).first()
            limit = _limit_ids(conn, m.token_groups, "token_id", row.id) if row is not None and row.groups_limited \
                else None
        if row is None:
            return None
        now = time.time()
        if row.last_used_at is None or now - row.last_used_at > 300:  # throttle the bookkeeping write
            with self.writer.begin() as conn:
                conn.execute(update(m.api_tokens).where(t.id == row.id).values(last_used_at=now))
        return Caller("token", "token %s (#%d)" % (row.name, row.id), row.role, limit)


class Webhooks(_Managed):
    """Where transitions are POSTed. The signing secret is chosen (or generated) at creation and stored as
    is: the server needs it to sign. Removing one deletes it with its deliveries."""

    what = "webhook"
    fields = ("name", "url", "events", "secret", "format")

    def __init__(self, engine: Engine, allow_internal: str = "") -> None:
        """``allow_internal``: internal networks a webhook URL may name anyway (see webhook_target)."""
        super().__init__(engine)
        self.allow_internal = allow_internal

    def create(self, name: str = "", url: str = "", events: Union[str, Sequence[str]] = (),
               secret: str = "", format: str = "json") -> Tuple[int, str]:
        """A new webhook for ``events`` (transition kinds, a list or comma separated; none or "*": all but the
        onboarding kinds, which are sent only when named):
        (id, its signing secret)."""
        name = self._name(name)
        try:
            check_url(url, self.allow_internal)
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        except BlockedTarget as exc:
            raise ApiError(400, "webhook URL refused: %s" % exc) from None
        wanted = [e for e in events.split(",") if e] if isinstance(events, str) else list(events)
        unknown = [e for e in wanted if e not in TRANSITION_KINDS and e != "*"]
        if unknown:
            raise ApiError(400, "unknown webhook events %s; known: %s" % (", ".join(unknown), ", ".join(TRANSITION_KINDS)))
        if not wanted or "*" in wanted:  # every kind but onboarding, plus the onboarding kinds named
            chosen = ",".join(["*"] + sorted(set(wanted) & set(ONBOARDING_KINDS)))
        else:
            chosen = ",".join(sorted(set(wanted)))
        format = (format or "json").strip().lower()
        if format not in FORMATS:
            raise ApiError(400, "webhook format must be one of: " + ", ".join(FORMATS))
        if format == "ntfy" and urlsplit(url.strip()).path.strip("/") == "":
            raise ApiError(400, "an ntfy webhook URL names its topic: https://ntfy.example/TOPIC")
        secret = secret.strip() or secrets.token_urlsafe(32)
        if len(secret) < 16 or len(secret) > 128:
            raise ApiError(400, "webhook secret must be 16 to 128 characters")
        with self.writer.begin() as conn:
            hook_id = conn.execute(insert(m.webhooks).values(
                name=name, url=url.strip(), secret=secret, events=chosen, enabled=True, format=format,
                created_at=time.time()).returning(m.webhooks.c.id)).scalar_one()
        return hook_id, secret

    def list(self) -> List[Dict[str, Any]]:
        return self._rows(m.webhooks, ("id", "name", "url", "events", "format", "enabled", "created_at"))

    def send_test(self, ident: Union[int, str], public_url: str = "") -> int:
        """Queue a made-up ``test`` event for this webhook now, in its format; returns the delivery id (its
        result shows in the delivery log like any other)."""
        row_id = _row_id(str(ident).strip())
        now = time.time()
        with self.writer.begin() as conn:
            hook = conn.execute(select(m.webhooks.c.id, m.webhooks.c.format).where(m.webhooks.c.id == row_id)).first()
            if hook is None:
                raise ApiError(404, "no webhook %s" % str(ident)[:20])
            doc = {"event": "test", "transition_id": 0, "at": format_time(now),
                   "device": {"device_id": "test-device", "hostname": "test-nas", "model": "TS-453D",
                              "firmware": "5.2.0.0000", "verdict": "exposed", "last_seen_at": format_time(now),
                              "group": "test group"},
                   "detail": {"previous_verdict": "ok", "verdict": "exposed",
                              "newly_failing": ["router.upnp-mappings"], "no_longer_failing": []},
                   "dashboard_url": public_url.rstrip("/") + "/" if public_url else "",
                   "source": "exposure-guard-server/%s (test)" % __version__}
            return int(conn.execute(insert(m.webhook_deliveries).values(
                webhook_id=hook.id, transition_id=None, event="test", payload=render(hook.format, doc),
                status="pending", attempts=0, next_attempt_at=now, last_error="", created_at=now)
                .returning(m.webhook_deliveries.c.id)).scalar_one())

    def remove(self, ident: Union[int, str]) -> bool:
        row_id = _row_id(str(ident).strip())
        if row_id is None:
            return False
        with self.writer.begin() as conn:
            return bool(conn.execute(delete(m.webhooks).where(m.webhooks.c.id == row_id)).rowcount)

    def deliveries(self, limit: int = 50) -> List[Dict[str, Any]]:
        """The newest deliveries, with their webhook's name. An answer's status is shown by its code alone,
        also where an older version stored the receiver's text with it."""
        w, h = m.webhook_deliveries.c, m.webhooks.c
        with self.engine.connect() as conn:
            rows = conn.execute(select(w.id, w.event, w.status, w.attempts, w.last_status, w.last_error,
                                       w.created_at, w.delivered_at, w.next_attempt_at, h.name.label("webhook"))
                                .join_from(m.webhook_deliveries, m.webhooks, w.webhook_id == h.id)
                                .order_by(w.id.desc()).limit(limit)).all()
        shown = [dict(r._mapping) for r in rows]
        for row in shown:
            if row["last_status"] is not None and row["last_error"]:
                row["last_error"] = status_text(row["last_status"])
        return shown


def _role(text: str) -> str:
    try:
        return check_role(text)
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None


def _names(groups: Union[str, Sequence[str], None]) -> List[str]:
    """Group names from a list or a comma-separated string (blank ones dropped)."""
    items = groups.split(",") if isinstance(groups, str) else list(groups or [])
    return [str(g).strip() for g in items if str(g).strip()]


def _limit_ids(conn: Connection, table: Table, column: str, owner_id: int) -> FrozenSet[int]:
    return frozenset(r[0] for r in conn.execute(select(table.c.group_id).where(table.c[column] == owner_id)))


def _limit_names(conn: Connection, table: Table, column: str) -> Dict[int, List[str]]:
    """owner id → the names of the groups it is limited to."""
    out: Dict[int, List[str]] = {}
    rows = conn.execute(select(table.c[column], m.groups.c.name).join_from(table, m.groups,
                                                                          table.c.group_id == m.groups.c.id))
    for owner, name in rows:
        out.setdefault(owner, []).append(name)
    return {k: sorted(v, key=hostname_key) for k, v in out.items()}


def _row_id(text: str) -> Optional[int]:
    """A row id typed by someone (ASCII digits, within what the database stores), else None."""
    if text.isascii() and text.isdigit() and len(text) <= 16 and 0 < int(text) <= MAX_ID:
        return int(text)
    return None


class LoginThrottle:
    """At most ``limit`` login attempts per client address in a ``window`` of seconds, unless one succeeds.

    Each attempt is counted in the database *before* its password is checked, in one atomic upsert: parallel
    attempts (in flight at once) and attempts on other server processes sharing the database all count, so
    40 guesses sent at once get 10 password checks and 30 answers of 429. A successful login clears the
    address's count."""

    def __init__(self, engine: Engine, window: float = 600.0, limit: int = 10) -> None:
        self.engine = engine
        self.writer = engine.execution_options(**WRITE)
        self.window, self.limit = window, limit
        from sqlalchemy.dialects import postgresql, sqlite

        # INSERT … ON CONFLICT DO UPDATE … RETURNING: the same statement in both dialects
        self._upsert: Any = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert

    def attempt(self, client: str, now: float) -> None:
        """Count one attempt from ``client``; 429 when it is past the limit (its password is not checked)."""
        t = m.login_attempts
        stale = t.c.window_start < now - self.window  # the address's window is over: start a new one
        statement = self._upsert(t).values(client=client[:64], attempts=1, window_start=now).on_conflict_do_update(
            index_elements=[t.c.client], set_={
                "attempts": case((stale, 1), else_=t.c.attempts + 1),
                "window_start": case((stale, now), else_=t.c.window_start),
            }).returning(t.c.attempts)
        with self.writer.begin() as conn:
            attempts = conn.execute(statement).scalar_one()
        if attempts > self.limit:
            raise ApiError(429, "too many failed logins from this address; wait 10 minutes")

    def succeeded(self, client: str) -> None:
        with self.writer.begin() as conn:
            conn.execute(delete(m.login_attempts).where(m.login_attempts.c.client == client[:64]))

    def purge(self, now: float) -> int:
        """Forget addresses whose window is over (bounded table under a spray of addresses)."""
        with self.writer.begin() as conn:
            return conn.execute(delete(m.login_attempts).where(
                m.login_attempts.c.window_start < now - self.window)).rowcount


class Admin:
    def __init__(self, engine: Engine, *, session_ttl: float = 12 * 3600, webhook_allow: str = "") -> None:
        self.engine = engine
        self.writer = engine.execution_options(**WRITE)
        self.session_ttl = session_ttl
        self.throttle = LoginThrottle(engine)
        self.groups = Groups(engine)
        self.enroll_secrets = EnrollSecrets(engine, self.groups)
        self.api_tokens = ApiTokens(engine, self.groups)
        self.webhooks = Webhooks(engine, webhook_allow)

    # -- users -----------------------------------------------------------------------------------------
    def has_users(self) -> bool:
        with self.engine.connect() as conn:
            return conn.execute(select(m.users.c.id).limit(1)).first() is not None

    def set_password(self, username: str, password: str, role: Optional[str] = None,
                     groups: Union[str, Sequence[str], None] = None) -> bool:
        """Create the user or change its password (ending its sessions); True when created. A new user is an
        admin unless ``role`` says otherwise; ``groups`` (names) limits the user to them, an empty list
        lifts the limit, None leaves it."""
        username = username.strip()
        if not username or len(username) > 64 or CONTROL_CHARACTERS.search(username):
            raise ApiError(400, "user name must be 1 to 64 characters, none of them control characters")
        if len(password) < MIN_PASSWORD:
            raise ApiError(400, "password must be at least %d characters" % MIN_PASSWORD)
        hashed = hash_password(password)
        with self.writer.begin() as conn:
            row = conn.execute(select(m.users.c.id).where(m.users.c.username == username)).first()
            if row is None:
                user_id = conn.execute(insert(m.users).values(
                    username=username, password_hash=hashed, created_at=time.time(), role=_role(role or "admin"),
                    groups_limited=False).returning(m.users.c.id)).scalar_one()
            else:
                user_id = row.id
                values: Dict[str, Any] = {"password_hash": hashed}
                if role:
                    values["role"] = _role(role)
                conn.execute(update(m.users).where(m.users.c.id == user_id).values(**values))
                conn.execute(delete(m.sessions).where(m.sessions.c.user_id == user_id))
            if groups is not None:
                self._limit_user(conn, user_id, _names(groups))
            return row is None

    def _limit_user(self, conn: Connection, user_id: int, names: List[str]) -> None:
        ids = sorted({self.groups.find(conn, name) for name in names})
        conn.execute(delete(m.user_groups).where(m.user_groups.c.user_id == user_id))
        if ids:
            conn.execute(insert(m.user_groups), [{"user_id": user_id, "group_id": g} for g in ids])
        conn.execute(update(m.users).where(m.users.c.id == user_id).values(groups_limited=bool(ids)))

    def set_alerts(self, username: str, email: str, kinds: Union[str, Sequence[str]], digest: bool) -> None:
        """A user's email address, the event kinds emailed at once, and the daily digest (services/emails.py)."""
        email = (email or "").strip()
        if email and (len(email) > 254 or not re.fullmatch(r"[^@\s<>,;]+@[^@\s<>,;]+\.[^@\s<>,;]+", email)):
            raise ApiError(400, "%r is not an email address" % email[:60])
        wanted = [k.strip() for k in (kinds.split(",") if isinstance(kinds, str) else kinds) if k.strip()]
        unknown = [k for k in wanted if k not in TRANSITION_KINDS or k in ONBOARDING_KINDS]
        if unknown:
            raise ApiError(400, "cannot email %r events" % unknown[0][:40])
        with self.writer.begin() as conn:
            done = conn.execute(update(m.users).where(m.users.c.username == username.strip()[:64]).values(
                email=email, alert_kinds=",".join(sorted(set(wanted))), digest=bool(digest))).rowcount
        if not done:
            raise ApiError(404, "no user %r" % username[:64])

    def users(self) -> List[Dict[str, Any]]:
        u = m.users.c
        with self.engine.connect() as conn:
            rows = conn.execute(select(u.id, u.username, u.role, u.groups_limited, u.created_at, u.last_login_at,
                                       u.email, u.alert_kinds, u.digest)
                                .order_by(u.username)).all()
            limits = _limit_names(conn, m.user_groups, "user_id")
        return [dict(r._mapping, groups=limits.get(r.id, []) if r.groups_limited else []) for r in rows]

    def remove_user(self, username: str) -> bool:
        """Delete a user (and its sessions); the last admin cannot be removed."""
        u = m.users.c
        with self.writer.begin() as conn:
            row = conn.execute(select(u.id, u.role).where(u.username == username.strip()[:64])).first()
            if row is None:
                return False
            admins = conn.execute(select(func.count()).select_from(m.users).where(u.role == "admin")).scalar_one()
            if row.role == "admin" and admins <= 1:
                raise ApiError(409, "%s is the last admin; make another admin first" % username[:64])
            conn.execute(delete(m.sessions).where(m.sessions.c.user_id == row.id))
            conn.execute(delete(m.user_groups).where(m.user_groups.c.user_id == row.id))
            return bool(conn.execute(delete(m.users).where(u.id == row.id)).rowcount)

    def login(self, username: str, password: str, client: str) -> Optional[int]:
        """The user's id when the password is right, None when not; 429 after too many failures from
        ``client`` (an address)."""
        self.throttle.attempt(client, time.time())
        user_id = self._check_password(username, password)
        if user_id is not None:
            self.throttle.succeeded(client)
        return user_id

    def _check_password(self, username: str, password: str) -> Optional[int]:
        with self.engine.connect() as conn:
            row = conn.execute(select(m.users.c.id, m.users.c.password_hash).where(
                m.users.c.username == username.strip()[:64])).first()
        if row is None:
            verify_password(password, DUMMY_PASSWORD_HASH)
            return None
        return row.id if verify_password(password, row.password_hash) else None

    # -- sessions --------------------------------------------------------------------------------------
    def create_session(self, user_id: int) -> Tuple[str, str]:
        """(session token, its CSRF token)."""
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
            row = conn.execute(select(s.id, s.csrf_token, s.expires_at, u.id.label("user_id"), u.username, u.role,
                                      u.groups_limited)
                               .join_from(m.sessions, m.users, s.user_id == u.id)
                               .where(s.token_hash == token_hash(token))).first()
            if row is None or row.expires_at < time.time():
                return None
            limit = _limit_ids(conn, m.user_groups, "user_id", row.user_id) if row.groups_limited else None
        return dict(row._mapping, groups=limit)

    def end_session(self, token: Optional[str]) -> None:
        if token:
            with self.writer.begin() as conn:
                conn.execute(delete(m.sessions).where(m.sessions.c.token_hash == token_hash(token)))

    def purge_sessions(self) -> int:
        """Drop expired sessions (and login counts whose window is over); returns the sessions dropped."""
        now = time.time()
        self.throttle.purge(now)
        with self.writer.begin() as conn:
            return conn.execute(delete(m.sessions).where(m.sessions.c.expires_at < now)).rowcount
