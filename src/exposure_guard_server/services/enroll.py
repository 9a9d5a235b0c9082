"""Enrollment: an enrollment secret and a device identity in, a node key out (stored only as its hash).

Enrolling a known ``device_id`` again keeps the device's row and history and replaces its node key."""

from __future__ import annotations

import json
import time
from typing import Any, Dict, Optional

from sqlalchemy import Engine, insert, select, update

from exposure_guard_server.db import models as m
from exposure_guard_server.db.lock import WriteLock
from exposure_guard_server.errors import ApiError
from exposure_guard_server.security import NODE_KEY_PREFIX, new_secret, token_hash
from exposure_guard_server.services.counters import Counters
from exposure_guard_server.services.transitions import add_transition
from exposure_guard_server.services.validation import validate_device


class Enrollment:
    def __init__(self, engine: Engine, lock: WriteLock, counters: Counters, *, default_interval: int = 3600) -> None:
        self.engine = engine
        self.lock = lock
        self.counters = counters
        self.default_interval = default_interval

    def enroll(self, body: Any, now: Optional[float] = None) -> Dict[str, Any]:
        now = time.time() if now is None else now
        if not isinstance(body, dict):
            raise ApiError(400, "body must be a JSON object with enroll_secret and device")
        secret = body.get("enroll_secret")
        device = body.get("device")
        if not isinstance(secret, str) or not secret:
            raise ApiError(401, "missing enroll_secret")
        if not isinstance(device, dict):
            raise ApiError(422, "missing device identity object")
        validate_device(device)
        agent = body.get("agent")
        agent_version = str(agent.get("version", ""))[:64] if isinstance(agent, dict) else ""
        node_key = new_secret(NODE_KEY_PREFIX)
        key_hash = token_hash(node_key)
        secret_ok = (m.enroll_secrets.c.secret_hash == token_hash(secret), m.enroll_secrets.c.revoked_at.is_(None))
        with self.engine.connect() as conn:  # refuse bad secrets without touching the write lock
            if conn.execute(select(m.enroll_secrets.c.id).where(*secret_ok)).first() is None:
                raise ApiError(401, "invalid or revoked enrollment secret")
        with self.lock.begin() as conn:
            row = conn.execute(select(m.enroll_secrets.c.id).where(*secret_ok)).first()
            if row is None:
                raise ApiError(401, "invalid or revoked enrollment secret")
            secret_id = row.id
            existing = conn.execute(select(m.devices.c.id, m.devices.c.stale_base).where(
                m.devices.c.device_id == device["device_id"]).with_for_update()).first()
            identity = {
                "hostname": device["hostname"], "model": device["model"], "firmware": device["firmware"],
                "build": device["build"], "lan_addresses": json.dumps(device["lan_addresses"]),
            }
            if existing is not None:
                # Same device id: same device row and history, a fresh node key (the old one stops working).
                conn.execute(update(m.devices).where(m.devices.c.id == existing.id).values(
                    node_key_hash=key_hash, enroll_secret_id=secret_id, agent_version=agent_version, **identity))
                device_pk, again = existing.id, True
            else:
                device_pk = conn.execute(insert(m.devices).values(
                    device_id=device["device_id"], node_key_hash=key_hash, enroll_secret_id=secret_id,
                    enrolled_at=now, agent_version=agent_version, interval_s=self.default_interval,
                    verdict="pending", risk=0, fail_count=0, failing="[]",
                    stale_base=now + 2 * self.default_interval, stale=False, report_count=0, **identity,
                ).returning(m.devices.c.id)).scalar_one()
                again = False
                add_transition(conn, device_pk, "enrolled", now, None, {"hostname": device["hostname"]})
            conn.execute(update(m.enroll_secrets).where(m.enroll_secrets.c.id == secret_id).values(
                enrolled_count=m.enroll_secrets.c.enrolled_count + 1))
        self.counters.count("enrollments")
        return {"node_key": node_key, "device_id": device["device_id"], "re_enrolled": again}
