"""Fleet server figures (loopback only): check-in throughput and latency, and read latency on a big fleet.

    python3 -m bench.bench_server [--duration 10] [--connections 32] [--workers 2]
                                  [--devices 100000] [--reports-per-device 10] [--skip-pg] [--skip-fleet]

1. Check-ins/s sustained against the real `exposure-guard-server serve --workers 2` (SQLite WAL), each a
   gzip'd report v1 with a fresh report_id from one of 200 enrolled devices, and the same load against a
   bare ASGI endpoint (uvicorn, same workers, reads the body and answers 201) in the same run: ratio.
   p50/p99 check-in latency as the client sees it. Then the same on PostgreSQL (EXPOSURE_GUARD_TEST_PG_URL).
2. A fleet of --devices devices and --reports-per-device reports each, generated with bulk inserts (COPY
   on PostgreSQL), then the latency of the fleet summary, device lists (filters, sorts, deep page), a
   device page and the dashboard's HTML fleet page through the real server.

The load generator is a small asyncio HTTP/1.1 keep-alive client in this process; it shares the 2 cores
with the server, so absolute figures understate what a server alone on the machine does.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from tests.support.serverproc import ServerProcess, cli, free_port, pg_database

REPO = Path(__file__).resolve().parents[1]


BARE_APP = r'''
import json
BODY = json.dumps({"stored": True, "duplicate": False}).encode()
async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    size = 0
    more = True
    while more:
        message = await receive()
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    if scope["path"] == "/healthz":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b'{"status": "ok"}'})
        return
    await send({"type": "http.response.start", "status": 201,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]})
    await send({"type": "http.response.body", "body": BODY})
'''

LIGHT_CONNECTIONS = [2, 2]  # light-load connections, server workers
CHECKS = ["myqnapcloud.upnp-forwarding", "myqnapcloud.published-services", "myqnapcloud.ddns", "router.upnp-mappings",
          "router.upnp-wan-exposed", "reachability.admin", "reachability.services", "admin.default-ports",
          "admin.https", "admin.default-cert", "service.telnet", "service.ssh", "account.default-admin",
          "system.autorun", "upnp.nas-discovery", "firmware.version"]


def device(i: int) -> Dict[str, Any]:
    return {"device_id": "qnap-bench-%06d" % i, "hostname": "nas-%06d" % i, "model": "TS-453D",
            "firmware": "5.1.%d.2596" % (i % 5), "build": "20231128", "lan_addresses": ["10.%d.%d.%d" % (
                i // 65536 % 256, i // 256 % 256, i % 256)]}


def failing_for(dev: Dict[str, Any], rng: random.Random, change: float = 0.02) -> set:
    """A device's failing checks: stable from one report to the next, changing in ``change`` of them."""
    seeded = random.Random(dev["device_id"])
    failing = set(seeded.sample(CHECKS, seeded.choice([0, 0, 0, 1, 1, 2, 3])))
    if rng.random() < change:
        failing ^= {rng.choice(CHECKS)}
    return failing


def report(dev: Dict[str, Any], rng: random.Random, stamp: float, failing: Optional[set] = None) -> Dict[str, Any]:
    """A realistic report: the 16 catalogue checks, a few failing, evidence of a typical size."""
    if failing is None:
        failing = failing_for(dev, rng)
    findings = [{"id": c, "title": "Title of " + c, "severity": "high", "status": "fail" if c in failing else "pass",
                 "summary": "%s: one line a person understands" % c,
                 "evidence": {"file": "etc/config/uLinux.conf", "section": "System", "key": "Some Key",
                              "value": "TRUE"},
                 "fixable": c.startswith("myqnapcloud"), "fixed": False,
                 "references": ["https://www.qnap.com/en/security-advisory/qsa-23-01"]} for c in CHECKS]
    exposed = "router.upnp-mappings" in failing or "reachability.admin" in failing
    return {"schema": "exposure-guard/report/v1", "report_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "generated_at": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(stamp)) + ".000000Z", "duration_ms": 412,
            "agent": {"version": "1.0.0", "python": "3.8.10", "mode": "report"}, "device": dev,
            "findings": findings, "changes": [],
            "summary": {"fail": len(failing), "pass": 16 - len(failing), "unknown": 0, "error": 0, "skipped": 0,
                        "exposed": exposed}}


# -- load generator ------------------------------------------------------------------------------------

class Load:
    def __init__(self, host: str, port: int, requests: List[bytes]) -> None:
        self.host, self.port, self.requests = host, port, requests
        self.next = 0
        self.latencies: List[float] = []
        self.statuses: Dict[int, int] = {}

    async def worker(self, stream: Tuple[asyncio.StreamReader, asyncio.StreamWriter], end: float) -> None:
        reader, writer = stream
        try:
            while time.perf_counter() < end and self.next < len(self.requests):
                request = self.requests[self.next]
                self.next += 1
                started = time.perf_counter()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head[9:12])
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                if length:
                    await reader.readexactly(length)
                self.latencies.append(time.perf_counter() - started)
                self.statuses[status] = self.statuses.get(status, 0) + 1
        finally:
            writer.close()

    def run(self, duration: float, connections: int) -> Dict[str, Any]:
        async def main() -> float:
            # One connection at a time, each given a moment to be accepted: with --workers N, whichever
            # server process is free takes it, as when agents connect for each check-in. (Opened all at
            # once, the first process to wake up may accept every one of them and leave the others idle.)
            streams = []
            for _ in range(connections):
                streams.append(await asyncio.open_connection(self.host, self.port))
                await asyncio.sleep(0.005)
            end = time.perf_counter() + duration
            start = time.perf_counter()
            await asyncio.gather(*(self.worker(stream, end) for stream in streams))
            return time.perf_counter() - start

        try:
            import uvloop

            wall = uvloop.run(main())
        except ImportError:
            wall = asyncio.run(main())
        lat = sorted(self.latencies)
        ok = sum(n for s, n in self.statuses.items() if 200 <= s < 300)
        return {"requests": len(lat), "ok": ok, "statuses": self.statuses, "wall_s": wall, "rps": ok / wall,
                "p50_ms": 1000 * lat[len(lat) // 2] if lat else 0,
                "p99_ms": 1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else 0}


def checkin_requests(keys: List[Tuple[Dict[str, Any], str]], count: int, host: str, seed: int) -> List[bytes]:
    rng = random.Random(seed)
    out = []
    base = time.time() - 86400
    for i in range(count):
        dev, key = keys[i % len(keys)]
        body = gzip.compress(json.dumps(report(dev, rng, base + i), separators=(",", ":")).encode(), 6)
        out.append(("POST /api/v1/checkin HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n"
                    "Content-Type: application/json\r\nContent-Encoding: gzip\r\nX-ExposureGuard-Interval: 3600\r\n"
                    "Content-Length: %d\r\n\r\n" % (host, key, len(body))).encode() + body)
    return out


def group_cpu(pgid: int) -> Dict[int, float]:
    """CPU seconds (user + system) used so far by each live process of a process group: the server's
    supervisor and its worker processes (it runs in its own session)."""
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields[2] is the process group; [11], [12] utime and stime
            out[int(name)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


def own_cpu() -> float:
    times = os.times()
    return times.user + times.system


def start_bare(port: int, workers: int, tmp: Path) -> subprocess.Popen:
    (tmp / "bare_asgi.py").write_text(BARE_APP)
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "bare_asgi:app", "--app-dir", str(tmp), "--host",
                             "127.0.0.1", "--port", str(port), "--workers", str(workers), "--log-level", "warning",
                             "--no-access-log"], start_new_session=True)
    import requests

    for _ in range(200):
        try:
            requests.get("http://127.0.0.1:%d/healthz" % port, timeout=1)
            return proc
        except requests.RequestException:
            time.sleep(0.05)
    raise SystemExit("bare ASGI server did not start")


def stop(proc: subprocess.Popen) -> None:
    import signal

    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    proc.wait(timeout=30)


def checkin_bench(label: str, db_url: str, args: argparse.Namespace, tmp: Path) -> Dict[str, Any]:
    from exposure_guard import checkin
    from exposure_guard.qts.identity import DeviceIdentity

    cli("init", "--db", db_url)
    secret = cli("enroll-secret", "create", "--db", db_url).stdout.strip().splitlines()[-1]
    port = free_port()
    # All the load comes from 127.0.0.1: lift the per-source connection cap (not what is measured here).
    server = ServerProcess(db_url, port, tmp / ("server-%s.log" % label), workers=args.workers,
                           extra=["--max-connections-per-source", str(max(64, args.connections))])
    server.start()
    try:
        keys = []
        for i in range(200):
            state = tmp / ("agents-%s" % label) / str(i)
            checkin.enroll(server.url, secret, DeviceIdentity(**device(i)), state)
            keys.append((device(i), checkin.read_node_key(state)))
        per_second_guess = 6000
        requests = checkin_requests(keys, int(per_second_guess * (args.duration + 2)), "127.0.0.1:%d" % port, 1)
        Load("127.0.0.1", port, requests[:400]).run(2, args.connections)  # warm-up (first reports per device)
        load = Load("127.0.0.1", port, requests[400:])
        assert server.proc is not None  # started above
        cpu_before, gen_before = group_cpu(server.proc.pid), own_cpu()
        result = load.run(args.duration, args.connections)
        used = {pid: cpu - cpu_before.get(pid, 0.0) for pid, cpu in group_cpu(server.proc.pid).items()}
        result["cpu_ms"] = 1000 * sum(used.values()) / max(1, result["ok"])
        # How the load fell on the worker processes (a keep-alive connection stays with the process that
        # accepted it): the busiest ones' shares of the server's CPU.
        busiest = sorted(used.values(), reverse=True)[:args.workers]
        result["split"] = " / ".join("%.0f %%" % (100 * cpu / max(1e-9, sum(used.values()))) for cpu in busiest)
        result["gen_cpu_ms"] = 1000 * (own_cpu() - gen_before) / max(1, result["ok"])
        # Service latency without queueing: few connections at once.
        light = Load("127.0.0.1", port, requests[400 + load.next:])
        result["light"] = light.run(max(3.0, args.duration / 2), args.light_connections)
    finally:
        server.stop()
    return result


def bare_bench(args: argparse.Namespace, tmp: Path) -> Dict[str, Any]:
    port = free_port()
    proc = start_bare(port, args.workers, tmp)
    try:
        keys = [(device(i), "egn_x") for i in range(200)]
        requests = checkin_requests(keys, int(20000 * (args.duration + 2)) // 4, "127.0.0.1:%d" % port, 2)
        requests = requests * 4
        Load("127.0.0.1", port, requests[:2000]).run(1, args.connections)
        return Load("127.0.0.1", port, requests).run(args.duration, args.connections)
    finally:
        stop(proc)


def show(label: str, r: Dict[str, Any]) -> None:
    print("  %-34s %7.0f check-ins/s  (%d ok of %d, statuses %s)  p50 %.1f ms  p99 %.1f ms" % (
        label, r["rps"], r["ok"], r["requests"], r["statuses"], r["p50_ms"], r["p99_ms"]), flush=True)
    if "cpu_ms" in r:
        print("  %-34s server CPU %.3f ms per check-in (every server process, user + system; worker processes "
              "%s); load generator %.3f ms" % ("", r["cpu_ms"], r["split"], r["gen_cpu_ms"]), flush=True)
    if "light" in r:
        light = r["light"]
        print("  %-34s %7.0f check-ins/s  at light load (%d connections): p50 %.1f ms  p99 %.1f ms" % (
            "", light["rps"], LIGHT_CONNECTIONS[0], light["p50_ms"], light["p99_ms"]), flush=True)


# -- the ceiling: the same statements by a bare loop ---------------------------------------------------

def ceiling_statements(dialect: Any) -> Tuple[Any, Dict[str, Tuple[str, Optional[List[str]]]]]:
    """The check-in's statements (db/hot_sql.py: a HotSql) and, with them, those of a transition and of the
    failing-check list, compiled for ``dialect``: (SQL, positional parameter order or None for named)."""
    from sqlalchemy import bindparam, delete, insert, select

    from exposure_guard_server.db import models as m
    from exposure_guard_server.db.hot_sql import HotSql

    hot = HotSql(dialect)
    compiled = dict(hot.compiled)
    t, f = m.transitions.c, m.device_failing.c
    extra = {
        "insert_transition": insert(m.transitions).values(
            {c: bindparam(c) for c in ("device_pk", "kind", "at", "report_pk", "detail")}).returning(t.id),
        "webhooks": select(m.webhooks.c.id, m.webhooks.c.events, m.webhooks.c.format).where(
            m.webhooks.c.enabled.is_(True)),
        "setting": select(m.server_settings.c.value).where(m.server_settings.c.name == bindparam("name")),
        "failing_delete": delete(m.device_failing).where(f.device_pk == bindparam("pk"), f.check_id == bindparam("c")),
        "failing_insert": insert(m.device_failing).values(device_pk=bindparam("pk"), check_id=bindparam("c"),
                                                          severity=bindparam("s")),
    }
    for name, statement in extra.items():
        done = statement.compile(dialect=dialect)
        compiled[name] = (done.string, list(done.positiontup or []) if done.positional else None)
    return hot, compiled


class CeilingItem:
    """One report reduced to what the ingest stores (computed before the clock starts)."""

    __slots__ = ("device_pk", "key_hash", "report_id", "generated_at", "verdict", "failing", "sha256", "body",
                 "device")

    def __init__(self, device_pk: int, key_hash: str, doc: Dict[str, Any], data: bytes, body: bytes) -> None:
        import hashlib

        from exposure_guard_server.reportlogic import failing_checks, parse_time, verdict_of

        self.device_pk, self.key_hash, self.report_id = device_pk, key_hash, doc["report_id"]
        self.generated_at = parse_time(doc["generated_at"])
        self.verdict, self.failing = verdict_of(doc), failing_checks(doc)
        self.sha256, self.body, self.device = hashlib.sha256(data).hexdigest(), body, doc["device"]


def ceiling_one(run: Any, update: Any, item: CeilingItem, now: float, begin: Any, commit: Any) -> None:
    """The statements services/ingest.py runs for one new report (its device known: the server knows a
    node key it has seen without a query), in one transaction."""
    from exposure_guard_server.naturalsort import hostname_key
    from exposure_guard_server.reportlogic import RISK, derive_transitions

    begin()
    (device_pk, interval_s, last_generated_at, verdict, failing, stale, report_count, _retired_at, hostname, model,
     firmware, build, lan_addresses, agent_version, accepting) = run("device_for_update", pk=item.device_pk,
                                                                      h=item.key_hash).fetchone()
    report_pk = run("insert_report", report_id=item.report_id, device_pk=device_pk, generated_at=item.generated_at,
                    received_at=now, verdict=item.verdict, fail_count=len(item.failing), body_sha256=item.sha256,
                    body=item.body).fetchone()[0]
    values = {"last_seen_at": now, "stale_base": now + 2 * interval_s, "report_count": report_count + 1}
    if last_generated_at is None or item.generated_at >= last_generated_at:
        previous = {c: sev for c, sev in json.loads(failing)}
        if accepting:
            run("accepted", pk=device_pk, pk2=device_pk).fetchall()
        values.update(last_generated_at=item.generated_at, last_report_pk=report_pk)
        if item.verdict != verdict:
            values.update(verdict=item.verdict, risk=RISK[item.verdict])
        failing_text = json.dumps(sorted(item.failing.items()))
        if failing_text != failing:
            values.update(fail_count=len(item.failing), failing=failing_text)
        dev = item.device
        if dev["hostname"] != hostname:
            values.update(hostname=dev["hostname"], hostname_key=hostname_key(dev["hostname"]))
        for name, new, old in (("model", dev["model"], model), ("firmware", dev["firmware"], firmware),
                               ("build", dev["build"], build),
                               ("lan_addresses", json.dumps(dev["lan_addresses"]), lan_addresses),
                               ("agent_version", "1.0.0", agent_version)):
            if new != old:
                values[name] = new
        update(device_pk, values)
        for kind, detail in derive_transitions(verdict, previous, item.verdict, item.failing):
            run("insert_transition", device_pk=device_pk, kind=kind, at=now, report_pk=report_pk,
                detail=json.dumps(dict(detail, report_id=item.report_id), sort_keys=True)).fetchone()
            run("webhooks").fetchall()
            if kind != "first_report":
                run("setting", name="smtp_host").fetchone()
        if previous != item.failing:
            for check in previous:
                if check not in item.failing:
                    run("failing_delete", pk=device_pk, c=check)
            for check, severity in item.failing.items():
                if check not in previous:
                    run("failing_insert", pk=device_pk, c=check, s=severity)
    else:
        update(device_pk, values)
    commit()


def _ceiling_worker(db_url: str, hot: Any, statements: Dict[str, Tuple[str, Optional[List[str]]]],
                    items: List[CeilingItem], duration: float, start: Any, out: Any) -> None:
    """One process of the ceiling: the driver alone (sqlite3 with the server's pragmas, or psycopg), the
    server's write lock on SQLite (an flock of the same file), one transaction per report."""
    import fcntl
    import resource

    from sqlalchemy.engine import make_url

    url = make_url(db_url)
    lock_fd = -1
    if url.get_backend_name() == "sqlite":
        import sqlite3

        assert url.database is not None  # a file database: the write lock sits next to it
        conn: Any = sqlite3.connect(url.database, timeout=30, check_same_thread=False)
        conn.isolation_level = None
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON", "busy_timeout=30000",
                       "cache_size=-65536", "temp_store=MEMORY"):  # as db/engine.py
            conn.execute("PRAGMA " + pragma)
        lock_fd = os.open(url.database + ".write-lock", os.O_RDWR | os.O_CREAT, 0o600)
        cursor = conn.cursor()

        def begin() -> None:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            cursor.execute("BEGIN IMMEDIATE")

        def commit() -> None:
            cursor.execute("COMMIT")
            fcntl.flock(lock_fd, fcntl.LOCK_UN)
    else:
        import psycopg

        conn = psycopg.connect(url.set(drivername="postgresql").render_as_string(hide_password=False))
        cursor = conn.cursor()

        def begin() -> None:
            pass  # psycopg opens the transaction with the first statement, as under SQLAlchemy

        def commit() -> None:
            conn.commit()

    def run(statement: str, /, **params: Any) -> Any:
        text, order = statements[statement]
        cursor.execute(text, tuple(params[key] for key in order) if order is not None else params)
        return cursor

    def update(pk: int, values: Dict[str, Any]) -> None:
        hot.update(cursor, pk, values)

    latencies: List[float] = []
    start.wait()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    began = time.perf_counter()
    end = began + duration
    try:
        for item in items:
            started = time.perf_counter()
            if started >= end:
                break
            ceiling_one(run, update, item, time.time(), begin, commit)
            latencies.append(time.perf_counter() - started)
    except BaseException as exc:
        out.put(exc)
        raise
    wall = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime
    conn.close()
    out.put((len(latencies), wall, cpu, sorted(latencies)))


def ceiling_bench(label: str, db_url: str, args: argparse.Namespace, tmp: Path) -> Dict[str, Any]:
    """The check-in's statements for the same kind of reports from a bare loop in --workers processes (for
    5 s at most: its rate is steady): what the database and its driver allow, without HTTP, JSON,
    validation or the framework."""
    import multiprocessing

    from exposure_guard_server.db import make_engine
    from exposure_guard_server.db.lock import WriteLock
    from exposure_guard_server.security import token_hash
    from exposure_guard_server.services.counters import Counters
    from exposure_guard_server.services.enroll import Enrollment

    cli("init", "--db", db_url)
    secret = cli("enroll-secret", "create", "--db", db_url).stdout.strip().splitlines()[-1]
    engine = make_engine(db_url)
    enrollment = Enrollment(engine, WriteLock(engine), Counters(engine))
    keys = [(device(i), token_hash(enrollment.enroll({"enroll_secret": secret, "device": device(i),
                                                      "agent": {"version": "1.0.0"}})["node_key"]))
            for i in range(200)]
    with engine.connect() as conn:
        pks = dict(conn.exec_driver_sql("SELECT node_key_hash, id FROM devices").all())
    hot, statements = ceiling_statements(engine.dialect)
    engine.dispose()
    rng = random.Random(1)
    base = time.time() - 86400
    items: List[List[CeilingItem]] = [[] for _ in range(args.workers)]
    for i in range(args.ceiling_reports):
        dev, key_hash = keys[i % len(keys)]
        doc = report(dev, rng, base + i)
        data = json.dumps(doc, separators=(",", ":")).encode()
        items[i % len(keys) % args.workers].append(CeilingItem(pks[key_hash], key_hash, doc, data,
                                                               gzip.compress(data, 6)))
    context = multiprocessing.get_context("fork")
    warm = [context.Event() for _ in range(2)]
    out = context.Queue()
    # Warm-up: each device's first report (a transition each), then the measured run.
    results = []
    for phase, duration in (("warm-up", 60.0), ("run", min(args.duration, 5.0))):
        start = warm.pop()
        chunks = [chunk[:len(keys) // args.workers] if phase == "warm-up" else chunk[len(keys) // args.workers:]
                  for chunk in items]
        procs = [context.Process(target=_ceiling_worker, args=(db_url, hot, statements, chunk, duration,
                                                                         start, out))
                 for chunk in chunks]
        for proc in procs:
            proc.start()
        start.set()
        results = [out.get(timeout=duration + 120) for _ in procs]
        for result in results:
            if isinstance(result, BaseException):
                raise SystemExit("a ceiling process failed: %r" % result)
        for proc in procs:
            proc.join()
    done = sum(r[0] for r in results)
    wall = max(r[1] for r in results)
    latencies = sorted(x for r in results for x in r[3])
    if done >= sum(len(chunk) for chunk in items) - len(keys):
        print("  (the ceiling ran out of reports: raise --ceiling-reports)", flush=True)
    return {"rps": done / wall, "ok": done, "cpu_ms": 1000 * sum(r[2] for r in results) / max(1, done),
            "p50_ms": 1000 * latencies[len(latencies) // 2] if latencies else 0,
            "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] if latencies else 0}


def show_ceiling(label: str, ceiling: Dict[str, Any], server: Dict[str, Any]) -> None:
    print("  %-34s %7.0f check-ins/s  (%d, %d processes, one transaction each)  p50 %.2f ms  p99 %.2f ms  "
          "CPU %.3f ms per check-in" % ("ceiling: bare loop on " + label, ceiling["rps"], ceiling["ok"],
                                        LIGHT_CONNECTIONS[1], ceiling["p50_ms"], ceiling["p99_ms"],
                                        ceiling["cpu_ms"]), flush=True)
    print("  server / ceiling on %s: %.0f %%" % (label, 100 * server["rps"] / ceiling["rps"]), flush=True)


# -- big fleet -----------------------------------------------------------------------------------------

def generate_fleet(db_url: str, devices: int, per_device: int) -> float:
    """Bulk-insert the fleet; returns seconds taken."""
    from sqlalchemy import insert, text

    from exposure_guard_server.db import make_engine, migrate
    from exposure_guard_server.db import models as m

    engine = make_engine(db_url)
    migrate(engine)
    rng = random.Random(7)
    now = time.time()
    body = zlib.compress(json.dumps(report(device(0), rng, now)).encode(), 6)
    sha = "0" * 64
    started = time.perf_counter()
    verdicts = []
    dev_rows: List[Dict[str, Any]] = []
    failing_rows: List[Dict[str, Any]] = []
    for i in range(devices):
        roll = rng.random()
        verdict = "exposed" if roll < 0.05 else "at_risk" if roll < 0.30 else "ok"
        failing = []
        if verdict == "exposed":
            failing = ["router.upnp-mappings"] + rng.sample(CHECKS[5:], rng.randint(0, 2))
        elif verdict == "at_risk":
            failing = rng.sample(CHECKS[7:], rng.randint(1, 3))
        stale = rng.random() < 0.04
        last_seen = now - (rng.uniform(3 * 86400, 30 * 86400) if stale else rng.uniform(0, 3600))
        d = device(i)
        dev_rows.append({
            "id": i + 1, "device_id": d["device_id"], "node_key_hash": "%064x" % (i + 1), "enroll_secret_id": None,
            "enrolled_at": now - 90 * 86400, "hostname": d["hostname"], "model": d["model"], "firmware": d["firmware"],
            "build": d["build"], "lan_addresses": json.dumps(d["lan_addresses"]), "agent_version": "1.0.0",
            "interval_s": 3600, "last_seen_at": last_seen, "last_generated_at": last_seen,
            "last_report_pk": (i + 1) * per_device, "verdict": verdict, "risk": {"ok": 1, "at_risk": 2,
                                                                                "exposed": 3}[verdict],
            "fail_count": len(failing), "failing": json.dumps([[c, "high"] for c in sorted(failing)]),
            "stale_base": last_seen + 7200, "stale": stale, "report_count": per_device})
        failing_rows.extend({"device_pk": i + 1, "check_id": c, "severity": "high"} for c in failing)
        verdicts.append(verdict)
    is_pg = engine.dialect.name == "postgresql"
    with engine.execution_options(eg_write=True).begin() as conn:
        conn.execute(insert(m.devices), dev_rows)
        conn.execute(insert(m.device_failing), failing_rows)
    print("  %d devices, %d failing-check rows inserted in %.1f s" % (devices, len(failing_rows),
                                                                    time.perf_counter() - started), flush=True)
    total = devices * per_device
    batch = 50000
    if is_pg:
        raw = engine.raw_connection()
        try:
            cursor = raw.cursor()
            with cursor.copy("COPY reports (id, report_id, device_pk, generated_at, received_at, verdict, fail_count, "
                             "body_sha256, body) FROM STDIN") as copy:
                for n in range(total):
                    pk = n + 1
                    dev = n // per_device
                    copy.write_row((pk, "%032x" % pk, dev + 1, now - (per_device - n % per_device) * 3600,
                                    now, verdicts[dev], 0, sha, body))
            cursor.execute("SELECT setval(pg_get_serial_sequence('reports', 'id'), %s)" % total)
            cursor.execute("SELECT setval(pg_get_serial_sequence('devices', 'id'), %s)" % devices)
            raw.commit()
        finally:
            raw.close()
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
    else:
        with engine.execution_options(eg_write=True).begin() as conn:
            for start in range(0, total, batch):
                rows = []
                for n in range(start, min(total, start + batch)):
                    dev = n // per_device
                    rows.append({"id": n + 1, "report_id": "%032x" % (n + 1), "device_pk": dev + 1,
                                 "generated_at": now - (per_device - n % per_device) * 3600, "received_at": now,
                                 "verdict": verdicts[dev], "fail_count": 0, "body_sha256": sha, "body": body})
                conn.execute(insert(m.reports), rows)
        with engine.connect() as conn:
            conn.exec_driver_sql("ANALYZE")
    engine.dispose()
    return time.perf_counter() - started


def read_bench(label: str, db_url: str, args: argparse.Namespace, tmp: Path) -> None:
    import requests

    print("\n== %s: fleet of %d devices / %d reports" % (label, args.devices, args.devices * args.reports_per_device),
          flush=True)
    seconds = generate_fleet(db_url, args.devices, args.reports_per_device)
    print("  generated in %.1f s" % seconds, flush=True)
    token = cli("api-token", "create", "--db", db_url).stdout.strip().splitlines()[-1]
    server = ServerProcess(db_url, free_port(), tmp / ("read-%s.log" % label), workers=1)
    server.start()
    session = requests.Session()
    session.headers["Authorization"] = "Bearer " + token
    try:
        # Dashboard session for the HTML page.
        from exposure_guard_server.db import make_engine
        from exposure_guard_server.services.admin import Admin

        engine = make_engine(db_url)
        Admin(engine).set_password("bench", "bench password 1")
        engine.dispose()
        browser = requests.Session()
        page = browser.get(server.url + "/login").text
        csrf = page.split('name="csrf" value="')[1].split('"')[0]
        browser.post(server.url + "/login", data={"username": "bench", "password": "bench password 1", "csrf": csrf,
                                                  "next": "/"})
        probes = [
            ("fleet summary", session, "/api/v1/summary"),
            ("device list (riskiest first)", session, "/api/v1/devices"),
            ("device list exposed", session, "/api/v1/devices?state=exposed"),
            ("device list stale", session, "/api/v1/devices?state=stale"),
            ("device list failing check", session, "/api/v1/devices?check=service.telnet"),
            ("device list firmware", session, "/api/v1/devices?firmware=5.1.3.2596"),
            ("device list by last seen", session, "/api/v1/devices?sort=last_seen"),
            ("device list hostname search", session, "/api/v1/devices?q=nas-0999"),
            ("device list page 1000", session, "/api/v1/devices?sort=hostname&page=1000"),
            ("device detail (history, diff)", session, "/api/v1/devices/qnap-bench-%06d" % (args.devices * 54 // 100)),
            ("device page HTML", browser, "/devices/qnap-bench-%06d" % (args.devices * 54 // 100)),
            ("dashboard HTML fleet page", browser, "/"),
            ("dashboard HTML exposed filter", browser, "/?state=exposed"),
        ]
        for name, client, path in probes:
            times = []
            for i in range(args.read_repeats + 2):
                started = time.perf_counter()
                response = client.get(server.url + path, timeout=60)
                elapsed = time.perf_counter() - started
                assert response.status_code == 200, (path, response.status_code, response.text[:200])
                if i >= 2:
                    times.append(elapsed * 1000)
            times.sort()
            print("  %-32s median %6.1f ms   p95 %6.1f ms   max %6.1f ms" % (
                name, statistics.median(times), times[int(len(times) * 0.95) - 1 if len(times) > 1 else 0],
                times[-1]), flush=True)
    finally:
        server.stop()




def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--light-connections", type=int, default=2, help="connections for the latency phase")
    parser.add_argument("--devices", type=int, default=100000)
    parser.add_argument("--reports-per-device", type=int, default=10)
    parser.add_argument("--read-repeats", type=int, default=20)
    parser.add_argument("--ceiling-reports", type=int, default=60000,
                        help="reports prepared for the ceiling loop (it stops after --duration or when they run out)")
    parser.add_argument("--skip-pg", action="store_true")
    parser.add_argument("--skip-checkin", action="store_true")
    parser.add_argument("--skip-fleet", action="store_true")
    args = parser.parse_args()
    LIGHT_CONNECTIONS[0], LIGHT_CONNECTIONS[1] = args.light_connections, args.workers
    try:
        import httptools  # noqa: F401
        import uvloop  # noqa: F401

        stack = "uvicorn + httptools + uvloop"
    except ImportError:
        stack = "uvicorn + h11 + asyncio (install uvicorn[standard] for httptools/uvloop)"
    print("ExposureGuard server bench: %d cores, Python %s, %s; load generator in the same machine" % (
        os.cpu_count() or 0, sys.version.split()[0], stack), flush=True)
    with tempfile.TemporaryDirectory(prefix="eg-bench-") as folder:
        tmp = Path(folder)
        pg_url = None if args.skip_pg else pg_database("eg_bench_checkin")
        if not args.skip_checkin:
            print("\n== check-ins, %d server workers, %d connections, %.0f s" % (args.workers, args.connections,
                                                                            args.duration), flush=True)
            bare = bare_bench(args, tmp)
            show("bare ASGI endpoint", bare)
            sqlite = checkin_bench("sqlite", "sqlite:///%s" % (tmp / "bench.db"), args, tmp)
            show("server on SQLite (WAL)", sqlite)
            print("  SQLite / bare ASGI ratio: %.0f %%" % (100 * sqlite["rps"] / bare["rps"]), flush=True)
            ceiling = ceiling_bench("sqlite", "sqlite:///%s" % (tmp / "ceiling.db"), args, tmp)
            show_ceiling("SQLite", ceiling, sqlite)
            if pg_url:
                pg = checkin_bench("pg", pg_url, args, tmp)
                show("server on PostgreSQL", pg)
                print("  PostgreSQL / bare ASGI ratio: %.0f %%" % (100 * pg["rps"] / bare["rps"]), flush=True)
                pg_ceiling = pg_database("eg_bench_ceiling")
                assert pg_ceiling is not None
                show_ceiling("PostgreSQL", ceiling_bench("pg", pg_ceiling, args, tmp), pg)
            elif not args.skip_pg:
                print("  PostgreSQL: skipped (EXPOSURE_GUARD_TEST_PG_URL unset; source .ci/start-postgres.sh)")
        if not args.skip_fleet:
            read_bench("SQLite", "sqlite:///%s" % (tmp / "fleet.db"), args, tmp)
            pg_fleet = None if args.skip_pg else pg_database("eg_bench_fleet")
            if pg_fleet:
                read_bench("PostgreSQL", pg_fleet, args, tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
