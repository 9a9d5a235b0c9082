"""Device search at 100,000 devices (loopback only): the indexed search (services/search.py: FTS5 trigram
table on SQLite, pg_trgm index on PostgreSQL) against the old ILIKE scan, through the real server.

    flock /tmp/eg-bench.lock python3 -m bench.bench_search [--devices 100000] [--repeat 20] [--skip-pg]

The fleet is bench_server's (bulk inserts of realistic rows: host names ``nas-NNNNNN``, device ids
``qnap-bench-NNNNNN``, one LAN address ``10.x.y.z`` each). For each query the device list is fetched through
``GET /api/v1/devices?q=`` (API token) and the dashboard's fleet page ``GET /?q=`` (logged in: summary,
failing checks, filters and the list, rendered), first from a server doing the indexed search, then from a
server on the same database started with EXPOSURE_GUARD_SEARCH_SCAN=1 (the old ILIKE scan: the baseline).
Figures: median and p90 in ms over --repeat requests after 2 warm-up ones; the first row, without a
search, shows what the page costs without one (its summary and filters are the same with one). PostgreSQL when
EXPOSURE_GUARD_TEST_PG_URL is set."""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

import requests
from tests.support.serverproc import ServerProcess, cli, free_port, pg_database

from bench.bench_server import generate_fleet
from exposure_guard_server.services.search import SCAN_ENV

PASSWORD = "bench password 1"
QUERIES = [
    ("no search (reference)", ""),
    ("host name, few matches", "nas-04242"),
    ("host name, many matches", "nas-01"),
    ("host name, every device", "NAS"),
    ("IP address fragment", "10.1.42."),
    ("device id fragment", "bench-09876"),
    ("2 characters", "42"),
]


def timed(session: requests.Session, url: str, repeat: int) -> Tuple[Dict[str, float], Any]:
    samples: List[float] = []
    answer = None
    for i in range(repeat + 2):
        started = time.perf_counter()
        answer = session.get(url, timeout=120)
        elapsed = (time.perf_counter() - started) * 1000
        assert answer.status_code == 200, (url, answer.status_code, answer.text[:200])
        if i >= 2:
            samples.append(elapsed)
    samples.sort()
    return {"median": statistics.median(samples), "p90": samples[int(0.9 * (len(samples) - 1))]}, answer


def sessions(url: str, token: str) -> Tuple[requests.Session, requests.Session]:
    api = requests.Session()
    api.headers["Authorization"] = "Bearer " + token
    browser = requests.Session()
    csrf = browser.get(url + "/login").text.split('name="csrf" value="')[1].split('"')[0]
    browser.post(url + "/login", data={"username": "bench", "password": PASSWORD, "csrf": csrf, "next": "/"})
    return api, browser


def measure(db_url: str, token: str, log: Path, repeat: int, scan: bool) -> Dict[str, Dict[str, Any]]:
    if scan:
        os.environ[SCAN_ENV] = "1"
    server = ServerProcess(db_url, free_port(), log, workers=1)
    try:
        server.start()
    finally:
        os.environ.pop(SCAN_ENV, None)
    out: Dict[str, Dict[str, Any]] = {}
    try:
        api, browser = sessions(server.url, token)
        for label, q in QUERIES:
            figures, answer = timed(api, server.url + "/api/v1/devices?" + requests.compat.urlencode({"q": q}), repeat)
            html, _ = timed(browser, server.url + "/?" + requests.compat.urlencode({"q": q}), repeat)
            out[label] = {"api": figures, "html": html, "total": answer.json()["total"],
                          "first": [d["device_id"] for d in answer.json()["devices"]]}
    finally:
        server.stop()
    return out


def run(label: str, db_url: str, args: argparse.Namespace, tmp: Path) -> None:
    print("\n== %s: %d devices" % (label, args.devices), flush=True)
    print("  generated in %.1f s" % generate_fleet(db_url, args.devices, 1), flush=True)
    from exposure_guard_server.db import make_engine
    from exposure_guard_server.services.admin import Admin

    engine = make_engine(db_url)
    Admin(engine).set_password("bench", PASSWORD)
    engine.dispose()
    token = cli("api-token", "create", "--db", db_url).stdout.strip().splitlines()[-1]
    indexed = measure(db_url, token, tmp / ("indexed-%s.log" % label), args.repeat, scan=False)
    scanned = measure(db_url, token, tmp / ("scan-%s.log" % label), args.repeat, scan=True)
    print("  %-26s %8s   %-19s %-19s   %-19s %-19s" % ("query (q)", "matches", "API indexed", "API old scan",
                                                      "HTML indexed", "HTML old scan"))
    for name, _q in QUERIES:
        new, old = indexed[name], scanned[name]
        assert (new["total"], new["first"]) == (old["total"], old["first"]), (name, new["total"], old["total"])
        print("  %-26s %8d   %s   %s   %s   %s" % (
            name, new["total"], _cell(new["api"]),
            _cell(old["api"]), _cell(new["html"]), _cell(old["html"])), flush=True)


def _cell(figures: Dict[str, float]) -> str:
    return "%6.1f / %6.1f ms" % (figures["median"], figures["p90"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--skip-pg", action="store_true")
    args = parser.parse_args()
    print("Device search bench: %d cores; figures are median / p90 over %d requests; the same first page from "
          "both (checked)" % (os.cpu_count() or 0, args.repeat), flush=True)
    for label, q in QUERIES:
        print("  %-26s q=%s" % (label, q))
    with tempfile.TemporaryDirectory(prefix="eg-bench-") as folder:
        tmp = Path(folder)
        run("SQLite", "sqlite:///%s" % (tmp / "search.db"), args, tmp)
        pg_url = None if args.skip_pg else pg_database("eg_bench_search")
        if pg_url:
            run("PostgreSQL", pg_url, args, tmp)
        elif not args.skip_pg:
            print("\nPostgreSQL: skipped (EXPOSURE_GUARD_TEST_PG_URL unset; source .ci/start-postgres.sh)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
