"""Fleet views for MSPs at scale (loopback only, no network): the fleet page filtered to one customer group
at 100,000 devices, and the daily digest at 10,000 devices, on SQLite (and PostgreSQL when
EXPOSURE_GUARD_TEST_PG_URL is set, e.g. after ``source .ci/start-postgres.sh``).

    python3 -m bench.bench_groups [--devices 100000] [--digest-devices 10000] [--groups 200] [--repeat 15]

The devices are written straight into a migrated database (bulk inserts: realistic rows, 30 % failing a
check, 5 % exposed, 5 % silent, 200 groups), then each view is timed through the real code: the whole
fleet page (``GET /?group=G`` as a logged-in user: summary, failing checks, device list, group and firmware
lists, rendering) and, as the baseline in the same run, the same page unfiltered; ``Mailer.digest`` for one
user (counts, 24 h of changes, silent boxes, expiring acceptances). Figures: median and p90 in ms."""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

from sqlalchemy import insert, text

from exposure_guard_server.db import make_engine, migrate
from exposure_guard_server.db import models as m
from exposure_guard_server.naturalsort import hostname_key

PASSWORD = "bench-password-123"


def populate(url: str, devices: int, groups: int, seed: int = 5) -> None:
    engine = make_engine(url)
    migrate(engine)
    rng = random.Random(seed)
    now = time.time()
    with engine.begin() as conn:
        conn.execute(insert(m.groups), [{"id": g + 1, "name": "customer-%03d" % g, "created_at": now}
                                        for g in range(groups)])
        batch: List[Dict[str, Any]] = []
        failing_rows: List[Dict[str, Any]] = []
        events: List[Dict[str, Any]] = []
        for i in range(devices):
            roll = rng.random()
            verdict, failing = ("exposed", [["router.upnp-mappings", "critical"]]) if roll < 0.05 else (
                ("at_risk", [["service.telnet", "high"]]) if roll < 0.30 else ("ok", []))
            silent = rng.random() < 0.05
            host = "nas%d-%s" % (i, rng.choice(("office", "lab", "backup", "front")))
            batch.append({
                "id": i + 1, "device_id": "dev-%07d" % i, "node_key_hash": "%064x" % i, "enrolled_at": now - 86400,
                "hostname": host, "hostname_key": hostname_key(host), "group_id": i % groups + 1,
                "model": rng.choice(("TS-453D", "TS-251D", "TVS-872XT")), "firmware": rng.choice(("5.1.4", "5.2.0")),
                "build": "20240101", "lan_addresses": json.dumps(["10.%d.%d.%d" % (i >> 16, (i >> 8) & 255, i & 255)]),
                "agent_version": "1.0.0", "interval_s": 3600, "last_seen_at": now - (10 ** 6 if silent else 60),
                "last_generated_at": now - 60, "verdict": verdict, "risk": {"ok": 1, "at_risk": 2, "exposed": 3}[verdict],
                "fail_count": len(failing), "failing": json.dumps(failing), "stale_base": now - (10 ** 6 if silent else -7200),
                "stale": silent, "report_count": 1, "note": ""})
            failing_rows += [{"device_pk": i + 1, "check_id": c, "severity": s} for c, s in failing]
            if verdict != "ok" and rng.random() < 0.2:
                events.append({"device_pk": i + 1, "kind": "became_" + verdict, "at": now - rng.random() * 86400,
                               "detail": json.dumps({"newly_failing": [failing[0][0]]})})
            if len(batch) == 5000:
                conn.execute(insert(m.devices), batch)
                batch = []
        if batch:
            conn.execute(insert(m.devices), batch)
        if failing_rows:
            conn.execute(insert(m.device_failing), failing_rows)
        if events:
            conn.execute(insert(m.transitions), events)
        if engine.dialect.name == "postgresql":
            conn.execute(text("ANALYZE"))
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            conn.execute(text("ANALYZE"))
            conn.commit()
    engine.dispose()


def timed(fn: Callable[[], Any], repeat: int) -> Dict[str, float]:
    fn()  # warm
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    return {"median_ms": statistics.median(samples), "p90_ms": samples[int(0.9 * (len(samples) - 1))]}


def fleet_page(url: str, repeat: int) -> Dict[str, Dict[str, float]]:
    from fastapi.testclient import TestClient

    from exposure_guard_server.app import create_app
    from exposure_guard_server.config import ServerConfig
    from exposure_guard_server.services.admin import Admin

    engine = make_engine(url)
    Admin(engine).set_password("bench", PASSWORD)
    engine.dispose()
    app = create_app(ServerConfig(db_url=url, background=False))
    out = {}
    with TestClient(app, base_url="http://127.0.0.1") as client:
        import re

        page = client.get("/login")
        found = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert found is not None, "no csrf field on /login"
        csrf = found.group(1)
        client.post("/login", data={"username": "bench", "password": PASSWORD, "csrf": csrf, "next": "/"})

        def get(path: str) -> Callable[[], Any]:
            def run() -> None:
                answer = client.get(path)
                assert answer.status_code == 200, answer.status_code
            return run

        out["fleet page, whole fleet (baseline)"] = timed(get("/"), repeat)
        out["fleet page, one group"] = timed(get("/?group=customer-007"), repeat)
        out["fleet page, one group, exposed"] = timed(get("/?group=customer-007&state=exposed"), repeat)
        out["fleet page, hostname order, page 100"] = timed(get("/?sort=hostname&page=100"), repeat)
        out["groups page (ranking)"] = timed(get("/groups"), repeat)
    return out


def digest(url: str, repeat: int) -> Dict[str, Dict[str, float]]:
    from exposure_guard_server.app import create_app
    from exposure_guard_server.config import ServerConfig

    app = create_app(ServerConfig(db_url=url, background=False))
    server = app.state.server
    now = time.time()
    try:
        return {"digest, whole fleet": timed(lambda: server.mailer.digest(None, now), repeat),
                "digest, one group": timed(lambda: server.mailer.digest(frozenset({8}), now), repeat),
                "summary alone (baseline)": timed(lambda: server.reader.summary(now), repeat)}
    finally:
        server.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--digest-devices", type=int, default=10_000)
    parser.add_argument("--groups", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    targets = [("SQLite", lambda name: "sqlite:///%s" % (Path(tempfile.mkdtemp(prefix="eg-bench-")) / name))]
    pg = os.environ.get("EXPOSURE_GUARD_TEST_PG_URL")
    if pg:
        from tests.support.server import PgCluster

        cluster = PgCluster(pg)
        targets.append(("PostgreSQL", lambda name: cluster.url_for(cluster.create())))
    for label, make_url in targets:
        for what, count, run in (("fleet", args.devices, fleet_page), ("digest", args.digest_devices, digest)):
            url = make_url("%s.db" % what)
            start = time.perf_counter()
            populate(url, count, args.groups)
            print("%s: %d devices in %d groups written in %.1f s" % (label, count, args.groups,
                                                                     time.perf_counter() - start), flush=True)
            for name, figures in run(url, args.repeat).items():
                print("  %-40s median %7.1f ms   p90 %7.1f ms" % (name, figures["median_ms"], figures["p90_ms"]),
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
