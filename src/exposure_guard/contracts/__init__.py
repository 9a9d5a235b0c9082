"""Contracts shared by the agent, the prober and the server: names, orders and formats that all three
must agree on. Standard library only, and nothing else from ``exposure_guard`` (the architecture test
enforces it), so any deployable can import it without pulling in the others."""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path
from typing import Dict

DATA = Path(__file__).resolve().parent.parent / "data"

REPORT_SCHEMA_ID = "exposure-guard/report/v1"
REPORT_SCHEMA_FILE = DATA / "report-v1.schema.json"
PROBER_SCHEMA_ID = "exposure-guard/prober/v1"
PROBER_SCHEMA_FILE = DATA / "prober-v1.schema.json"

STATUSES = ("pass", "fail", "unknown", "error", "skipped")
# Worst first. SEVERITY_RANK: info=0 … critical=4, so "at least high" is rank >= SEVERITY_RANK["high"].
SEVERITIES = ("critical", "high", "medium", "low", "info")
SEVERITY_RANK: Dict[str, int] = {name: rank for rank, name in enumerate(reversed(SEVERITIES))}


# Reachability verdicts in report evidence: the internet reaches this NAS (proven by fingerprint), or
# something answers on its public address that is not proven to be it.
VERIFIED, UNVERIFIED = "verified", "open-unverified"


def new_uuid4() -> str:
    """A random (version 4) UUID string, as ``str(uuid.uuid4())`` gives, without importing uuid at start."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    h = raw.hex()
    return "%s-%s-%s-%s-%s" % (h[:8], h[8:12], h[12:16], h[16:20], h[20:])


def utc_now(precision: str = "us") -> str:
    """RFC 3339 UTC with a Z: microseconds (report and journal times) or whole seconds (``"s"``)."""
    now = _dt.datetime.now(_dt.timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if precision == "us" else "%Y-%m-%dT%H:%M:%SZ")
