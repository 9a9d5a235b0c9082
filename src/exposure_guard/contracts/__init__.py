"""Contracts shared by the agent, the prober and the server: names, orders and formats that all three
must agree on. Standard library only, and nothing else from ``exposure_guard`` (the architecture test
enforces it), so any deployable can import it without pulling in the others."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Dict, Tuple

DATA = Path(__file__).resolve().parent.parent / "data"

REPORT_SCHEMA_ID = "exposure-guard/report/v1"
REPORT_SCHEMA_FILE = DATA / "report-v1.schema.json"
PROBER_SCHEMA_ID = "exposure-guard/prober/v1"
PROBER_SCHEMA_FILE = DATA / "prober-v1.schema.json"

STATUSES = ("pass", "fail", "unknown", "error", "skipped")
# Worst first. SEVERITY_RANK: info=0 … critical=4, so "at least high" is rank >= SEVERITY_RANK["high"].
SEVERITIES = ("critical", "high", "medium", "low", "info")
SEVERITY_RANK: Dict[str, int] = {name: rank for rank, name in enumerate(reversed(SEVERITIES))}


def one_step_lower(severity: str) -> str:
    """critical → high → medium → low; low and info stay."""
    index = SEVERITIES.index(severity)
    return SEVERITIES[min(index + 1, SEVERITIES.index("low"))] if severity != "info" else "info"


# Reachability verdicts in report evidence: the internet reaches this NAS (proven by fingerprint), or
# something answers on its public address that is not proven to be it.
VERIFIED, UNVERIFIED = "verified", "open-unverified"


class Value:
    """Base of the small value types on the agent's start-up path: the fields are the class's
    ``__slots__``, set by its ``__init__``; two values are equal when their fields are. Plain classes,
    because defining a dataclass imports inspect and a NamedTuple execs generated code: milliseconds of
    every agent start for a dozen types."""

    __slots__: Tuple[str, ...] = ()

    def _values(self) -> Tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self._values() == other._values()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        return "%s(%s)" % (type(self).__name__, ", ".join("%s=%r" % (n, getattr(self, n)) for n in self.__slots__))


def new_uuid4() -> str:
    """A random (version 4) UUID string, as ``str(uuid.uuid4())`` gives, without importing uuid at start."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    h = raw.hex()
    return "%s-%s-%s-%s-%s" % (h[:8], h[8:12], h[12:16], h[16:20], h[20:])


def utc_now(precision: str = "us") -> str:
    """RFC 3339 UTC with a Z: microseconds (report and journal times) or whole seconds (``"s"``).
    Formatted with ``time`` (datetime costs ~2 ms of every agent start)."""
    now = time.time()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
    return stamp + ("Z" if precision == "s" else ".%06dZ" % int((now % 1) * 1000000))


def sha256_hex(data: bytes) -> str:
    """SHA-256 of ``data`` in hex. The interpreter's built-in implementation where there is one: hashlib
    loads OpenSSL (~3 ms of every agent start) for the same digest."""
    try:
        from _sha2 import sha256  # type: ignore[import-not-found]  # Python 3.12+
    except ImportError:
        try:
            from _sha256 import sha256  # type: ignore[import-not-found,no-redef]  # Python 3.8-3.11
        except ImportError:  # a build without them
            from hashlib import sha256  # type: ignore[no-redef]
    return sha256(data).hexdigest()
