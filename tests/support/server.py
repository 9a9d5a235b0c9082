"""Helpers shared by the server tests (fixtures live in conftest.py)."""

from __future__ import annotations

import os
import uuid
from typing import Any, Dict, List, Optional

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from exposure_guard.report import Finding, Report
from exposure_guard_server.db import make_engine, migrate, normalise_url
from exposure_guard_server.services.admin import Admin

PG_ENV = "EXPOSURE_GUARD_TEST_PG_URL"
PG_SKIP = "PostgreSQL tests need EXPOSURE_GUARD_TEST_PG_URL (run `source .ci/start-postgres.sh` first)"
ADMIN_USER, ADMIN_PASSWORD = "admin", "correct horse battery"


class PgCluster:
    """Creates databases on the throwaway cluster: a migrated template once, then a clone per test."""

    def __init__(self, url: str) -> None:
        self.url = normalise_url(url)
        self.admin = create_engine(self.url, isolation_level="AUTOCOMMIT", pool_size=1)
        self.template = "eg_tpl_%d_%s" % (os.getpid(), uuid.uuid4().hex[:6])
        with self.admin.connect() as conn:
            conn.execute(text('CREATE DATABASE "%s"' % self.template))
        engine = make_engine(self.url_for(self.template))
        migrate(engine)
        engine.dispose()

    def url_for(self, name: str) -> str:
        return make_url(self.url).set(database=name).render_as_string(hide_password=False)

    def create(self) -> str:
        name = "eg_t_%d_%s" % (os.getpid(), uuid.uuid4().hex[:10])
        with self.admin.connect() as conn:
            conn.execute(text('CREATE DATABASE "%s" TEMPLATE "%s"' % (name, self.template)))
        return name

    def drop(self, name: str) -> None:
        with self.admin.connect() as conn:
            conn.execute(text('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % name))

    def close(self) -> None:
        self.drop(self.template)
        self.admin.dispose()






def finding(check_id: str, status: str = "pass", severity: str = "high", **evidence: Any) -> Finding:
    return Finding(id=check_id, title="Title of " + check_id, severity=severity, status=status,
                   summary="summary of %s: %s" % (check_id, status), evidence=dict(evidence))


def device_identity(device_id: str, hostname: str = "NAS1", firmware: str = "5.1.4.2596") -> Dict[str, Any]:
    return {"device_id": device_id, "hostname": hostname, "model": "TS-453D", "firmware": firmware,
            "build": "20231128", "lan_addresses": ["192.168.1.20"]}


def make_report(device: Dict[str, Any], failing: Optional[List[str]] = None, exposed: bool = False,
                generated_at: str = "", report_id: str = "", extra: Optional[List[Finding]] = None) -> Dict[str, Any]:
    """A real report v1 document built with the agent's own model."""
    failing = failing or []
    checks = ["myqnapcloud.upnp-forwarding", "router.upnp-mappings", "service.telnet", "admin.https",
              "firmware.version"]
    findings = [finding(c, "fail" if c in failing else "pass") for c in checks]
    findings += [finding(c, "fail") for c in failing if c not in checks]
    for f in findings:
        f.exposure = exposed and f.status == "fail"
    findings += extra or []
    report = Report(device=dict(device), findings=findings)
    if generated_at:
        report.generated_at = generated_at
    if report_id:
        report.report_id = report_id
    doc = report.to_dict()
    doc["summary"]["exposed"] = exposed
    return doc


class Api:
    """A TestClient on a fresh app plus helpers to enroll devices and check in reports."""

    def __init__(self, client: Any, admin: Admin, secret: str, server: Any) -> None:
        self.client, self.admin, self.secret, self.server = client, admin, secret, server
        self.token = admin.api_tokens.create("tests", role="admin")[1]

    @property
    def auth(self) -> Dict[str, str]:
        return {"Authorization": "Bearer " + self.token}

    def enroll(self, device: Dict[str, Any], secret: Optional[str] = None) -> Any:
        return self.client.post("/api/v1/enroll", json={"enroll_secret": secret or self.secret, "device": device})

    def enroll_key(self, device: Dict[str, Any]) -> str:
        response = self.enroll(device)
        assert response.status_code in (200, 201), response.text
        return response.json()["node_key"]

    def checkin(self, key: Optional[str], doc: Any, *, gzip_body: bool = False, headers: Optional[Dict[str, str]] = None,
                raw: Optional[bytes] = None) -> Any:
        import gzip
        import json

        body = raw if raw is not None else json.dumps(doc).encode("utf-8")
        sent = {"Content-Type": "application/json"}
        if key is not None:
            sent["Authorization"] = "Bearer " + key
        if gzip_body:
            body = gzip.compress(body)
            sent["Content-Encoding"] = "gzip"
        sent.update(headers or {})
        return self.client.post("/api/v1/checkin", content=body, headers=sent)

    def login(self, client: Any = None, username: str = ADMIN_USER, password: str = ADMIN_PASSWORD) -> Any:
        import re

        client = client or self.client
        page = client.get("/login")
        found = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert found is not None, "no csrf field on /login"
        csrf = found.group(1)
        return client.post("/login", data={"username": username, "password": password, "csrf": csrf, "next": "/"},
                           follow_redirects=False)

    def csrf(self, path: str = "/admin") -> str:
        import re

        page = self.client.get(path)
        found = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert found is not None, "no csrf field on %s" % path
        return found.group(1)

    def count(self, table: str) -> int:
        with self.server.engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM %s" % table)).scalar())
