"""Prometheus text exposition (format 0.0.4) without a client library: a few counters, gauges, one histogram."""

from __future__ import annotations

import threading
from typing import Dict, List, Tuple

Labels = Tuple[Tuple[str, str], ...]

BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0)

HELP = {
    "exposure_guard_prober_requests_total": ("counter", "API requests by path and HTTP status"),
    "exposure_guard_prober_refused_total": ("counter", "probe requests refused, by reason code"),
    "exposure_guard_prober_port_results_total": ("counter", "probed ports by state"),
    "exposure_guard_prober_outbound_total": ("counter", "outbound probe sockets opened, by protocol"),
    "exposure_guard_prober_upnp_wan_exposed_total": ("counter", "callers whose address answered UPnP from outside"),
    "exposure_guard_prober_connections_refused_total": ("counter", "inbound connections refused at accept, by cap "
                                                                   "(per_source, total, descriptors)"),
    "exposure_guard_prober_connections_closed_total": ("counter", "inbound connections closed by the prober, by "
                                                                  "reason (head_timeout, body_timeout, tls_failed)"),
    "exposure_guard_prober_inflight": ("gauge", "probe jobs running now"),
    "exposure_guard_prober_connections": ("gauge", "inbound HTTP connections open now"),
    "exposure_guard_prober_probe_seconds": ("histogram", "duration of one probe job"),
}


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: Dict[Tuple[str, Labels], float] = {}
        self._hist: Dict[str, List[float]] = {}

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        key = (name, tuple(sorted(labels.items())))
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def set(self, name: str, value: float) -> None:
        with self._lock:
            self._values[(name, ())] = value

    def observe(self, name: str, value: float) -> None:
        with self._lock:
            counts = self._hist.setdefault(name, [0.0] * (len(BUCKETS) + 2))  # buckets..., count, sum
            for index, bound in enumerate(BUCKETS):
                if value <= bound:
                    counts[index] += 1
            counts[-2] += 1
            counts[-1] += value

    def value(self, name: str, **labels: str) -> float:
        with self._lock:
            return self._values.get((name, tuple(sorted(labels.items()))), 0.0)

    def render(self) -> str:
        lines: List[str] = []
        with self._lock:
            values = dict(self._values)
            hist = {k: list(v) for k, v in self._hist.items()}
        for name, (kind, text) in HELP.items():
            lines.append("# HELP %s %s" % (name, text))
            lines.append("# TYPE %s %s" % (name, kind))
            if kind == "histogram":
                counts = hist.get(name, [0.0] * (len(BUCKETS) + 2))
                for index, bound in enumerate(BUCKETS):
                    lines.append('%s_bucket{le="%s"} %d' % (name, bound, counts[index]))
                lines.append('%s_bucket{le="+Inf"} %d' % (name, counts[-2]))
                lines.append("%s_count %d" % (name, counts[-2]))
                lines.append("%s_sum %.6f" % (name, counts[-1]))
                continue
            rows = sorted((labels, value) for (key, labels), value in values.items() if key == name)
            if not rows and kind == "gauge":
                rows = [((), 0.0)]
            for labels, value in rows:
                shown = ",".join('%s="%s"' % (k, v.replace("\\", "\\\\").replace('"', '\\"')) for k, v in labels)
                lines.append("%s%s %s" % (name, "{%s}" % shown if shown else "", _number(value)))
        return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)
