"""/metrics: the Prometheus text exposition (format 0.0.4)."""

from __future__ import annotations

from typing import Dict, Optional

from exposure_guard_server.reportlogic import STATES
from exposure_guard_server.services.fleet import DeviceFilter, Reader


def prometheus_text(reader: Reader, counters: Dict[str, int], now: Optional[float] = None,
                    scope: Optional[DeviceFilter] = None) -> str:
    """Devices by state, reports stored, check-ins by result (``counters``: every process's totals),
    failing checks and webhook deliveries."""
    summary = reader.summary(now, top=1000, scope=scope)
    hooks = reader.delivery_counts()
    lines = [
        "# HELP exposure_guard_devices Enrolled devices by state (stale overrides the last verdict).",
        "# TYPE exposure_guard_devices gauge",
    ]
    for state in STATES:
        lines.append('exposure_guard_devices{state="%s"} %d' % (state, summary["counts"][state]))
    lines += [
        "# HELP exposure_guard_reports_stored_total Reports stored (each check-in stored once).",
        "# TYPE exposure_guard_reports_stored_total counter",
        "exposure_guard_reports_stored_total %d" % summary["reports_stored"],
        "# HELP exposure_guard_checkins_total Check-in requests answered by all server processes, by result.",
        "# TYPE exposure_guard_checkins_total counter",
    ]
    for name in sorted(counters):
        if name.startswith("checkins_"):
            lines.append('exposure_guard_checkins_total{result="%s"} %d' % (name[len("checkins_"):],
                                                                            counters[name]))
    lines += [
        "# HELP exposure_guard_failing_devices Devices whose latest report fails this check.",
        "# TYPE exposure_guard_failing_devices gauge",
    ]
    for item in summary["failing_checks"]:
        lines.append('exposure_guard_failing_devices{check_id="%s"} %d' % (_label(item["check_id"]),
                                                                           item["devices"]))
    lines += [
        "# HELP exposure_guard_webhook_deliveries Webhook deliveries by status.",
        "# TYPE exposure_guard_webhook_deliveries gauge",
    ]
    for status in ("pending", "delivered", "failed"):
        lines.append('exposure_guard_webhook_deliveries{status="%s"} %d' % (status, hooks.get(status, 0)))
    lines += [
        "# HELP exposure_guard_reenrollments_pending Re-enrollments of known devices waiting for an operator.",
        "# TYPE exposure_guard_reenrollments_pending gauge",
        "exposure_guard_reenrollments_pending %d" % summary["reenrollments_pending"],
    ]
    return "\n".join(lines) + "\n"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
