"""Several server instances on one PostgreSQL (loopback only): check-ins/s and latency for 1, 2 and 3
instances of `exposure-guard-server serve` (one process each, different ports), the load spread evenly
across them as a proxy would, every check-in a gzip'd report v1 with a fresh report_id.

    flock /tmp/eg-bench.lock python3 -m bench.bench_instances [--duration 10] [--connections 32] [--max 3]

Needs EXPOSURE_GUARD_TEST_PG_URL (source .ci/start-postgres.sh). Every instance, PostgreSQL and the load
generator share this machine's cores: more instances add processes, not cores, so the figures show the
cost of coordination through the database, not what more machines would give.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

from tests.support.serverproc import ServerProcess, cli, free_port, pg_database

from bench.bench_server import Load, checkin_requests, device


def run_spread(loads: List[Load], duration: float, connections: int) -> Dict[str, Any]:
    """All the instances' loads at once, in one event loop; ``connections`` shared evenly."""
    async def main() -> float:
        owners = [loads[i % len(loads)] for i in range(connections)]
        streams = [await asyncio.open_connection(load.host, load.port) for load in owners]
        end = time.perf_counter() + duration
        start = time.perf_counter()
        await asyncio.gather(*(load.worker(stream, end) for load, stream in zip(owners, streams)))
        return time.perf_counter() - start

    try:
        import uvloop

        wall = uvloop.run(main())
    except ImportError:
        wall = asyncio.run(main())
    latencies = sorted(x for load in loads for x in load.latencies)
    statuses: Dict[int, int] = {}
    for load in loads:
        for status, n in load.statuses.items():
            statuses[status] = statuses.get(status, 0) + n
    ok = sum(n for s, n in statuses.items() if 200 <= s < 300)
    return {"ok": ok, "statuses": statuses, "rps": ok / wall,
            "p50_ms": 1000 * latencies[len(latencies) // 2] if latencies else 0,
            "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] if latencies else 0}


def bench(instances: int, args: argparse.Namespace, tmp: Path) -> Dict[str, Any]:
    from exposure_guard import checkin
    from exposure_guard.qts.identity import DeviceIdentity

    db_url = pg_database("eg_bench_instances_%d" % instances)
    assert db_url
    cli("init", "--db", db_url)
    secret = cli("enroll-secret", "create", "--db", db_url).stdout.strip().splitlines()[-1]
    servers = [ServerProcess(db_url, free_port(), tmp / ("instance-%d-%d.log" % (instances, i)),
                             extra=["--max-connections-per-source", str(max(64, args.connections))])
               for i in range(instances)]
    try:
        for server in servers:
            server.start(wait=False)
        for server in servers:
            server.wait_ready()
        keys = []
        for i in range(200):
            state = tmp / ("agents-%d" % instances) / str(i)
            checkin.enroll(servers[i % instances].url, secret, DeviceIdentity(**device(i)), state)
            keys.append((device(i), checkin.read_node_key(state)))
        count = int(4000 * (args.duration + 2))
        per_instance = [checkin_requests(keys, count, "127.0.0.1:%d" % s.port, seed) for seed, s in enumerate(servers)]
        run_spread([Load("127.0.0.1", s.port, r[:300]) for s, r in zip(servers, per_instance)], 2, args.connections)
        loads = [Load("127.0.0.1", s.port, r[300:]) for s, r in zip(servers, per_instance)]
        return run_spread(loads, args.duration, args.connections)
    finally:
        for server in servers:
            server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--max", type=int, default=3, help="largest number of instances (default 3)")
    args = parser.parse_args()
    if not os.environ.get("EXPOSURE_GUARD_TEST_PG_URL"):
        print("needs PostgreSQL: set EXPOSURE_GUARD_TEST_PG_URL (source .ci/start-postgres.sh)", file=sys.stderr)
        return 2
    print("ExposureGuard: check-ins through 1..%d server instances on one PostgreSQL, %d cores shared by the "
          "instances, PostgreSQL and the load generator; %d connections, %.0f s" % (
              args.max, os.cpu_count() or 0, args.connections, args.duration), flush=True)
    with tempfile.TemporaryDirectory(prefix="eg-bench-") as folder:
        base = None
        for n in range(1, args.max + 1):
            r = bench(n, args, Path(folder))
            base = base or r["rps"]
            print("  %d instance%s: %7.0f check-ins/s (%.2f× one)  p50 %6.1f ms  p99 %6.1f ms  statuses %s" % (
                n, " " if n == 1 else "s", r["rps"], r["rps"] / base, r["p50_ms"], r["p99_ms"],
                dict(sorted(r["statuses"].items()))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
