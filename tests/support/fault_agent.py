"""A minimal agent loop for the fault test, using the real exposure_guard.checkin code.

``python -m tests.support.fault_agent STATE_DIR SERVER_URL TOTAL`` generates reports 0..TOTAL-1 (deterministic ids and
bodies, so a report re-made after a crash is byte-identical), spools each one, delivers the spool with a
short deadline, and exits 0 once every report was generated and the spool is empty. It may be killed at
any point; started again it resumes from its own progress file."""

from __future__ import annotations

import sys
import time
import uuid
from pathlib import Path

from exposure_guard import checkin
from exposure_guard.atomicio import atomic_write
from exposure_guard.settings import load_settings

NAMESPACE = uuid.UUID("5b1c3b6e-6f5f-4f59-9c55-0f4f1f6b8f00")
DEVICE = {"device_id": "qnap-fault", "hostname": "fault-nas", "model": "TS-453D", "firmware": "5.1.4.2596",
          "build": "20231128", "lan_addresses": ["192.168.1.20"]}


def report_id(i: int) -> str:
    return str(uuid.uuid5(NAMESPACE, "report-%d" % i))


def report(i: int) -> dict:
    failing = i % 3 == 0
    return {
        "schema": "exposure-guard/report/v1", "report_id": report_id(i),
        "generated_at": "2024-01-01T%02d:%02d:%02dZ" % (i // 3600, (i // 60) % 60, i % 60),
        "duration_ms": i, "agent": {"version": "1.0.0", "python": "3.11", "mode": "report"}, "device": DEVICE,
        "findings": [{"id": "service.telnet", "title": "Telnet", "severity": "high",
                      "status": "fail" if failing else "pass", "summary": "report %d" % i, "evidence": {"i": i},
                      "fixable": True, "fixed": False, "references": []}],
        "changes": [],
        "summary": {"fail": int(failing), "pass": int(not failing), "unknown": 0, "error": 0, "skipped": 0,
                    "exposed": False},
    }


def main() -> int:
    state, url, total = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    pace = float(sys.argv[4]) if len(sys.argv) > 4 else 0.05
    settings = load_settings(None, environ={"EXPOSURE_GUARD_SERVER_URL": url})
    progress = state / "generated"
    try:
        next_i = int(progress.read_text().strip())
    except (OSError, ValueError):
        next_i = 0
    while True:
        if next_i < total:
            checkin.spool_report(state, report(next_i), 100000)
            next_i += 1
            atomic_write(progress, b"%d\n" % next_i)
        result = checkin.deliver_spool(settings, state, deadline=1.5)
        if result.fatal:
            sys.stderr.write("fatal: %s\n" % result.error)
            return 2
        if next_i >= total and result.remaining == 0:
            return 0
        time.sleep(pace)


if __name__ == "__main__":
    sys.exit(main())
