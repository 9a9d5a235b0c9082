"""Fleet load run (loopback only): 1,000 simulated agents enroll and check in against the real server,
on SQLite and on PostgreSQL; then the dashboard and API must show exactly the fleet that was injected.

    python3 -m bench.bench_fleet [--agents 1000] [--rounds 3] [--exposed 137] [--at-risk 211]
                                 [--procs 4] [--workers 2] [--samples 40] [--skip-sqlite] [--skip-pg]
    bash -c 'source .ci/start-postgres.sh; python3 -m bench.bench_fleet'     # with PostgreSQL

Each agent is a thread (the agents are spread over --procs processes) with its own identity and state
directory, and uses the agent's own code: ``checkin.enroll`` (POST /api/v1/enroll with the enrollment
secret, node key stored 0600), then per round a report v1 document built from the real check catalogue
(``exposure_guard.report``), ``checkin.spool_report`` and ``checkin.deliver_spool`` (gzip, node key,
ordered spool, deleted after the 2xx). All agents enroll first; then all check in at once, --rounds
reports each, as fast as they can (a fleet whose schedules line up). The last round sets the state that
is injected: --exposed devices fail reachability.admin and router.upnp-mappings (critical, exposure),
--at-risk devices fail myqnapcloud.upnp-forwarding (high), the rest pass everything.

Figures: enrollments/s, check-ins/s (delivered reports / wall time of the check-in phase) and the
agents' check-in latency; the dashboard's latency (logged-in GET / as HTML, /api/v1/summary,
/api/v1/devices?state=exposed) while the fleet checks in and afterwards. Correctness: the summary API,
the device list and the HTML dashboard's counters must equal the injected fleet, and the server must
hold agents × rounds reports. Exit 1 when anything is wrong.

The agents, the server (2 uvicorn workers by default) and the dashboard probe share this machine's
cores, so the figures are for the whole system on one box, not the server alone.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

import requests
from tests.support.serverproc import ADMIN_PASSWORD, ServerProcess, cli, free_port, pg_database

REPO = Path(__file__).resolve().parents[1]


STATES = ("ok", "at_risk", "exposed")
EXPOSED_FAILS = ("reachability.admin", "router.upnp-mappings")
AT_RISK_FAILS = ("myqnapcloud.upnp-forwarding",)


# ---------------------------------------------------------------------------------------------- the fleet
def final_states(agents: int, exposed: int, at_risk: int, seed: int = 8) -> List[str]:
    states = ["exposed"] * exposed + ["at_risk"] * at_risk + ["ok"] * (agents - exposed - at_risk)
    random.Random(seed).shuffle(states)
    return states


def identity(i: int) -> Any:
    from exposure_guard.qts.identity import DeviceIdentity

    return DeviceIdentity(device_id="qnap-fleet-%06d" % i, hostname="nas-%04d" % i, model=("TS-453D", "TS-464")[i % 2],
                          firmware="5.1.%d.2596" % (i % 4), build="20231128",
                          lan_addresses=["10.%d.%d.20" % (i // 250, i % 250)])


_CATALOGUE: List[Any] = []


def catalogue() -> List[Any]:
    if not _CATALOGUE:
        from exposure_guard.checks import all_checks

        _CATALOGUE.extend(all_checks())
    return _CATALOGUE


def report_for(ident: Any, state: str) -> Dict[str, Any]:
    """A report v1 document with the real check ids, titles and families, failing per ``state``."""
    from exposure_guard.report import Finding, Report

    failing = {"exposed": EXPOSED_FAILS + AT_RISK_FAILS, "at_risk": AT_RISK_FAILS, "ok": ()}[state]
    findings = []
    for check in catalogue():
        fail = check.id in failing
        evidence: Dict[str, Any] = {"simulated": True}
        if fail and check.id == "reachability.admin":
            evidence["ports"] = [{"family": "ipv4", "port": 8080, "state": "verified", "service": "admin HTTP"}]
        findings.append(Finding(id=check.id, title=check.title, severity=check.severity,
                                status="fail" if fail else "pass",
                                summary=("%s fails (simulated)" if fail else "%s passes (simulated)") % check.id,
                                evidence=evidence, fixable=check.fixable, family=check.family,
                                exposure=bool(check.exposure)))
    report = Report(device=ident.to_dict(), findings=findings, mode="report", duration_ms=900)
    document = report.to_dict()
    assert document["summary"]["exposed"] == (state == "exposed")
    return document


# ---------------------------------------------------------------------------------------------- agents
def agent_process(url: str, secret: str, indices: List[int], states: List[str], rounds: int, spool: str,
                  ready: Any, go: Any, results: Any) -> None:
    """One process of simulated agents: a thread per agent."""
    from exposure_guard import checkin
    from exposure_guard.settings import load_settings

    settings = load_settings(None, environ={"EXPOSURE_GUARD_SERVER_URL": url})
    catalogue()  # import the checks once, before the threads start
    rng = random.Random(indices[0])
    enroll_times: List[float] = []
    latencies: List[float] = []
    errors: List[str] = []
    delivered = [0]
    lock = threading.Lock()
    enrolled = threading.Barrier(len(indices) + 1)
    start = threading.Event()
    first_post = [float("inf")]
    last_done = [0.0]

    def agent(i: int) -> None:
        ident = identity(i)
        state_dir = Path(spool) / ("agent-%06d" % i)
        ok = True
        try:
            began = time.monotonic()
            checkin.enroll(url, secret, ident, state_dir, timeout=120)
            with lock:
                enroll_times.append(time.monotonic() - began)
        except Exception as exc:  # counted and reported, the run goes on
            ok = False
            with lock:
                errors.append("enroll %d: %s" % (i, exc))
        enrolled.wait()
        start.wait()
        if not ok:
            return
        plan = [rng.choice(STATES) for _ in range(rounds - 1)] + [states[i]]
        for state in plan:
            document = report_for(ident, state)
            began = time.time()
            with lock:
                first_post[0] = min(first_post[0], began)
            checkin.spool_report(state_dir, document, 100)
            result = checkin.deliver_spool(settings, state_dir, deadline=300)
            took = time.time() - began
            with lock:
                latencies.append(took)
                delivered[0] += result.delivered
                if not result.ok:
                    errors.append("check-in %d: %s" % (i, result.summary()))
                last_done[0] = max(last_done[0], time.time())

    threads = [threading.Thread(target=agent, args=(i,), daemon=True) for i in indices]
    began = time.time()
    for thread in threads:
        thread.start()
    enrolled.wait()
    enroll_end = time.time()
    ready.put(len(indices))
    go.wait()
    cpu = time.process_time()
    start.set()
    for thread in threads:
        thread.join()
    results.put({"cpu": time.process_time() - cpu, "enroll_times": enroll_times, "enroll_span": (began, enroll_end),
                 "latencies": latencies,
                 "delivered": delivered[0], "errors": errors, "first_post": first_post[0], "last_done": last_done[0]})


# ---------------------------------------------------------------------------------------------- dashboard
class Dashboard:
    """A logged-in admin (HTML pages) and an API client."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.api = requests.Session()
        self.api.headers["Authorization"] = "Bearer " + token
        self.web = requests.Session()
        form = self.web.get(url + "/login", timeout=30).text
        hidden = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', form))
        answer = self.web.post(url + "/login", data=dict(hidden, username="admin", password=ADMIN_PASSWORD),
                               timeout=30, allow_redirects=False)
        if answer.status_code not in (302, 303):
            raise RuntimeError("dashboard login failed: HTTP %d" % answer.status_code)

    def timed(self, what: str) -> Tuple[float, requests.Response]:
        session = self.web if not what.startswith("/api/") else self.api
        began = time.perf_counter()
        response = session.get(self.url + what, timeout=60)
        took = time.perf_counter() - began
        response.raise_for_status()
        return took, response

    def counts_on_page(self) -> Dict[str, int]:
        _took, response = self.timed("/")
        return {k: int(v) for k, v in re.findall(r'data-count="(\w+)">\s*(\d+)', response.text)}


PAGES = ("/", "/api/v1/summary", "/api/v1/devices?state=exposed&per_page=50")


def sample_latency(board: Dashboard, samples: int) -> Dict[str, List[float]]:
    out: Dict[str, List[float]] = {page: [] for page in PAGES}
    for _ in range(samples):
        for page in PAGES:
            out[page].append(board.timed(page)[0])
    return out


def group_cpu(pgid: int) -> float:
    """CPU seconds (user + system) used so far by every process in process group ``pgid`` (the server)."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid:  # field 5 of stat: the process group
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def spread(values: List[float]) -> str:
    if not values:
        return "n/a"
    ordered = sorted(values)
    p95 = ordered[max(0, int(round(len(ordered) * 0.95)) - 1)]
    return "median %6.1f ms  p95 %6.1f ms  max %6.1f ms  (n=%d)" % (
        statistics.median(ordered) * 1000, p95 * 1000, ordered[-1] * 1000, len(ordered))


# ---------------------------------------------------------------------------------------------- one run
def run(label: str, db_url: str, args: argparse.Namespace, work: Path) -> Dict[str, Any]:
    print("\n== %s: %d agents x %d check-ins, %d server workers, agents in %d processes"
          % (label, args.agents, args.rounds, args.workers, args.procs), flush=True)
    cli("init", "--db", db_url)
    secret = cli("enroll-secret", "create", "--db", db_url).stdout.strip().splitlines()[-1]
    token = cli("api-token", "create", "--db", db_url).stdout.strip().splitlines()[-1]
    server = ServerProcess(db_url, free_port(), work / ("server-%s.log" % label), workers=args.workers)
    server.start()
    spool = Path(tempfile.mkdtemp(prefix="eg-fleet-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
    problems: List[str] = []
    figures: Dict[str, Any] = {"label": label}
    try:
        states = final_states(args.agents, args.exposed, args.at_risk)
        board = Dashboard(server.url, token)
        ctx = multiprocessing.get_context("fork")
        ready, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
        chunks = [list(range(args.agents))[p::args.procs] for p in range(args.procs)]
        procs = [ctx.Process(target=agent_process, args=(server.url, secret, chunk, states, args.rounds, str(spool),
                                                         ready, go, results), daemon=True) for chunk in chunks]
        started = time.time()
        for proc in procs:
            proc.start()
        for _ in procs:
            ready.get(timeout=600)
        enrolled_at = time.time()
        # the dashboard, sampled while the whole fleet checks in
        during: Dict[str, List[float]] = {page: [] for page in PAGES}
        stop = threading.Event()

        def probe() -> None:
            while not stop.is_set():
                for page in PAGES:
                    try:
                        during[page].append(board.timed(page)[0])
                    except Exception as exc:
                        problems.append("dashboard during load: %s %s" % (page, exc))
                stop.wait(0.05)

        prober = threading.Thread(target=probe, daemon=True)
        assert server.proc is not None
        server_cpu = group_cpu(server.proc.pid)
        go.set()
        prober.start()
        parts = [results.get(timeout=1800) for _ in procs]
        server_cpu = group_cpu(server.proc.pid) - server_cpu
        stop.set()
        prober.join()
        for proc in procs:
            proc.join(timeout=60)
        enroll_times = [t for p in parts for t in p["enroll_times"]]
        latencies = [t for p in parts for t in p["latencies"]]
        delivered = sum(p["delivered"] for p in parts)
        errors = [e for p in parts for e in p["errors"]]
        problems.extend(errors[:10])
        first = min(p["first_post"] for p in parts)
        last = max(p["last_done"] for p in parts)
        phase = max(1e-9, last - first)
        figures.update(enrolled=len(enroll_times), enroll_rate=len(enroll_times) / max(1e-9, enrolled_at - started),
                       delivered=delivered, checkin_rate=delivered / phase, phase=phase, latencies=latencies,
                       during=during)
        print("  enrollment: %d agents in %.2f s = %.0f enrollments/s (agent-side %s)"
              % (len(enroll_times), enrolled_at - started, figures["enroll_rate"], spread(enroll_times)), flush=True)
        print("  check-ins:  %d reports delivered in %.2f s = %.0f check-ins/s" % (delivered, phase,
                                                                                 figures["checkin_rate"]))
        print("  agent check-in latency (spool + gzip + POST + delete): %s" % spread(latencies))
        agent_cpu = sum(p["cpu"] for p in parts)
        cores = os.cpu_count() or 1
        figures.update(agent_cpu=agent_cpu, server_cpu=server_cpu)
        print("  CPU during the check-in phase: agents %.1f s, server %.1f s (%.1f ms per check-in) of %.1f s "
              "available (%d cores x %.2f s); the rest: database, kernel, dashboard probe"
              % (agent_cpu, server_cpu, server_cpu / max(1, delivered) * 1000, cores * phase, cores, phase))
        for page in PAGES:
            print("  dashboard during load  %-44s %s" % (page, spread(during[page])))

        # --- correctness: what the dashboard and the API say is the injected fleet
        want = {state: states.count(state) for state in STATES}
        summary = board.timed("/api/v1/summary")[1].json()
        counts = summary["counts"]
        got = {state: counts.get(state, -1) for state in STATES}
        exposed_list = board.timed("/api/v1/devices?state=exposed&per_page=200")[1].json()
        page_counts = board.counts_on_page()
        figures.update(summary=summary, page_counts=page_counts)
        ok = (summary["devices"] == args.agents and got == want and counts.get("stale", 0) == 0
              and exposed_list["total"] == want["exposed"] and page_counts.get("total") == args.agents
              and all(page_counts.get(s) == want[s] for s in STATES)
              and summary["reports_stored"] >= args.agents * args.rounds and delivered == args.agents * args.rounds)
        expected_ids = sorted("qnap-fleet-%06d" % i for i, s in enumerate(states) if s == "exposed")
        listed: List[str] = []
        page_no = 1
        while True:
            chunk = board.timed("/api/v1/devices?state=exposed&per_page=200&page=%d" % page_no)[1].json()
            listed += [d["device_id"] for d in chunk["devices"]]
            if page_no >= chunk["pages"]:
                break
            page_no += 1
        ok = ok and sorted(listed) == expected_ids
        print("  server says: %d devices, %s, stale %d, %d reports stored; exposed list %d devices (%s the injected "
              "ids); dashboard HTML counters %s" % (
                  summary["devices"], json.dumps(got, sort_keys=True), counts.get("stale", 0),
                  summary["reports_stored"], exposed_list["total"], "exactly" if sorted(listed) == expected_ids
                  else "NOT", json.dumps(page_counts, sort_keys=True)))
        print("  injected:    %d devices, %s, %d reports -> %s" % (args.agents, json.dumps(want, sort_keys=True),
                                                                  args.agents * args.rounds,
                                                                  "CORRECT" if ok else "WRONG"))
        if not ok:
            problems.append("%s: the server's view differs from the injected fleet" % label)
        after = sample_latency(board, args.samples)
        figures["after"] = after
        for page in PAGES:
            print("  dashboard after load   %-44s %s" % (page, spread(after[page])))
        failures = re.findall(r"(?m)^.*(?:Traceback|ERROR).*$", server.log_tail(400))
        if failures:
            problems.append("%s: server log has errors: %s" % (label, failures[:3]))
    finally:
        server.stop()
        shutil.rmtree(str(spool), ignore_errors=True)
    figures["problems"] = problems
    for problem in problems:
        print("  PROBLEM: %s" % problem)
    return figures




def drop_pg_database(name: str) -> None:
    from sqlalchemy import create_engine, text

    from exposure_guard_server.db import normalise_url

    admin = create_engine(normalise_url(os.environ["EXPOSURE_GUARD_TEST_PG_URL"]), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % name))
    admin.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3, help="check-ins per agent (the last sets its final state)")
    parser.add_argument("--exposed", type=int, default=137)
    parser.add_argument("--at-risk", type=int, default=211)
    parser.add_argument("--procs", type=int, default=4, help="processes the agent threads are spread over")
    parser.add_argument("--workers", type=int, default=2, help="server worker processes")
    parser.add_argument("--samples", type=int, default=40, help="dashboard requests per page after the load")
    parser.add_argument("--skip-sqlite", action="store_true")
    parser.add_argument("--skip-pg", action="store_true")
    args = parser.parse_args()
    if args.exposed + args.at_risk > args.agents or min(args.agents, args.rounds, args.procs) < 1:
        parser.error("need agents >= exposed + at-risk, and positive agents/rounds/procs")
    print("fleet load run: %d agents (%d exposed, %d at risk, %d ok at the end), %d check-ins each; %d CPU cores"
          % (args.agents, args.exposed, args.at_risk, args.agents - args.exposed - args.at_risk, args.rounds,
             os.cpu_count() or 0))
    work = Path(tempfile.mkdtemp(prefix="eg-bench-fleet-"))
    runs: List[Dict[str, Any]] = []
    try:
        if not args.skip_sqlite:
            runs.append(run("SQLite", "sqlite:///%s" % (work / "fleet.db"), args, work))
        if not args.skip_pg:
            url = pg_database("eg_bench_fleet")
            if url is None:
                print("\n== PostgreSQL: skipped (EXPOSURE_GUARD_TEST_PG_URL unset; run under "
                      "`bash -c 'source .ci/start-postgres.sh; python3 -m bench.bench_fleet'`)")
            else:
                try:
                    runs.append(run("PostgreSQL", url, args, work))
                finally:
                    drop_pg_database("eg_bench_fleet")
    finally:
        shutil.rmtree(str(work), ignore_errors=True)
    print("\n== Summary")
    for r in runs:
        print("  %-10s %5.0f check-ins/s (server CPU %.1f ms each), %4.0f enrollments/s; dashboard GET / median "
              "%.1f ms during load, %.1f ms after; counts %s" % (r["label"], r.get("checkin_rate", 0),
                                   r.get("server_cpu", 0) / max(1, r.get("delivered", 1)) * 1000, r.get("enroll_rate", 0),
                                   statistics.median(r["during"]["/"]) * 1000 if r.get("during", {}).get("/") else -1,
                                   statistics.median(r["after"]["/"]) * 1000 if r.get("after") else -1,
                                   "correct" if not r["problems"] else "WRONG: " + "; ".join(r["problems"][:2])))
    return 1 if any(r["problems"] for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
