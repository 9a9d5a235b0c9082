"""Enrollment: an enrollment secret and a device identity in, a node key out (stored only as its hash).

The enrollment secret is shared by a whole fleet and the device id can be computed from hardware facts, so
neither proves that the caller is the device. Enrolling a known ``device_id`` again therefore:

- with proof (``previous_node_key``: the device's current node key, which the agent sends when it has one)
  keeps the device's row and history and replaces its node key (transition ``re_enrolled``);
- without proof leaves the device alone (its key keeps working) and files a request an operator approves or
  rejects on the Admin page or with ``exposure-guard-server re-enroll`` (transition ``re_enroll_pending``).
  The answer has the same status and shape as a new device's, so it does not tell whether the id exists.
  The requested key starts working when the request is approved."""

from __future__ import annotations

import hmac
import json
import time
from dataclasses import dataclass
from typing import Any, Dict, FrozenSet, List, Optional

from sqlalchemy import Connection, Engine, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from exposure_guard_server.db import models as m
from exposure_guard_server.db.lock import WriteLock
from exposure_guard_server.errors import ApiError
from exposure_guard_server.inputs import check_strings, printable
from exposure_guard_server.naturalsort import hostname_key
from exposure_guard_server.security import NODE_KEY_PREFIX, new_secret, token_hash
from exposure_guard_server.services.counters import Counters
from exposure_guard_server.services.transitions import add_transition
from exposure_guard_server.services.validation import validate_device

MAX_PENDING_PER_DEVICE = 5  # newer requests push out the oldest: bounded however often someone tries
MAX_KEY_LENGTH = 256


@dataclass
class EnrollRequest:
    secret: str
    device: Dict[str, Any]
    agent_version: str
    previous_node_key: str  # "" when the agent has none


def parse_enroll_body(body: Any) -> EnrollRequest:
    """Validate an enrollment body (no database): 400/401/422 with the reason, never anything else."""
    if not isinstance(body, dict):
        raise ApiError(400, "body must be a JSON object with enroll_secret and device")
    check_strings(body)
    secret = body.get("enroll_secret")
    device = body.get("device")
    if not isinstance(secret, str) or not secret or len(secret) > MAX_KEY_LENGTH:
        raise ApiError(401, "missing enroll_secret")
    if not isinstance(device, dict):
        raise ApiError(422, "missing device identity object")
    validate_device(device)
    previous = body.get("previous_node_key", "")
    if previous is None:
        previous = ""
    if not isinstance(previous, str) or len(previous) > MAX_KEY_LENGTH:
        raise ApiError(422, "previous_node_key must be the node key this device was given (a string)")
    agent = body.get("agent")
    agent_version = printable(agent.get("version", ""), 64) if isinstance(agent, dict) else ""
    return EnrollRequest(secret=secret, device=device, agent_version=agent_version, previous_node_key=previous)


def _identity(device: Dict[str, Any]) -> Dict[str, Any]:
    return {"hostname": device["hostname"], "hostname_key": hostname_key(device["hostname"]),
            "model": device["model"], "firmware": device["firmware"],
            "build": device["build"], "lan_addresses": json.dumps(device["lan_addresses"])}


class Enrollment:
    def __init__(self, engine: Engine, lock: WriteLock, counters: Counters, *, default_interval: int = 3600) -> None:
        self.engine = engine
        self.lock = lock
        self.counters = counters
        self.default_interval = default_interval

    def enroll(self, body: Any, client: str = "", now: Optional[float] = None) -> Dict[str, Any]:
        """Enroll (or re-enroll) a device; the answer is ``{"node_key", "device_id", "re_enrolled"}`` where
        ``re_enrolled`` is true only for a re-enrollment proven with the previous node key."""
        now = time.time() if now is None else now
        request = parse_enroll_body(body)
        device = request.device
        node_key = new_secret(NODE_KEY_PREFIX)
        key_hash = token_hash(node_key)
        secret_ok = (m.enroll_secrets.c.secret_hash == token_hash(request.secret),
                     m.enroll_secrets.c.revoked_at.is_(None))
        with self.engine.connect() as conn:  # refuse bad secrets without touching the write lock
            if conn.execute(select(m.enroll_secrets.c.id).where(*secret_ok)).first() is None:
                raise ApiError(401, "invalid or revoked enrollment secret")
        # Two first enrollments of one id at once (PostgreSQL): the loser's insert violates the unique
        # device id; run it again, and it finds the device the winner created.
        for attempt in range(2):
            try:
                proven = self._enroll_once(request, key_hash, secret_ok, client, now)
                break
            except IntegrityError:
                if attempt == 1:
                    raise ApiError(503, "the enrollment collided with another one; retry") from None
        self.counters.count("enrollments")
        return {"node_key": node_key, "device_id": device["device_id"], "re_enrolled": proven}

    def _enroll_once(self, request: EnrollRequest, key_hash: str, secret_ok: Any, client: str, now: float) -> bool:
        """One enrollment transaction; True when it was a re-enrollment proven with the previous node key."""
        device = request.device
        with self.lock.begin() as conn:
            row = conn.execute(select(m.enroll_secrets.c.id, m.enroll_secrets.c.group_id).where(*secret_ok)).first()
            if row is None:
                raise ApiError(401, "invalid or revoked enrollment secret")
            secret_id = row.id
            # A box lands in its secret's group; enrolled again with a secret of no group, it stays where it is.
            group = {"group_id": row.group_id} if row.group_id is not None else {}
            existing = conn.execute(select(m.devices.c.id, m.devices.c.node_key_hash).where(
                m.devices.c.device_id == device["device_id"]).with_for_update()).first()
            proven = existing is not None and bool(request.previous_node_key) and hmac.compare_digest(
                token_hash(request.previous_node_key), existing.node_key_hash)
            if existing is None:
                device_pk = conn.execute(insert(m.devices).values(
                    device_id=device["device_id"], node_key_hash=key_hash, enroll_secret_id=secret_id, **group,
                    enrolled_at=now, agent_version=request.agent_version, interval_s=self.default_interval,
                    verdict="pending", risk=0, fail_count=0, failing="[]",
                    stale_base=now + 2 * self.default_interval, stale=False, report_count=0, **_identity(device),
                ).returning(m.devices.c.id)).scalar_one()
                add_transition(conn, device_pk, "enrolled", now, None, {"hostname": device["hostname"]})
            elif proven:
                # The caller holds the device's key: same row and history, a fresh key (the old one stops).
                # Requests filed without proof for this device are dropped: none can be approved by mistake.
                conn.execute(update(m.devices).where(m.devices.c.id == existing.id).values(
                    node_key_hash=key_hash, enroll_secret_id=secret_id, agent_version=request.agent_version,
                    **group, **_identity(device)))
                dropped = conn.execute(delete(m.enroll_requests).where(
                    m.enroll_requests.c.device_pk == existing.id)).rowcount
                add_transition(conn, existing.id, "re_enrolled", now, None, {
                    "proof": "node_key", "hostname": device["hostname"], "client": client[:64],
                    "dropped_requests": dropped})
            else:
                self._file_request(conn, existing.id, key_hash, secret_id, request, client, now)
            conn.execute(update(m.enroll_secrets).where(m.enroll_secrets.c.id == secret_id).values(
                enrolled_count=m.enroll_secrets.c.enrolled_count + 1))
        return proven

    def _file_request(self, conn: Connection, device_pk: int, key_hash: str, secret_id: int,
                      request: EnrollRequest, client: str, now: float) -> None:
        r = m.enroll_requests.c
        request_id = conn.execute(insert(m.enroll_requests).values(
            device_pk=device_pk, node_key_hash=key_hash, enroll_secret_id=secret_id, requested_at=now,
            client=client[:64], identity=json.dumps(request.device, sort_keys=True),
            agent_version=request.agent_version).returning(r.id)).scalar_one()
        keep = select(r.id).where(r.device_pk == device_pk).order_by(r.id.desc()).limit(MAX_PENDING_PER_DEVICE)
        conn.execute(delete(m.enroll_requests).where(r.device_pk == device_pk, r.id.not_in(keep)))
        add_transition(conn, device_pk, "re_enroll_pending", now, None, {
            "request_id": request_id, "hostname": request.device["hostname"], "client": client[:64]})

    # -- the operator's side -------------------------------------------------------------------------------
    def pending(self, allowed: Optional[FrozenSet[int]] = None) -> List[Dict[str, Any]]:
        """Re-enrollments waiting for an operator, newest first (``allowed``: of boxes in these groups only)."""
        r, d = m.enroll_requests.c, m.devices.c
        query = (select(r.id, r.requested_at, r.client, r.identity, r.agent_version, d.device_id, d.hostname,
                        d.last_seen_at).join_from(m.enroll_requests, m.devices, r.device_pk == d.id)
                 .order_by(r.id.desc()))
        if allowed is not None:
            query = query.where(d.group_id.in_(sorted(allowed)))
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        out = []
        for row in rows:
            identity = json.loads(row.identity or "{}")
            out.append({"id": row.id, "device_id": row.device_id, "hostname": row.hostname,
                        "requested_hostname": identity.get("hostname", ""),
                        "requested_lan_addresses": identity.get("lan_addresses", []), "client": row.client,
                        "requested_at": row.requested_at, "agent_version": row.agent_version,
                        "device_last_seen_at": row.last_seen_at})
        return out

    def _visible(self, conn: Connection, request_id: int, allowed: Optional[FrozenSet[int]]) -> None:
        """404 for a request about a box outside the caller's groups (as if there were none)."""
        if allowed is None:
            return
        group_id = conn.execute(select(m.devices.c.group_id).join_from(
            m.enroll_requests, m.devices, m.enroll_requests.c.device_pk == m.devices.c.id)
            .where(m.enroll_requests.c.id == request_id)).scalar()
        if group_id not in allowed:
            raise ApiError(404, "no pending re-enrollment %d" % request_id)

    def approve(self, request_id: int, by: str, now: Optional[float] = None,
                allowed: Optional[FrozenSet[int]] = None) -> str:
        """Give the device the requested node key (its current one stops working); returns the device id.
        The device's other pending requests are dropped."""
        now = time.time() if now is None else now
        r, d = m.enroll_requests.c, m.devices.c
        with self.lock.begin() as conn:
            self._visible(conn, request_id, allowed)
            row = conn.execute(select(r.device_pk, r.node_key_hash, r.enroll_secret_id, r.client, r.agent_version,
                                      d.device_id).join_from(m.enroll_requests, m.devices, r.device_pk == d.id)
                               .where(r.id == request_id)).first()
            if row is None:
                raise ApiError(404, "no pending re-enrollment %d" % request_id)
            conn.execute(delete(m.enroll_requests).where(r.device_pk == row.device_pk))
            group_id = conn.execute(select(m.enroll_secrets.c.group_id).where(
                m.enroll_secrets.c.id == row.enroll_secret_id)).scalar() if row.enroll_secret_id is not None else None
            conn.execute(update(m.devices).where(d.id == row.device_pk).values(
                node_key_hash=row.node_key_hash, enroll_secret_id=row.enroll_secret_id,
                agent_version=row.agent_version, **({"group_id": group_id} if group_id is not None else {})))
            add_transition(conn, row.device_pk, "re_enrolled", now, None, {
                "proof": "approved", "by": by[:64], "request_id": request_id, "client": row.client})
        return str(row.device_id)

    def reject(self, request_id: int, allowed: Optional[FrozenSet[int]] = None) -> str:
        """Drop a pending request (its key never works); returns the device id."""
        r, d = m.enroll_requests.c, m.devices.c
        with self.lock.begin() as conn:
            self._visible(conn, request_id, allowed)
            row = conn.execute(select(d.device_id).join_from(m.enroll_requests, m.devices, r.device_pk == d.id)
                               .where(r.id == request_id)).first()
            if row is None:
                raise ApiError(404, "no pending re-enrollment %d" % request_id)
            conn.execute(delete(m.enroll_requests).where(r.id == request_id))
        return str(row.device_id)

