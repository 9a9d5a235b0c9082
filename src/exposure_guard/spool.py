"""The check-in spool: every report is written here first (``state_dir/spool/``, one file per report,
named so that names sort by generation time) and deleted only after the server took it. Bounded: the
oldest reports are dropped with a counted warning. Reports the server refused for good go to
``spool/rejected/`` with the reason; that folder is bounded too (``REJECTED_MAX_FILES`` reports and
``REJECTED_MAX_BYTES``, oldest dropped with a warning). Standard library only (no HTTP here)."""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List

from exposure_guard.atomicio import atomic_write
from exposure_guard.errors import CheckinError

log = logging.getLogger("exposure_guard.checkin")

SPOOL_DIR = "spool"
REJECTED_DIR = "rejected"
DROPPED_COUNT_FILE = "spool-dropped.count"
REJECTED_MAX_FILES = 20  # refused reports kept for a person to look at, with their .reason files
REJECTED_MAX_BYTES = 8 * 1024 * 1024  # all of them together; the newest one is always kept
_SPOOL_NAME = re.compile(r"^\d{8}T\d{6}\.\d{6}Z-\d{6}-[0-9A-Za-z-]{1,64}\.json$")


def spool_dir(state_dir: Path) -> Path:
    return Path(state_dir) / SPOOL_DIR


def _generation_stamp(report: Dict[str, Any]) -> str:
    """``YYYYMMDDTHHMMSS.ffffffZ`` of the report's generated_at (UTC), or of now when it is unusable."""
    text = str(report.get("generated_at") or "")
    moment = None
    match = re.match(r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:\d{2})$", text)
    if match:
        year, month, day, hour, minute, second, frac, zone = match.groups()
        try:
            moment = _dt.datetime(int(year), int(month), int(day), int(hour), int(minute), int(second),
                                  int((frac or "0")[:6].ljust(6, "0")), tzinfo=_dt.timezone.utc)
            if zone != "Z":
                sign = 1 if zone[0] == "+" else -1
                moment -= sign * _dt.timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
        except ValueError:
            moment = None
    if moment is None:
        moment = _dt.datetime.now(_dt.timezone.utc)
    return moment.strftime("%Y%m%dT%H%M%S.%fZ")


def spooled_files(state_dir: Path) -> List[Path]:
    """Spooled reports, oldest first (names sort by generation time, then by spool order)."""
    folder = spool_dir(state_dir)
    try:
        names = [name for name in os.listdir(str(folder)) if _SPOOL_NAME.match(name)]
    except FileNotFoundError:
        return []
    return [folder / name for name in sorted(names)]


def _next_sequence(folder: Path, stamp: str) -> int:
    """Spool order among reports generated in the same microsecond (keeps names unique and ordered)."""
    highest = -1
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(str(folder)):
            if name.startswith(stamp + "-") and _SPOOL_NAME.match(name):
                highest = max(highest, int(name[len(stamp) + 1: len(stamp) + 7]))
    return highest + 1


def spool_report(state_dir: Path, report: Dict[str, Any], spool_max: int) -> Path:
    """Write ``report`` to the spool atomically (one file per report, mode 0600) and return its path.

    When more than ``spool_max`` reports wait, the oldest are dropped and a warning counts them."""
    folder = spool_dir(state_dir)
    folder.mkdir(parents=True, exist_ok=True)
    report_id = str(report.get("report_id") or "")
    if not re.match(r"^[0-9A-Za-z-]{1,64}$", report_id):
        raise CheckinError("cannot spool a report without a valid report_id (got %r)" % report_id[:80])
    for existing in spooled_files(state_dir):
        if existing.name.endswith("-" + report_id + ".json"):
            return existing  # already spooled: spooling is idempotent too
    stamp = _generation_stamp(report)
    path = folder / ("%s-%06d-%s.json" % (stamp, _next_sequence(folder, stamp), report_id))
    data = json.dumps(report, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    atomic_write(path, data, 0o600)
    _enforce_bound(state_dir, max(1, int(spool_max)))
    _remove_stale_temp_files(folder)
    return path


def _enforce_bound(state_dir: Path, spool_max: int) -> int:
    files = spooled_files(state_dir)
    excess = len(files) - spool_max
    if excess <= 0:
        return 0
    dropped = 0
    for path in files[:excess]:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            dropped += 1
    total = _bump_dropped_count(state_dir, dropped)
    log.warning("check-in spool full (spool_max=%d): dropped the %d oldest undelivered report(s); "
                "%d dropped in total since this NAS was set up", spool_max, dropped, total)
    return dropped


def dropped_count(state_dir: Path) -> int:
    try:
        return int((Path(state_dir) / DROPPED_COUNT_FILE).read_text("ascii").strip() or "0")
    except (OSError, ValueError):
        return 0


def _bump_dropped_count(state_dir: Path, dropped: int) -> int:
    total = dropped_count(state_dir) + dropped
    atomic_write(Path(state_dir) / DROPPED_COUNT_FILE, ("%d\n" % total).encode("ascii"), 0o600)
    return total


def _remove_stale_temp_files(folder: Path, age: float = 3600) -> None:
    """atomic_write leaves ``.name.*.tmp`` behind only after a crash; clear old ones."""
    now = time.time()
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(str(folder)):
            if name.startswith(".") and name.endswith(".tmp"):
                path = folder / name
                with contextlib.suppress(OSError):
                    if now - path.stat().st_mtime > age:
                        path.unlink()


@contextlib.contextmanager
def spool_lock(state_dir: Path) -> Iterator[bool]:
    """Only one deliverer at a time (a manual `run --once` next to the daemon); yields False when busy."""
    folder = spool_dir(state_dir)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on Linux
        yield True
        return
    fd = os.open(str(folder / ".lock"), os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def reject(state_dir: Path, path: Path, reason: str) -> None:
    """Move a report the server refuses for good out of the way (kept for a person to look at)."""
    target_dir = spool_dir(state_dir) / REJECTED_DIR
    target_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        os.replace(str(path), str(target_dir / path.name))
        atomic_write(target_dir / (path.name + ".reason"), (reason + "\n").encode("utf-8"), 0o600)
    log.error("check-in: %s", reason)
    _bound_rejected(target_dir)


def _bound_rejected(folder: Path) -> None:
    """Keep at most REJECTED_MAX_FILES refused reports and REJECTED_MAX_BYTES in ``folder``: the oldest go."""
    reports = sorted(name for name in os.listdir(str(folder)) if _SPOOL_NAME.match(name))

    def size(name: str) -> int:
        total = 0
        for part in (name, name + ".reason"):
            with contextlib.suppress(OSError):
                total += os.lstat(str(folder / part)).st_size
        return total

    sizes = {name: size(name) for name in reports}
    used = sum(sizes.values())
    dropped: List[str] = []
    while len(reports) > 1 and (len(reports) > REJECTED_MAX_FILES or used > REJECTED_MAX_BYTES):
        oldest = reports.pop(0)
        for part in (oldest, oldest + ".reason"):
            with contextlib.suppress(FileNotFoundError):
                (folder / part).unlink()
        used -= sizes[oldest]
        dropped.append(oldest)
    if dropped:
        log.warning("check-in: spool/rejected/ keeps at most %d refused reports and %d bytes: dropped the %d oldest "
                    "(%s%s)", REJECTED_MAX_FILES, REJECTED_MAX_BYTES, len(dropped), ", ".join(dropped[:3]),
                    ", …" if len(dropped) > 3 else "")
