"""Backup and restore of a big fleet (loopback only): a database of --devices devices with --reports-per-device
reports each (bulk-inserted), then `exposure-guard-server backup`, `restore` into a new database, and a
server started on the restored database until it answers the fleet summary with every device.

    flock /tmp/eg-bench.lock python3 -m bench.bench_backup [--devices 100000] [--reports-per-device 2] [--skip-pg]

SQLite always; PostgreSQL with EXPOSURE_GUARD_TEST_PG_URL (source .ci/start-postgres.sh).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import requests
from tests.support.serverproc import ServerProcess, cli, free_port, pg_database

from bench.bench_server import generate_fleet


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def run(label: str, live: str, restored: str, args: argparse.Namespace, tmp: Path) -> None:
    print("\n== %s: %d devices, %d reports" % (label, args.devices, args.devices * args.reports_per_device), flush=True)
    print("  generated in %.1f s" % generate_fleet(live, args.devices, args.reports_per_device), flush=True)
    cli("init", "--db", live)  # the admin login and a secret, as a real server has
    token = cli("api-token", "create", "--db", live).stdout.strip().splitlines()[-1]
    backup_file = tmp / ("%s.backup" % label)
    took = timed(lambda: cli("backup", "--db", live, str(backup_file)))
    print("  backup:  %6.1f s, %s bytes" % (took, format(backup_file.stat().st_size, ",")), flush=True)
    took = timed(lambda: cli("restore", "--db", restored, str(backup_file)))
    print("  restore: %6.1f s (checks the file, restores, migrates)" % took, flush=True)
    server = ServerProcess(restored, free_port(), tmp / ("%s.log" % label))
    started = time.perf_counter()
    server.start()
    try:
        summary = requests.get(server.url + "/api/v1/summary", headers={"Authorization": "Bearer " + token},
                               timeout=120).json()
        served = time.perf_counter() - started
        total = summary.get("total", summary.get("devices"))
        print("  a server on the restored database answers the fleet summary %.1f s after it is started "
              "(%s devices)" % (served, total), flush=True)
    finally:
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=100000)
    parser.add_argument("--reports-per-device", type=int, default=2)
    parser.add_argument("--skip-pg", action="store_true")
    args = parser.parse_args()
    print("ExposureGuard backup/restore bench, %d cores" % (os.cpu_count() or 0), flush=True)
    with tempfile.TemporaryDirectory(prefix="eg-bench-") as folder:
        tmp = Path(folder)
        run("SQLite", "sqlite:///%s" % (tmp / "live.db"), "sqlite:///%s" % (tmp / "restored.db"), args, tmp)
        if not args.skip_pg:
            live, restored = pg_database("eg_bench_backup_live"), pg_database("eg_bench_backup_restored")
            if live and restored:
                run("PostgreSQL", live, restored, args, tmp)
                version = subprocess.run(["pg_dump", "--version"], capture_output=True, text=True).stdout.strip()
                print("  (%s)" % version)
            else:
                print("\nPostgreSQL: skipped (EXPOSURE_GUARD_TEST_PG_URL unset)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
